"""The module's gcov counters, read from the guest and kept on the host.

A module built with ``GCOV_PROFILE=y`` on a kernel with ``CONFIG_GCOV_KERNEL`` has one ``.gcda`` file per
object under ``/sys/kernel/debug/gcov/<build dir>/`` (kept after an unload: ``gcov_persist``). A
`Counters.snapshot` copies them to the host and resets them in the guest, so each snapshot holds exactly
what ran since the previous one: a test's own counts, or one exploration sequence's. On the host each
snapshot is (1) read with ``gcov --json-format`` into `Hits` (the lines, branches and functions it reached,
recorded under its label in ``hits.jsonl``), and (2) added to the worker's merged counters with
``gcov-tool merge`` (what the run's report is rendered from). A VM thrown away later loses nothing already
snapshot. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from pytest_vexfs.errors import HostToolMissing, VexfsError, VMError

GCOV_ROOT = "/sys/kernel/debug/gcov"
NO_GCOV = "vexfs-no-gcov"
#: the kernel this needs, named in every error about it
GCOV_KERNEL = "--vexfs-kernel 6.12-debug"
#: lists the module's counter files (relative to its build dir) with shell builtins only; NO_GCOV when the
#: kernel has no gcov (debugfs is mounted first when it is not)
LIST = (f"[ -d {GCOV_ROOT} ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null; "
        f"[ -d {GCOV_ROOT} ] || {{ echo {NO_GCOV}; exit 0; }}; cd {GCOV_ROOT}{{build_dir}} 2>/dev/null || exit 0; "
        "shopt -s nullglob globstar; for f in **/*.gcda; do echo \"$f\"; done")
RESET = f"echo 1 > {GCOV_ROOT}/reset"


class CoverageUnavailable(VexfsError):
    """The guest kernel cannot count the module's lines (no CONFIG_GCOV_KERNEL)."""

    def __init__(self, kernel: str) -> None:
        super().__init__(f"--vexfs-coverage needs a guest kernel built with gcov (CONFIG_GCOV_KERNEL, "
                         f"debugfs at /sys/kernel/debug/gcov), and the kernel {kernel!r} has none: the module "
                         f"is built with GCOV_PROFILE=y and its counters are read from there after each test",
                         hint=f"run with {GCOV_KERNEL} (the debug flavour has gcov for modules), or without "
                              f"--vexfs-coverage")
        self.kernel = kernel


class CoverageToolError(VexfsError):
    """gcov, gcov-tool or gcovr failed on the counters: the command and what it said."""

    def __init__(self, argv: list[str], output: str) -> None:
        super().__init__(f"{shlex.join(argv[:4])}{' ...' if len(argv) > 4 else ''} failed:\n{output.strip()[-3000:]}",
                         hint="the counters and the .gcno files must come from the same build (the host's gcc "
                              "matches the debug kernel's)")
        self.argv, self.output = argv, output


class Guest(Protocol):
    """What a snapshot needs of a VM: run a command, copy a file out."""

    def run(self, command: str, *, timeout: float | None = ...) -> Any: ...

    def get(self, remote: str, local: Path | str) -> None: ...


@dataclasses.dataclass
class Hits:
    """What one snapshot of counters reached: per source file (relative to the build dir) the lines
    executed and the branches taken (line, index), and the functions entered."""

    lines: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    branches: dict[str, set[tuple[int, int]]] = dataclasses.field(default_factory=dict)
    functions: set[str] = dataclasses.field(default_factory=set)
    #: where the compiler ran (the kernel tree for a module): gcovr resolves the headers' paths from there
    compile_dir: str = ""

    def reached(self) -> set[tuple[str, int, int]]:
        """Every line (index -1) and branch reached, as one set: what "new coverage" is counted in."""
        found = {(f, line, -1) for f, lines in self.lines.items() for line in lines}
        found.update((f, line, i) for f, taken in self.branches.items() for line, i in taken)
        return found

    def line_count(self) -> int:
        return sum(len(v) for v in self.lines.values())

    def branch_count(self) -> int:
        return sum(len(v) for v in self.branches.values())

    def update(self, other: Hits) -> None:
        for f, lines in other.lines.items():
            self.lines.setdefault(f, set()).update(lines)
        for f, taken in other.branches.items():
            self.branches.setdefault(f, set()).update(taken)
        self.functions |= other.functions

    def to_json(self) -> dict[str, Any]:
        return {"lines": {f: sorted(v) for f, v in sorted(self.lines.items()) if v},
                "branches": {f: [list(b) for b in sorted(v)] for f, v in sorted(self.branches.items()) if v},
                "functions": sorted(self.functions)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hits:
        return cls({f: set(v) for f, v in data.get("lines", {}).items()},
                   {f: {(b[0], b[1]) for b in v} for f, v in data.get("branches", {}).items()},
                   set(data.get("functions", ())))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HostToolMissing(name, "gcc")
    return path


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                          cwd=cwd, timeout=600)
    if proc.returncode != 0:
        raise CoverageToolError(argv, proc.stderr + proc.stdout)
    return proc.stdout


def _json_documents(text: str) -> Iterator[dict[str, Any]]:
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        doc, pos = decoder.raw_decode(text, pos)
        yield doc


def _source_entries(gcda_dir: Path, build_dir: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """gcov's JSON of the counters in `gcda_dir` (with their .gcno beside them): (compile dir, source file
    relative to `build_dir`, gcov's entry) for the module's own sources (kernel headers are left out)."""
    files = sorted(str(p) for p in gcda_dir.rglob("*.gcda"))
    if not files:
        return
    prefix = build_dir.rstrip("/") + "/"
    argv = [_tool("gcov"), "--branch-probabilities", "--json-format", "--stdout", *files]
    for doc in _json_documents(_run(argv, cwd=gcda_dir)):
        cwd = str(doc.get("current_working_directory", ""))
        for entry in doc.get("files", []):
            name = os.path.normpath(os.path.join(cwd, str(entry.get("file", ""))))
            if name.startswith(prefix):
                yield cwd, name[len(prefix):], entry


def read_hits(gcda_dir: Path, build_dir: str) -> Hits:
    """The lines, branches and functions the counters in `gcda_dir` (with their .gcno beside them) reached,
    in the module's own sources (files under `build_dir`; kernel headers' inline functions are left out)."""
    hits = Hits()
    for cwd, rel, entry in _source_entries(gcda_dir, build_dir):
        hits.compile_dir = hits.compile_dir or cwd
        for line in entry.get("lines", []):
            number = int(line["line_number"])
            if line.get("count", 0) > 0:
                hits.lines.setdefault(rel, set()).add(number)
            for index, branch in enumerate(line.get("branches", [])):
                if branch.get("count", 0) > 0:
                    hits.branches.setdefault(rel, set()).add((number, index))
        hits.functions.update(str(f["name"]) for f in entry.get("functions", [])
                              if f.get("execution_count", 0) > 0)
    return hits


def code_lines(gcda_dir: Path, build_dir: str) -> dict[str, dict[int, str]]:
    """Every line of the module's sources that is code (gcov counts it, run or not), with the function it is
    in: {source file: {line: function}}. What the reached lines are out of, function by function."""
    code: dict[str, dict[int, str]] = {}
    for _, rel, entry in _source_entries(gcda_dir, build_dir):
        spans = sorted((int(f["start_line"]), int(f["end_line"]), str(f.get("demangled_name", f["name"])))
                       for f in entry.get("functions", []))
        lines = code.setdefault(rel, {})
        for line in entry.get("lines", []):
            number = int(line["line_number"])
            inside = [name for start, end, name in spans if start <= number <= end]
            lines[number] = inside[-1] if inside else ""
    return code


def link_notes(gcda_dir: Path, build_dir: str) -> None:
    """Put each counter file's .gcno (written by the compiler into the build dir) beside it: gcov and gcovr
    read them together."""
    for gcda in gcda_dir.rglob("*.gcda"):
        rel = gcda.relative_to(gcda_dir).with_suffix(".gcno")
        notes = gcda.with_suffix(".gcno")
        if not notes.exists():
            notes.symlink_to(Path(build_dir) / rel)


def merge_into(merged: Path, more: Path) -> None:
    """Add the counters in `more` to those in `merged` (gcov-tool; a file only one side has is kept)."""
    if not any(merged.rglob("*.gcda")):
        shutil.rmtree(merged, ignore_errors=True)
        shutil.copytree(more, merged, ignore=shutil.ignore_patterns("*.gcno"))
        return
    out = merged.with_name(merged.name + ".new")
    shutil.rmtree(out, ignore_errors=True)
    _run([_tool("gcov-tool"), "merge", str(merged), str(more), "-o", str(out)])
    shutil.rmtree(merged)
    out.rename(merged)


class Counters:
    """One worker's counters of one module build during a run, under `run_dir/<worker>/`: the merged
    counters (``merged/``) and what each snapshot reached, by label (``hits.jsonl``)."""

    def __init__(self, run_dir: Path, build_dir: str, worker: str, kernel: str = "") -> None:
        self.build_dir = build_dir.rstrip("/")
        self.kernel = kernel
        self.dir = run_dir / worker
        self.merged = self.dir / "merged"
        self.merged.mkdir(parents=True, exist_ok=True)
        self.hits_file = self.dir / "hits.jsonl"
        (run_dir / "build_dir").write_text(self.build_dir)
        self.compile_dir_file = run_dir / "compile_dir"
        self.snapshots = 0
        self.names: list[str] = []  # the counter files found in the guest (see _copy_out)

    def snapshot(self, vm: Guest, label: str, domain: str = "") -> Hits:
        """Copy the module's counters out of `vm` and reset them there; record what they reached under
        `label` and add them to the merged counters. Raises CoverageUnavailable on a kernel without gcov."""
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="snapshot-", dir=self.dir) as tmp:
            work = Path(tmp)
            if not self._copy_out(vm, work):
                return Hits()
            vm.run(RESET, timeout=60)
            in_guest = time.monotonic() - start
            self.snapshots += 1
            link_notes(work, self.build_dir)
            hits = read_hits(work, self.build_dir)
            merge_into(self.merged, work)
        if hits.compile_dir and not self.compile_dir_file.exists():
            self.compile_dir_file.write_text(hits.compile_dir)
        # what a snapshot costs, split where it is spent: copying out and resetting in the guest, reading
        # and merging on the host (the report sums them: the part of a run's time that coverage adds)
        cost = {"guest_seconds": round(in_guest, 3), "host_seconds": round(time.monotonic() - start - in_guest, 3)}
        with self.hits_file.open("a") as out:
            out.write(json.dumps({"label": label, "domain": domain, **cost, **hits.to_json()}) + "\n")
        return hits

    def _copy_out(self, vm: Guest, work: Path) -> list[str]:
        """Copy the counter files into `work`; their names, none when the module wrote none (not loaded).
        The names found once are copied straight away next time: each guest command forks in a guest
        where a fork is slow (the debug kernel under TCG), a copy does not; listing again only when a copy
        fails (a fresh VM without debugfs mounted, the module not loaded)."""
        if self.names:
            try:
                for name in self.names:
                    (work / name).parent.mkdir(parents=True, exist_ok=True)
                    vm.get(f"{GCOV_ROOT}{self.build_dir}/{name}", work / name)
                return self.names
            except (VMError, OSError):
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
        listing = vm.run(LIST.replace("{build_dir}", shlex.quote(self.build_dir)), timeout=120).stdout
        names = [n for n in listing.splitlines() if n.strip()]
        if NO_GCOV in names:
            raise CoverageUnavailable(self.kernel or "in use")
        for name in names:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            vm.get(f"{GCOV_ROOT}{self.build_dir}/{name}", work / name)
        self.names = names
        return names


def read_hit_records(run_dir: Path) -> Iterable[dict[str, Any]]:
    """Every snapshot's record of a run, all workers."""
    for path in sorted(run_dir.glob("*/hits.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
