"""The module's own words under a failure: the kernel log lines it printed during the failing test,
folded with counts, in the terminal, the JUnit system-out and the HTML report."""

from __future__ import annotations

import string

import pytest
from junitparser import JUnitXml

from pytest_vexfs.faults.kernel_log import begin_marker, end_marker
from pytest_vexfs.faults.module_log import module_words

NODE = "tests/filesystem_ops/test_x.py::test_big_write"


def _log(*lines: str, node: str = NODE) -> str:
    stamped = [f"[  {10 + i}.{i:06d}] {line}" for i, line in enumerate(lines)]
    return "\n".join(stamped).replace("BEGIN", begin_marker(node)).replace("END", end_marker(node))


def test_lines_between_the_markers_are_folded_with_counts() -> None:
    log = _log("mymod: loaded", "BEGIN",
               *[f"mymod: extent tree full at block {n}, write refused" for n in range(9)],
               "loop0: detected capacity change from 0 to 8192", "mymod: mounted vdb", "END",
               "mymod: after the test")
    words = module_words(log, NODE, names=("mymod",))
    assert words.render().splitlines() == [
        "mymod: extent tree full at block 0, write refused (×9)",
        "mymod: mounted vdb",
        "loop0: detected capacity change from 0 to 8192",  # lines naming the module come first
    ]


def test_ignored_messages_and_the_harness_lines_are_left_out() -> None:
    log = _log("BEGIN", "sysrq: Show Blocked State", "mymod: loading out-of-tree module taints kernel",
               "drop_caches: sh (12): drop_caches: 3", "mymod: real trouble")
    words = module_words(log, NODE, names=("mymod",), ignore=["loading out-of-tree module taints kernel"])
    assert words.lines == [("mymod: real trouble", 1)]


def test_the_last_run_of_the_test_counts_and_another_tests_lines_do_not() -> None:
    other = "tests/x.py::test_other"
    log = "\n".join([_log("BEGIN", "mymod: first run", "END"), _log("BEGIN", "mymod: second run"),
                     _log("BEGIN", "mymod: the other test", node=other)])
    assert module_words(log, NODE).render() == "mymod: second run"
    assert not module_words(_log("mymod: no markers at all"), NODE)


def test_many_distinct_lines_are_capped() -> None:
    log = _log("BEGIN", *[f"mymod: line {letter}" for letter in string.ascii_letters[:42]])
    words = module_words(log, NODE)
    assert len(words.lines) == 40
    assert words.render().endswith("... and 2 more distinct line(s)")


def test_a_refused_mount_shows_the_modules_explanation(pytester: pytest.Pytester) -> None:
    # a real module, a real reason: the reference module refuses an image whose checksum is wrong and
    # says so in the kernel log each time; the test only sees mount(8) fail
    pytester.makepyfile(test_corrupt="""
        from pytest_vexfs.module.fs import MountError

        def test_mount_after_corruption(vexfs_fs, vexfs_vm):
            vexfs_vm.run(f"echo data > {vexfs_fs / 'f'}", check=True)
            vexfs_fs.unmount()
            # a byte of the current payload: its first block is the superblock's payload_block (offset 64;
            # 0 reads as 1), which a save moves so that a crash during a save leaves the old image whole
            dev = vexfs_fs.device
            vexfs_vm.run(f"pb=$(dd if={dev} bs=1 skip=64 count=8 status=none | od -An -tu8 | tr -d ' '); "
                         f"[ \\"$pb\\" = 0 ] && pb=1; printf X | dd of={dev} bs=1 seek=$((pb * 4096 + 104)) "
                         f"conv=notrunc,fsync status=none", check=True)
            for _ in range(2):
                try:
                    vexfs_fs.mount()
                except MountError:
                    pass
            vexfs_fs.mount()
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=junit.xml",
                                           "--html=report.html", "--self-contained-html")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- vexfs module log -*", "vexfsref: vdb: image checksum mismatch (×3)"])
    case = next(iter(next(iter(JUnitXml.fromfile(str(pytester.path / "junit.xml"))))))
    assert "vexfsref: vdb: image checksum mismatch (×3)" in (case.system_out or "")
    html = (pytester.path / "report.html").read_text()  # pytest-html keeps the log in JSON: × is \u00d7
    assert "vexfsref: vdb: image checksum mismatch (\\u00d73)" in html


def test_under_a_failure_only_the_lines_that_explain_it_are_shown() -> None:
    # dmesg -r: the level first; errors and warnings (by level or by their words) explain, chatter does not
    log = "\n".join(["<6>[  1.000000] " + begin_marker(NODE), "<6>[  1.100000] mymod: vdb: mounted, 3 inodes",
                     "<6>[  1.200000] mymod: vdb: saved 3 inodes", "<4>[  1.300000] mymod: vdb: extent 7 odd",
                     "<6>[  1.400000] mymod: vdb: write refused at 49152 bytes",
                     "<4>[  1.450000] hrtimer: interrupt took 50295044 ns",  # a warning, not the module's
                     "<6>[  1.500000] mymod: vdb: mounted, 4 inodes"])
    words = module_words(log, NODE, names=("mymod",), explain=True)
    assert words.render().splitlines() == [
        "mymod: vdb: extent 7 odd", "mymod: vdb: write refused at 49152 bytes",
        "(4 other kernel line(s) of this test left out: chatter, or not the module's)"]
    assert words.first == "mymod: vdb: extent 7 odd"
    # nothing explains: the last lines, those printed at the failing operation, and no first explaining line
    quiet = module_words(_log("BEGIN", *[f"mymod: step {n}" for n in range(8)]), NODE, explain=True)
    assert [line for line, _ in quiet.lines] == ["mymod: step 3"] and quiet.lines[0][1] == 5
    assert quiet.first == ""
