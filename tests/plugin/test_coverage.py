"""Coverage of the module under test (--vexfs-coverage): gcov counters per test, the run's gcovr report
(HTML with per-line and per-branch counts, Cobertura XML, totals per domain, test -> lines map).

The host-side pieces are tested on a small C program compiled with the host's gcc --coverage (the same
gcov data a module built with GCOV_PROFILE=y writes in the guest); the whole path, in a debug-kernel guest
against the reference module, is test_coverage_report_of_a_filesystem_ops_run: the HTML report (a line a
test certainly runs is counted, a planted-bug line nothing triggers is not), the Cobertura XML, the
terminal line and the run JSON's section; the test before a fault that replaced the VM keeps its counters;
the model checker guided by coverage keeps a seed file; a fault-injection sweep says which error-handling
lines it reached and which allocation sites it never failed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_vexfs.coverage.gcov import (GCOV_ROOT, Counters, CoverageUnavailable, Hits, link_notes, merge_into,
                                        read_hits)
from pytest_vexfs.coverage.report import main as who_main
from pytest_vexfs.coverage.report import who_covers, write_report
from pytest_vexfs.module.profile import DEFAULT_SOURCE

PROGRAM = """\
#include <stdlib.h>
int used(int x)
{
\tif (x > 2)
\t\treturn 1;
\treturn 0;
}
int never_called(int x)
{
\treturn x * 7; /* planted: nothing calls this */
}
int main(int argc, char **argv)
{
\tint s = 0;
\tfor (int i = 0; i < argc; i++)
\t\ts += used(i);
\treturn s > 100;
}
"""
USED_LINE = 4            # `if (x > 2)`: every run executes it
NEVER_LINE = 10          # the planted line nothing reaches


def html_line(page: str, number: int) -> tuple[str, str]:
    """gcovr's HTML row of source line `number`: its class (coveredLine, uncoveredLine, ...) and count."""
    start = page.index(f'id="L{number}"')
    end = page.find(f'id="L{number + 1}"', start)
    match = re.search(r'class="linecount (\w+)[^"]*">([^<]*)<', page[start:end if end > 0 else None])
    return (match.group(1), match.group(2).strip()) if match else ("", "")


def _build(tmp_path: Path) -> Path:
    build = tmp_path / "build"
    build.mkdir()
    (build / "prog.c").write_text(PROGRAM)
    subprocess.run(["gcc", "--coverage", "-O0", "-o", "prog", "prog.c"], cwd=build, check=True)
    return build


def _snapshot(build: Path, args: list[str], into: Path) -> Path:
    """Run the program: its counters are one 'snapshot', taken out of the build dir as the guest's are."""
    subprocess.run([str(build / "prog"), *args], cwd=build, check=False)
    into.mkdir(parents=True)
    shutil.move(build / "prog.gcda", into / "prog.gcda")
    return into


def _record(run_dir: Path, worker: str, label: str, domain: str, snapshot: Path, build: Path) -> Hits:
    """What Counters.snapshot does with the files it copied out of the guest."""
    counters = Counters(run_dir, str(build), worker)
    link_notes(snapshot, str(build))
    hits = read_hits(snapshot, str(build))
    merge_into(counters.merged, snapshot)
    with counters.hits_file.open("a") as out:
        out.write(json.dumps({"label": label, "domain": domain, "guest_seconds": 0.5, "host_seconds": 0.25,
                              **hits.to_json()}) + "\n")
    return hits


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, Path]:
    pytest.importorskip("gcovr")
    if shutil.which("gcov") is None or shutil.which("gcov-tool") is None:
        pytest.skip("needs gcc's gcov and gcov-tool")
    build = _build(tmp_path)
    run = tmp_path / "run"
    a = _record(run, "gw0", "tests/fs/test_a.py::test_a", "filesystem_ops",
                _snapshot(build, [], tmp_path / "s1"), build)
    b = _record(run, "gw1", "tests/km/test_b.py::test_b", "kernel_module",
                _snapshot(build, ["x", "y", "z", "w"], tmp_path / "s2"), build)
    assert USED_LINE in a.lines["prog.c"] and USED_LINE in b.lines["prog.c"]
    assert NEVER_LINE not in a.lines["prog.c"] | b.lines["prog.c"]
    assert (USED_LINE, 0) in b.branches["prog.c"] and (USED_LINE, 0) not in a.branches["prog.c"]
    return run, build


def test_hits_are_what_each_snapshot_reached(run_dir: tuple[Path, Path]) -> None:
    run, _ = run_dir
    records = [json.loads(line) for p in sorted(run.glob("*/hits.jsonl")) for line in p.read_text().splitlines()]
    assert [r["label"] for r in records] == ["tests/fs/test_a.py::test_a", "tests/km/test_b.py::test_b"]
    assert "never_called" not in records[0]["functions"] and "used" in records[0]["functions"]
    # reached() is what the model checker counts as new coverage: lines and branches alike
    both = Hits.from_json(records[1])
    assert ("prog.c", USED_LINE, -1) in both.reached() and ("prog.c", USED_LINE, 0) in both.reached()


@pytest.mark.slow
def test_report_counts_lines_and_branches_of_all_workers(run_dir: tuple[Path, Path]) -> None:
    run, _ = run_dir
    summary = write_report(run)
    assert summary is not None
    # the workers' counters are added: main ran twice, `used` 1 + 5 times
    root = ET.parse(summary.cobertura).getroot()
    hits = {int(line.get("number")): int(line.get("hits")) for line in root.iter("line")}
    assert hits[USED_LINE] == 6 and hits[NEVER_LINE] == 0
    page = next(p for p in summary.html.parent.glob("index.prog.c.*.html")).read_text()
    assert "planted: nothing calls this" in page
    assert html_line(page, USED_LINE) == ("coveredLine", "6")
    assert html_line(page, NEVER_LINE)[0] == "uncoveredLine"
    assert summary.lines_covered < summary.lines_total and summary.branches_total > 0
    assert summary.domains["filesystem_ops"]["tests"] == 1
    assert summary.domains["kernel_module"]["branches_covered"] > summary.domains["filesystem_ops"]["branches_covered"]
    assert summary.line().startswith(f"module coverage: lines {summary.lines_covered}/{summary.lines_total} (")
    # what the snapshots cost, summed over the workers' records (the part of a run's time coverage adds)
    assert (summary.snapshots, summary.snapshot_guest_seconds, summary.snapshot_host_seconds) == (2, 1.0, 0.5)
    assert "counters read 2 times in 2 s (1 s in guests)" in summary.line()


class LocalGuest:
    """The guest's shell and file copies, done on the host with gcov's debugfs directory moved to `root` (the
    commands are the ones a guest gets; only their paths differ)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: list[str] = []
        self.copies = 0

    def run(self, command: str, *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        return subprocess.run(["bash", "-c", command.replace(GCOV_ROOT, str(self.root))], capture_output=True,
                              text=True, timeout=timeout, check=True)

    def get(self, remote: str, local: Path | str) -> None:
        self.copies += 1
        shutil.copyfile(remote.replace(GCOV_ROOT, str(self.root)), local)


def test_a_snapshot_copies_the_counters_out_and_resets_them(tmp_path: Path) -> None:
    """The first snapshot lists the counter files, copies them and resets them; later ones copy the files
    found and reset (one guest command, not two: a command forks, slow in a debug guest); a module that
    wrote no counters (not loaded in a fresh VM) is listed again and gives nothing."""
    if shutil.which("gcov") is None or shutil.which("gcov-tool") is None:
        pytest.skip("needs gcc's gcov and gcov-tool")
    build = _build(tmp_path)
    root = tmp_path / "debugfs-gcov"
    counters_in_guest = root / str(build).lstrip("/")
    _snapshot(build, ["x", "y", "z"], counters_in_guest)   # where the kernel puts the counters
    (root / "reset").write_text("")
    guest = LocalGuest(root)
    counters = Counters(tmp_path / "run", str(build), "gw0")
    hits = counters.snapshot(guest, "tests/fs/test_a.py::test_a", "filesystem_ops")
    assert len(guest.commands) == 2 and guest.copies == 1 and (root / "reset").read_text() == "1\n"
    assert USED_LINE in hits.lines["prog.c"] and NEVER_LINE not in hits.lines["prog.c"]
    assert (USED_LINE, 0) in hits.branches["prog.c"] and "used" in hits.functions
    assert (counters.merged / "prog.gcda").read_bytes() == (counters_in_guest / "prog.gcda").read_bytes()
    record = json.loads(counters.hits_file.read_text())
    assert record["label"] == "tests/fs/test_a.py::test_a" and record["guest_seconds"] >= 0
    # the next test's snapshot: a copy and the reset
    (root / "reset").write_text("")
    assert USED_LINE in counters.snapshot(guest, "tests/fs/test_b.py::test_b").lines["prog.c"]
    assert len(guest.commands) == 3 and guest.copies == 2 and (root / "reset").read_text() == "1\n"
    # a fresh VM where the module wrote no counters yet: listed again, nothing read, nothing reset
    (root / "reset").write_text("")
    (counters_in_guest / "prog.gcda").unlink()
    assert counters.snapshot(guest, "tests/fs/test_c.py::test_c").line_count() == 0
    assert (root / "reset").read_text() == "" and counters.snapshots == 2


@pytest.mark.slow
def test_which_test_covers_a_function_or_a_line(run_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_dir
    summary = write_report(run)
    assert summary is not None
    assert who_covers(summary.tests_map, "used") == ["tests/fs/test_a.py::test_a", "tests/km/test_b.py::test_b"]
    assert who_covers(summary.tests_map, "never_called") == []
    assert who_covers(summary.tests_map, f"prog.c:{USED_LINE + 1}") == ["tests/km/test_b.py::test_b"]
    assert who_main([str(summary.tests_map), "used"]) == 0
    assert capsys.readouterr().out.splitlines() == ["tests/fs/test_a.py::test_a", "tests/km/test_b.py::test_b"]


def test_a_run_without_counters_writes_no_report(tmp_path: Path) -> None:
    assert write_report(tmp_path / "nothing") is None


def test_the_unavailable_error_names_the_debug_kernel() -> None:
    text = str(CoverageUnavailable("6.12"))
    assert "--vexfs-coverage needs a guest kernel built with gcov" in text
    assert "--vexfs-kernel 6.12-debug" in text and "\n" in text  # the message, then what to do


def test_coverage_on_a_packaged_kernel_is_refused_before_any_boot(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(vexfs_vm): pass")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-coverage", "--vexfs-kernel", "6.12")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vexfs-coverage needs a guest kernel built with gcov*the kernel '6.12' has none*",
                                 "*what to do: run with --vexfs-kernel 6.12-debug*"])
    assert "Traceback" not in result.stderr.str()


def test_error_paths_of_a_sweep_name_sites_executed_but_never_failed() -> None:
    from pytest_vexfs.coverage.errpaths import ErrorPaths

    source = DEFAULT_SOURCE / "vexfsref_super.c"
    lines = source.read_text().splitlines()
    # vx_link_add's two allocations, each followed by its error return
    array = next(i for i, line in enumerate(lines, 1) if "struct vx_link *nl = kvmalloc_array(" in line)
    name = next(i for i, line in enumerate(lines, 1) if "l->name = kmalloc(len + 1, GFP_KERNEL);" in line)
    array_error = next(i for i in range(array + 1, array + 5) if "return -ENOMEM;" in lines[i - 1])
    paths = ErrorPaths.scan(DEFAULT_SOURCE)
    sites = {str(s): s.text for s in paths.allocation_sites}
    errors = {str(s) for s in paths.error_lines}
    assert sites[f"vexfsref_super.c:{name}"].startswith("l->name = kmalloc(")
    assert f"vexfsref_super.c:{array}" in sites and f"vexfsref_super.c:{array_error}" in errors
    assert f"vexfsref_super.c:{name}" not in errors
    # the sweep ran both allocations and the first one's error return; only the first was failed
    hits = Hits({"src/vexfsref_super.c": {array, array_error, name}})
    text = paths.describe(hits, [f"/tmp/b/src/vexfsref_super.c:{array} (vx_link_add)"])
    assert f"vexfsref_super.c:{array_error}" in text.splitlines()[0]
    assert "2 of " in text.splitlines()[1] and "1 of them failed by a failure point, 1 never failed:" in text
    assert text.splitlines()[2].startswith(f"  vexfsref_super.c:{name} l->name = kmalloc(")


# -- in a debug-kernel guest (the debug kernel is built on first use, see test_debug_kernel.py) ----------

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "-p", "no:randomly", "--vexfs-kernel", "6.12-debug",
        "--vexfs-coverage", "-rA")
INODE_SOURCE = DEFAULT_SOURCE / "vexfsref_inode.c"
FAULT_SOURCE = DEFAULT_SOURCE / "vexfsref_fault.c"


def line_of(source: Path, pattern: str) -> int:
    return next(i for i, line in enumerate(source.read_text().splitlines(), 1) if re.search(pattern, line))


def test_coverage_report_of_a_filesystem_ops_run(pytester: pytest.Pytester) -> None:
    pytest.importorskip("gcovr")
    tests = pytester.mkdir("tests")
    (tests / "filesystem_ops").mkdir()
    (tests / "filesystem_ops" / "test_cov.py").write_text("""
import pytest

def test_rename(vexfs_fs, vexfs_vm):
    a, d = vexfs_fs / "a", vexfs_fs / "d"
    vexfs_vm.run(f"echo hello > {a} && mkdir {d} && mv {a} {d}/b", check=True)

@pytest.mark.expect_fault("oops")
def test_oops(vexfs_module, vexfs_vm, vexfs_profile):
    vexfs_vm.run(f"echo null_deref > {vexfs_profile.fault_control}")

@pytest.mark.model_power_cuts(False)
def test_guided_exploration(vexfs_model):
    summary = vexfs_model.explore()
    print("MODEL", summary.describe())
    assert summary.guided is not None and summary.guided.generated >= 2 and summary.guided.mutated > 0

def test_sweep_create(vexfs_fault_injection, vexfs_fs):
    f = vexfs_fs / "f"
    report = vexfs_fault_injection.sweep("create", f"touch {f}", cleanup=f"rm -f {f}")
    assert report.completed
    print("SWEEP", report.summary())
""")
    result = pytester.runpytest_subprocess(*ARGS, "--vexfs-model-examples", "2", "--vexfs-model-steps", "8",
                                           "--vexfs-model-seed", "1", "tests", timeout=3600)
    out = result.stdout.str()
    result.assert_outcomes(passed=4)
    line = re.search(r"module coverage: lines (\d+)/(\d+) \([\d.]+%\), branches (\d+)/(\d+) .*report (\S+)", out)
    assert line, out[-4000:]
    covered, total, html = int(line[1]), int(line[2]), Path(line[5])
    assert 0 < covered < total
    # test_oops's own counters died with its VM (it broke): three tests snapshot theirs
    result.stdout.fnmatch_lines(["*  filesystem_ops: lines */* (*), branches */*, 3 test(s)*"])
    # the model checker was guided: its corpus (seed file) holds the sequences that reached new code
    result.stdout.fnmatch_lines(["MODEL *guided by coverage: * new sequences (* s), * mutated seeds (* s); corpus "
                                 "* seeds, * lines and * branches of the module reached*"])
    corpus = json.loads((pytester.path / ".vexfs" / "model" / "corpus" / "vexfsref.json").read_text())
    assert corpus["seeds"] and all(seed["ops"] for seed in corpus["seeds"])
    run_dir = html.parent.parent

    # the HTML page of vexfsref_inode.c: vx_rename's body was run (by test_rename, on a VM that the
    # next test's oops then replaced), the planted bug's line in vexfsref_fault.c never was
    rename_line = line_of(INODE_SOURCE, r"^static int vx_rename\(") + 3
    uaf_line = line_of(FAULT_SOURCE, r"char \*volatile p = kmalloc\(VEXFSREF_BUG_SIZE")  # in uaf_write
    pages = {p.name.split(".")[1]: p.read_text() for p in html.parent.glob("index.vexfsref_*.html")}
    assert {"vexfsref_inode", "vexfsref_fault", "vexfsref_super"} <= set(pages)

    hits = {int(x.get("number")): int(x.get("hits"))
            for cls in ET.parse(run_dir / "coverage.xml").getroot().iter("class")
            if cls.get("filename", "").endswith("vexfsref_inode.c") for x in cls.iter("line")}
    rename_counted = next(n for n in range(rename_line, rename_line + 10) if n in hits)
    assert hits[rename_counted] > 0
    covered_class, count = html_line(pages["vexfsref_inode"], rename_counted)
    assert covered_class in ("coveredLine", "partialCoveredLine") and count == str(hits[rename_counted])
    fault_hits = {int(x.get("number")): int(x.get("hits"))
                  for cls in ET.parse(run_dir / "coverage.xml").getroot().iter("class")
                  if cls.get("filename", "").endswith("vexfsref_fault.c") for x in cls.iter("line")}
    assert fault_hits[uaf_line] == 0
    assert html_line(pages["vexfsref_fault"], uaf_line)[0] == "uncoveredLine"

    # which test covers vx_rename? the test -> lines map says
    assert "tests/filesystem_ops/test_cov.py::test_rename" in who_covers(run_dir / "tests.json", "vx_rename")
    # the VM that ran test_rename was replaced after test_oops: the sweep's test ran on the next one, and
    # the report holds the counters of both VMs
    assert "tests/filesystem_ops/test_cov.py::test_sweep_create" in who_covers(run_dir / "tests.json", "vx_create")
    document = json.loads(next((pytester.path / ".vexfs" / "results").glob("*.json")).read_text())
    assert document["coverage"]["lines_covered"] == covered and document["coverage"]["lines_total"] == total

    sweep = next(line for line in result.outlines if line.startswith("SWEEP"))
    at = out.index(sweep)
    text = out[at:at + 4000]
    assert re.search(r"error paths \(coverage\): \d+ of the module's \d+ error-handling lines reached", text)
    assert re.search(r"allocation sites: [1-9]\d* of \d+ executed, [1-9]\d* of them failed by a failure point", text)
