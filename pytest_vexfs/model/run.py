"""One model-checking run as a test sees it: the settings in effect, exploration with the results
folder (Hypothesis example database, reproducer files), and replay of a fixed sequence."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import pprint
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_vexfs.model.campaign import explore
from pytest_vexfs.model.explore import Discrepancy, ExplorationStopped, Explorer, explore_round
from pytest_vexfs.model.exploration_findings import Finding, findings_line
from pytest_vexfs.module.recorded import recorded_source
from pytest_vexfs.model.target import ModelRig

if TYPE_CHECKING:
    from pytest_vexfs.model.corpus import GuidedSummary
    from pytest_vexfs.coverage.gcov import Hits

EXPLORE_DEFAULTS = {"model_examples": 100, "model_steps": 100, "model_budget": 1800.0}


def parse_params(text: str) -> dict[str, str] | None:
    """The `model_params` setting as load parameters: None when unset, {} for "none"."""
    text = text.strip()
    if not text:
        return None
    if text == "none":
        return {}
    return {k.strip(): v.strip() for k, _, v in (item.partition("=") for item in text.split(","))}


@dataclasses.dataclass
class Budget:
    """How much to explore: sequences per round, operations per sequence, seconds of extra rounds."""

    examples: int
    steps: int
    seconds: float
    seed: int | None
    #: sequences run in the guest while Hypothesis shrinks a finding (then whole operations are removed)
    shrink: int | None = 60
    #: stop once this many distinct findings are in (None: explore the whole budget)
    findings: int | None = None

    @classmethod
    def from_settings(cls, values: dict[str, Any], sources: dict[str, str]) -> Budget:
        explore = bool(values.get("explore"))

        def pick(name: str) -> Any:
            if explore and sources.get(name, "default") == "default":
                return EXPLORE_DEFAULTS[name]
            return values[name]

        seed = str(values.get("model_seed") or "").strip()
        return cls(int(pick("model_examples")), int(pick("model_steps")), float(pick("model_budget")),
                   int(seed) if seed else None)


@dataclasses.dataclass
class Summary:
    """What an exploration did."""

    seeds: list[int]
    sequences: int = 0
    operations: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    power_cuts: int = 0
    power_cut_seconds: float = 0.0
    #: each distinct finding once, in the order found
    findings: list[Finding] = dataclasses.field(default_factory=list)
    #: operation classes never generated: the profile's `unsupported` and those probed unsupported
    unsupported: list[str] = dataclasses.field(default_factory=list)
    #: limits measured during the exploration (the profile declared none)
    learned: dict[str, int] = dataclasses.field(default_factory=dict)
    #: with coverage: new and mutated sequences, and what the corpus reached
    guided: GuidedSummary | None = None

    def findings_line(self) -> str:
        """`3 distinct findings in 9.2 min: (1) ..., 2 operations; ...`."""
        return findings_line(self.findings, self.seconds)

    def describe(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        rate = self.operations / self.seconds if self.seconds else 0.0
        return (f"{self.sequences} sequences, {self.operations} operations in {self.seconds:.1f} s "
                f"({rate:.0f} ops/s), seeds {', '.join(map(str, self.seeds))}; {ops}"
                + (f"; {self.guided.describe()}" if self.guided is not None else ""))


class ModelRun:
    """Explore or replay against a ModelRig, writing findings under `results`."""

    def __init__(self, rig: ModelRig, budget: Budget, results: Path, label: str = "",
                 params: dict[str, str] | None = None, coverage: Callable[[], Hits | None] | None = None) -> None:
        self.rig = rig
        #: with --vexfs-coverage: what the last sequence reached of the module (exploration is guided by it)
        self.coverage = coverage
        self.budget = budget
        self.results = results
        self.label = label
        #: load parameters given by the `model_params` setting: they replace a reproducer's
        self.params = params

    def notes(self) -> list[str]:
        """What this run leaves out, and why (for the report)."""
        caps = self.rig.capabilities()
        notes = []
        if not caps.persistence:
            notes.append(f"profile of {self.rig.profile.name!r} declares no persistence capability: "
                         "explored without remounts, module reloads or power cuts")
        elif not caps.power_cut and not self.rig.profile.has("crash_consistent"):
            notes.append(f"profile of {self.rig.profile.name!r} does not declare crash_consistent: "
                         "explored without power cuts")
        elif not caps.power_cut:
            notes.append("power cuts off (they need the qemu backend and a block device)")
        if self.rig.profile.unsupported:
            notes.append("never generated, the profile declares them unsupported: "
                         + ", ".join(self.rig.profile.unsupported))
        return notes

    def explore(self, *, batch_size: int = 200) -> Summary:
        """Explore within the budget, going on past each finding; every distinct finding is in
        `Summary.findings` (a discrepancy with its reproducer file written, see Finding.reproducer). Raises
        only ExplorationStopped (a kernel fault: the verdict reports it), with the findings before it."""
        summary = Summary(seeds=[])
        start = time.monotonic()

        def finished(explorer: Explorer) -> None:
            summary.sequences += 1
            summary.operations += len(explorer.ops)
            for k, v in explorer.counts.items():
                summary.counts[k] = summary.counts.get(k, 0) + v

        def found(finding: Finding) -> None:
            summary.findings.append(finding)
            if isinstance(finding.error, Discrepancy):
                finding.reproducer = self.write_reproducer(finding.error)
                finding.error.args = (f"{finding.error.args[0]}\n  seed: {summary.seeds[-1]}\n"
                                      f"  reproducer: {finding.reproducer}",)
                finding.error.reproducer = finding.reproducer  # type: ignore[attr-defined]

        from hypothesis.database import DirectoryBasedExampleDatabase

        database = DirectoryBasedExampleDatabase(str(self.results / "hypothesis-db"))
        cuts_before = self.rig.cuts
        guidance = None
        if self.coverage is not None:  # sequences that reached new code become seeds (model/corpus.py)
            from pytest_vexfs.model.corpus import Guidance

            guidance = Guidance(self.coverage, self.results / "corpus" / f"{self.rig.profile.name}.json")
            summary.guided = guidance.summary
        try:
            result = explore(self.rig.target, self.rig.capabilities(), examples=self.budget.examples,
                             steps=self.budget.steps, seed=self.budget.seed, database=database,
                             batch_size=batch_size, time_budget=self.budget.seconds or None,
                             on_finish=finished, on_round=summary.seeds.append, on_finding=found,
                             shrink_limit=self.budget.shrink, module=self.rig.profile.name,
                             max_findings=self.budget.findings,
                             run_round=guidance.run_round if guidance is not None else explore_round)
            summary.unsupported, summary.learned = result.unsupported, result.learned
        except ExplorationStopped as exc:  # a kernel fault: the verdict names it; the sequence replays it
            path = self.write_reproducer(exc)
            before = f"\n  findings before it: {findings_line(summary.findings, time.monotonic() - start)}" \
                if summary.findings else ""
            exc.args = (f"{exc.args[0]}\n  seed: {summary.seeds[-1] if summary.seeds else '?'}\n"
                        f"  reproducer (not shrunk): {path}{before}",)
            raise
        finally:
            if guidance is not None:
                guidance.save()
            summary.seconds = time.monotonic() - start
            summary.power_cuts = self.rig.cuts - cuts_before
            summary.power_cut_seconds = sum(self.rig.cut_seconds[cuts_before:])
        return summary

    def replay(self, ops: Sequence[Sequence[Any]], params: dict[str, Any] | None = None) -> Explorer:
        """Apply a fixed sequence and compare; raises Discrepancy on the first difference.

        `params` (a reproducer's recorded load parameters) reload the module with them first, unless
        the `model_params` setting gives others."""
        wanted = self.params if self.params is not None else params
        if wanted is not None and {k: str(v) for k, v in wanted.items()} != \
                {k: str(v) for k, v in self.rig.load_params.items()}:
            self.rig.reload_module(**wanted)
        explorer = Explorer(self.rig.target(), self.rig.capabilities(), label="replay")
        for op in ops:
            explorer.apply(op)
        explorer.finish()
        return explorer

    def write_reproducer(self, exc: Discrepancy | ExplorationStopped) -> Path:
        """A standalone pytest file replaying the failing sequence (commit it as a regression test)."""
        return write_reproducer(self.results, exc.ops, str(exc.args[0]), module=self.rig.profile.name,
                                params=self.rig.load_params, label=self.label,
                                recorded=recorded_source(self.rig.profile, self.rig.slot.settings.kernel))


def write_reproducer(results: Path, ops: Sequence[Sequence[Any]], report: str, *, module: str,
                     params: dict[str, Any], label: str = "", recorded: str = "") -> Path:
    """`results`/test_repro_<digest>.py: replays `ops` with the module loaded with `params` (the load
    parameters in effect when the sequence was found; --vexfs-model-params replaces them), against the
    module `recorded` names (`pytest_vexfs.module.recorded.recorded_source`: profile, digest, kernel)."""
    ops = [tuple(op) for op in ops]
    key = hashlib.sha256(repr(ops).encode()).hexdigest()[:10]
    path = results / f"test_repro_{key}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "\n".join("# " + line for line in report.splitlines())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    recorded_params = {k: str(v) for k, v in params.items()}
    recorded_module = recorded + "\n" if recorded else ""
    path.write_text(
        f'"""Reproducer found by the pytest-vexfs model checker ({when}, module {module}'
        f'{", " + label if label else ""}).\n\nRun it with pytest like any test of the filesystem_ops '
        f'domain; it fails while the bug is there. The module is loaded with PARAMS, the parameters in '
        f'effect when it was found\n(--vexfs-model-params NAME=VALUE,... or none replaces them), against the '
        f'profile PROFILE records (unless --vexfs-profile names one)."""\n\n'
        f"{comment}\n\nimport pytest\n\n{recorded_module}PARAMS = {recorded_params!r}\n\n"
        f"OPS = {pprint.pformat(ops, width=100)}\n\n\n"
        f"@pytest.mark.filesystem_ops\ndef test_repro_{key}(vexfs_model):\n"
        f"    vexfs_model.replay(OPS, params=PARAMS)\n")
    return path
