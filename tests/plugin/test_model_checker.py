"""The model checker's reference model against a real Linux filesystem, without a VM: the guest
executor (fsexec) compiled for the host and run on a directory of the host's ext4. The same C program
and the same comparison as in a guest; what a guest adds (remounts, reloads, power cuts, the module) is
covered by tests/filesystem_ops/test_model*.py."""

from __future__ import annotations

import dataclasses
import random
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from pytest_vexfs.model.executor import SOURCE
from pytest_vexfs.model.campaign import explore
from pytest_vexfs.model.explore import (NOT_REPEATED, Capabilities, Discrepancy, Explorer, Target,
                                        random_operation)
from pytest_vexfs.model.exploration_findings import UndeclaredLimit, UnsupportedOperation
from pytest_vexfs.model.simulate import SimulatedModule


@pytest.fixture(scope="module")
def host_fsexec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on the host")
    out = tmp_path_factory.mktemp("fsexec") / "fsexec"
    subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", str(out), str(SOURCE)], check=True)
    return out


def host_target(binary: Path, root: Path, file_size_limit: int | None = None) -> Target:
    root.mkdir(exist_ok=True)

    def limit() -> None:
        if file_size_limit is not None:  # the kernel refuses bigger files with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    def run_batch(lines: list[str]) -> list[tuple[str, str]]:
        proc = subprocess.run([str(binary), str(root)], input="".join(f"{x}\n" for x in lines), text=True,
                              stdout=subprocess.PIPE, check=True, preexec_fn=limit)
        return [tuple(a.partition("\t")[::2]) for a in proc.stdout.split("\n")[:-1]]  # type: ignore[misc]

    return Target(run_batch=run_batch, mountpoint=str(root), mount_command="true", reload_command="true",
                  module_name="hostfs")


def test_random_walk_matches_the_host_filesystem(host_fsexec: Path, tmp_path: Path) -> None:
    caps = Capabilities(persistence=False)
    explorer = Explorer(host_target(host_fsexec, tmp_path / "root"), caps, batch_size=100)
    rng = random.Random(1)
    for _ in range(3000):
        explorer.apply(random_operation(explorer.model, rng, caps))
    explorer.finish()
    answered = {k: v for k, v in explorer.results.items() if not v.startswith("ok")}
    assert len(explorer.results) == 3000
    assert len(answered) > 300, "the walk should also provoke errors (ENOENT, EEXIST, ENOTEMPTY, ...)"
    assert {v.split()[0] for v in answered.values()} >= {"ENOENT", "EEXIST", "ENOTDIR", "EISDIR", "ENOTEMPTY"}


def test_exploration_without_persistence_has_no_remounts(host_fsexec: Path, tmp_path: Path) -> None:
    """A profile without `persistence`: no remount, reload or power cut is ever generated."""
    seen: dict[str, int] = {}

    def finished(explorer: Explorer) -> None:
        for k, v in explorer.counts.items():
            seen[k] = seen.get(k, 0) + v

    result = explore(lambda: host_target(host_fsexec, tmp_path / "root"), Capabilities(persistence=False),
                     examples=25, steps=30, seed=7, on_finish=finished)
    assert result.findings == [] and result.unsupported == []  # the host's filesystem: a control
    assert not {"remount", "reload", "power_cut"} & set(seen), seen
    assert seen.get("write", 0) > 0


def test_a_module_refusing_below_its_declared_limit_is_reported_as_such(host_fsexec: Path,
                                                                         tmp_path: Path) -> None:
    """The kernel refuses files over 48 KiB (RLIMIT_FSIZE) while the profile declares 1 MiB: the finding
    says the declared limit is wrong, and Hypothesis shrinks it to a create and one write."""
    caps = Capabilities(persistence=False, max_file_size=1 << 20)
    result = explore(lambda: host_target(host_fsexec, tmp_path / "root", file_size_limit=48 * 1024), caps,
                     examples=200, steps=20, seed=3, max_findings=1)
    found = result.findings[0].error
    assert isinstance(found, Discrepancy)
    text = str(found)
    # refused outright (EFBIG) or cut short at the real limit (a write across it): either way named
    assert "got EFBIG" in text or "(a short write: the file stops at 49152 bytes" in text, text
    assert "below the profile's declared max_file_size of 1048576" in text
    assert len(found.ops) <= 3, text


def test_an_undeclared_limit_is_measured_once_and_exploration_goes_on_inside_it(host_fsexec: Path,
                                                                                 tmp_path: Path) -> None:
    """No max_file_size declared, files over 48 KiB refused: one finding with the measured limit, first line
    its reason, and the rounds after it explore with the limit (no discrepancy about it, ever)."""
    result = explore(lambda: host_target(host_fsexec, tmp_path / "root", file_size_limit=48 * 1024),
                     Capabilities(persistence=False), examples=40, steps=20, seed=5)
    assert [type(f.error) for f in result.findings] == [UndeclaredLimit], [f.reason for f in result.findings]
    limit = result.findings[0].error
    assert limit.reason == ("the module refuses files beyond 49,152 bytes (EFBIG): declare "
                            "`limits: max_file_size: 49152` if that is intended")
    assert str(limit).splitlines()[0] == limit.reason
    assert limit.signature == "model: undeclared limit max_file_size (EFBIG)"
    assert result.learned == {"max_file_size": 49152} and len(result.seeds) == 2


def test_unsupported_operations_are_probed_once_and_never_generated(host_fsexec: Path, tmp_path: Path) -> None:
    """refmod's `unsupported=symlink,link` and `file_limit_kib=48`, imitated on the host (simulate.py): each
    refused operation class is one finding (first line its reason), never generated after the probe, and
    the rounds that follow find nothing more (the subdirectory loss of the full combination is proven
    in a guest: tests/filesystem_ops/test_model_proof.py)."""
    sim = SimulatedModule(host_fsexec, tmp_path / "root", unsupported=["symlink", "link"], file_limit=48 * 1024)
    seen: dict[str, int] = {}

    def finished(explorer: Explorer) -> None:
        for k, v in explorer.counts.items():
            seen[k] = seen.get(k, 0) + v

    # a seed whose sequences write past 48 KiB (with chmod generated too, seed 11's no longer did)
    result = explore(sim.target, Capabilities(persistence=False), examples=12, steps=15, seed=12,
                     on_finish=finished)
    reasons = [f.reason for f in result.findings]
    assert reasons[:2] == ["the module does not support link: EPERM", "the module does not support symlink: EPERM"]
    assert [type(f.error) for f in result.findings] == [UnsupportedOperation] * 2 + [UndeclaredLimit], reasons
    assert all(str(f.error).splitlines()[0] == f.reason for f in result.findings)
    assert result.unsupported == ["link", "symlink"] and result.learned == {"max_file_size": 49152}
    assert not {"link", "symlink"} & set(seen) and seen.get("write", 0) > 0, seen
    assert len({f.signature for f in result.findings}) == 3


def test_a_discrepancy_its_sequence_does_not_repeat_is_still_a_finding(host_fsexec: Path, tmp_path: Path) -> None:
    """A module that answers wrong once (fs/bfs lost a file's name once in a sequence that then passed when
    Hypothesis ran it again): the finding is reported with the sequence as it failed, its first line the
    discrepancy and the next saying it did not repeat, not as Hypothesis's FlakyFailure."""
    real = host_target(host_fsexec, tmp_path / "root")
    renames = {"ok": 0}

    def once(lines: list[str]) -> list[tuple[str, str]]:  # the 10th rename that succeeds says ENOENT
        answers = real.run_batch(lines)
        for i, line in enumerate(lines):
            if line.startswith("rename\t") and answers[i][0] == "ok":
                renames["ok"] += 1
                if renames["ok"] == 10:
                    answers[i] = ("ENOENT", "")
        return answers

    target = dataclasses.replace(real, run_batch=once)
    result = explore(lambda: target, Capabilities(persistence=False), examples=20, steps=20, seed=3)
    (finding,) = result.findings
    lines = str(finding.error).splitlines()
    assert finding.reason == lines[0] and "(rename " in lines[0] and "got ENOENT" in lines[0], lines[:3]
    assert lines[1] == NOT_REPEATED
    assert finding.signature == "model: rename: ENOENT instead of ok", finding.signature
    assert renames["ok"] > 10  # Hypothesis ran it again, and more renames


def test_writes_past_a_declared_limit_expect_efbig(host_fsexec: Path, tmp_path: Path) -> None:
    caps = Capabilities(persistence=False, max_file_size=48 * 1024)
    explorer = Explorer(host_target(host_fsexec, tmp_path / "root", file_size_limit=48 * 1024), caps)
    for op in [("create", "a", 0o644), ("write", "a", 40000, 20000, 1), ("write", "a", 49152, 10, 2),
               ("truncate", "a", 60000), ("read", "a")]:
        explorer.apply(op)
    explorer.finish()
    assert explorer.results[2].startswith("ok 9152 ")  # a short write up to the limit
    assert explorer.results[3] == "EFBIG" and explorer.results[4] == "EFBIG"


def test_long_mode_raises_only_the_budgets_left_at_their_defaults(tmp_path: Path) -> None:
    from pytest_vexfs import settings as cfg
    from pytest_vexfs.model.run import Budget

    def budget(cli: dict[str, str]) -> Budget:
        s = cfg.resolve(cli, {}, {}, tmp_path, None)
        return Budget.from_settings(s.values, s.sources)

    assert budget({}) == Budget(examples=6, steps=40, seconds=0.0, seed=None)
    assert budget({"explore": "true"}) == Budget(examples=100, steps=100, seconds=1800.0, seed=None)
    assert budget({"explore": "true", "model_examples": "7", "model_seed": "42"}) == \
        Budget(examples=7, steps=100, seconds=1800.0, seed=42)


def test_model_params_replace_a_reproducers_parameters(tmp_path: Path) -> None:
    """--vexfs-model-params: NAME=VALUE pairs, "none" for no parameters, unset leaves a reproducer's own."""
    from pytest_vexfs import settings as cfg
    from pytest_vexfs.errors import ConfigError
    from pytest_vexfs.model.run import parse_params

    def params(value: str) -> dict[str, str] | None:
        return parse_params(cfg.resolve({"model_params": value}, {}, {}, tmp_path, None).values["model_params"])

    assert params("") is None
    assert params("none") == {}
    assert params("silent=subdir_lost, verbose=1") == {"silent": "subdir_lost", "verbose": "1"}
    with pytest.raises(ConfigError, match="silent"):
        params("silent")


def test_reproducer_file_carries_the_sequence_and_the_load_parameters(tmp_path: Path) -> None:
    import ast

    from pytest_vexfs.model.run import write_reproducer

    ops = [("mkdir", "d", 0o755), ("create", "d/a", 0o644), ("remount",)]
    path = write_reproducer(tmp_path, ops, "what went wrong: d/a lost", module="vexfsref",
                            params={"silent": "subdir_lost"})
    tree = ast.parse(path.read_text())
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body  # type: ignore[attr-defined]
              if isinstance(n, ast.Assign)}
    assert values == {"PARAMS": {"silent": "subdir_lost"}, "OPS": ops}
    assert "# what went wrong: d/a lost" in path.read_text()
    assert "vexfs_model.replay(OPS, params=PARAMS)" in path.read_text()


@pytest.mark.parametrize("ending", [[("remount",)], [("sync",), ("power_cut",)]], ids=["remount", "power-cut"])
def test_a_loss_has_one_signature_whether_a_remount_or_a_power_cut_shows_it(host_fsexec: Path, tmp_path: Path,
                                                                           ending: list[tuple[str]]) -> None:
    """refmod's lost subdirectory entries (imitated on the host) are one finding, not one per way of bringing
    the filesystem back."""
    sim = SimulatedModule(host_fsexec, tmp_path / "root", mode="subdir_lost")
    explorer = Explorer(sim.target(), Capabilities(power_cut=True), batch_size=100)
    with pytest.raises(Discrepancy) as found:
        for op in [("mkdir", "d", 0o755), ("create", "d/a", 0o644), *ending]:
            explorer.apply(op)
        explorer.finish()
    assert found.value.signature == "model: persisted state: missing", found.value
    assert found.value.ops[-1] == ending[-1]


def test_a_filesystem_without_modes_is_compared_on_everything_else() -> None:
    """FAT keeps no mode per file (the mount's fmask decides: a file created 0644 shows 0777). A profile
    that declares unsupported: [chmod] has the model checker compare trees and stats without modes; the
    rest (kind, links, size, content) still counts, and a module that keeps modes is still held to them."""
    from pytest_vexfs.model.explore import Capabilities, Explorer, Step, Target

    tree = "\x1e".join
    want = tree(["a f 644 1 3 0:abc", "d d 755"])
    found = tree(["a f 777 1 3 0:abc", "d d 777"])
    step = Step(1, "tree", ("ok", want), check="tree")
    stat = Step(2, "stat\ta", ("ok", "f 644 1 3"), check="stat")

    def quiet() -> Target:
        return Target(run_batch=lambda lines: [], mountpoint="/mnt", mount_command="", reload_command="")

    fat = Explorer(quiet(), Capabilities(unsupported=frozenset({"chmod"})))
    assert fat._compare(step, ("ok", found)) == ("", "")
    assert fat._compare(stat, ("ok", "f 777 1 3")) == ("", "")
    problem, what = fat._compare(step, ("ok", tree(["a f 777 1 4 0:abd", "d d 777"])))
    assert "expected f * 1 3 0:abc, found f * 1 4 0:abd" in problem and what.startswith("tree"), problem
    assert fat._compare(stat, ("ok", "f 777 1 4"))[0]

    unix = Explorer(quiet(), Capabilities())
    problem, what = unix._compare(step, ("ok", found))
    assert "expected f 644 1 3 0:abc, found f 777 1 3 0:abc" in problem and what == "tree mode", (problem, what)
    assert unix._compare(stat, ("ok", "f 777 1 3"))[0]
