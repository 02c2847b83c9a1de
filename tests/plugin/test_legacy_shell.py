"""Legacy shell test scripts as pytest items, the vexfs-migrate command, and the guest helper commands.

Collection rules and migrate suggestions run without a VM; the scripts themselves run in a real guest,
where a script that oopses the kernel must fail with the kernel's title, like a Python test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml

from pytest_vexfs.compat.shell import main as migrate_main
from pytest_vexfs.compat.shell import (ScriptHeaderError, args_from_ini, missing_host_path, parse_header, stdin_reads,
                                       strip_ansi, suggest_domain)
from pytest_vexfs.faults.kernel_log import begin_marker
from pytest_vexfs.harness.tampering import killed_by_test
from pytest_vexfs.reporting.junit import case_properties

ARGS = ("-p", "no:cacheprovider", "--vexfs-accel", "tcg", "--junitxml=junit.xml", "-rfEs")

SCRIPTS = {
    # domain directory: test_*.sh are tests, other scripts are helpers they source
    "tests/kernel_module/test_ok.sh": """\
        #!/bin/bash
        # vexfs: cwd=script
        set -e
        . ./lib_checks.sh
        check_domain kernel_module
        uname -r
        """,
    "tests/kernel_module/lib_checks.sh": """
        check_domain() { [ "$VEXFS_DOMAIN" = "$1" ] || { echo "domain is '$VEXFS_DOMAIN'"; exit 1; }; }
        """,
    "tests/kernel_module/test_skip.sh": """\
        #!/bin/sh
        echo "probing for a unicorn"
        echo "needs a unicorn device"
        exit 77
        """,
    "tests/kernel_module/test_fail.sh": """\
        #!/bin/sh
        echo "some progress"
        echo "mkfs: bad superblock" >&2
        exit 3
        """,
    "tests/kernel_module/test_helpers.sh": """\
        #!/bin/bash
        # vexfs: module=installed user=root
        set -ex
        for c in kbuild kload kunload ktest vexfs-test vexfs-monitor; do command -v $c; done
        kload
        grep -qw vexfsref /proc/filesystems
        kunload
        ! test -d /sys/module/vexfsref
        ktest                                   # smoke: load, mkfs, mount, write, read, unmount, unload
        mkdir -p /tmp/t/kernel_module
        printf '#!/bin/sh\\necho fine\\n' > /tmp/t/kernel_module/test_a.sh
        printf '#!/bin/sh\\necho no device; exit 77\\n' > /tmp/t/kernel_module/test_b.sh
        VEXFS_DOMAIN=kernel_module vexfs-test -d /tmp/t | tee /tmp/vt.txt
        grep -q "PASS .*test_a.sh" /tmp/vt.txt && grep -q "SKIP .*test_b.sh: no device" /tmp/vt.txt
        timeout 60 vexfs-monitor -a -f > /tmp/mon.txt 2>&1 &   # it reads the whole log: seconds under TCG
        for _ in $(seq 300); do grep -q vexfs-test-begin /tmp/mon.txt && break; sleep 0.2; done
        kill %1 || true
        grep -q "vexfs-test-begin" /tmp/mon.txt
        """,
    # the harness is out of a test's reach: no process names the project, the OOM killer spares init and
    # agent (not the test), and the signals a careless cleanup sends them are ignored and reported
    "tests/kernel_module/test_harness_out_of_reach.sh": """\
        #!/bin/bash
        # vexfs: user=root
        set -e
        if pgrep -af vexfs; then echo "processes named after the project"; exit 1; fi
        agent=$(pgrep -xf '/usr/bin/python3 -S /run/harness/agent')
        [ "$(cat /proc/1/oom_score_adj) $(cat /proc/$agent/oom_score_adj)" = "-1000 -1000" ]
        [ "$(cat /proc/self/oom_score_adj)" = 0 ]
        kill -TERM "$agent"; kill -HUP 1; kill -TERM 1
        sleep 1
        kill -0 "$agent"
        dmesg | grep "sent SIGTERM to the harness's guest agent (pid $agent); ignored"
        """,
    # a configured legacy directory: every *.sh but helpers; the domain comes from the directory
    "legacy/common.sh": "echo I am sourced, not run; exit 1\n",
    "legacy/safety/plant_oops.sh": """\
        #!/bin/sh
        # vexfs: module user=root
        echo null_deref > "$VEXFS_FAULT_CONTROL"
        """,
    "legacy/safety/expected_warning.sh": """\
        #!/bin/sh
        # vexfs: module expect_fault=warning
        echo warn | sudo tee "$VEXFS_FAULT_CONTROL"
        """,
    "legacy/tools/not_a_test.sh": "# vexfs: ignore\nexit 1\n",
}


def _write(project: pytest.Pytester, files: dict[str, str]) -> None:
    import textwrap

    for rel, text in files.items():
        path = project.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    project.makeini("[pytest]\nvexfs_shell_dirs = legacy\n")


def test_collection_rules_and_domain_markers(pytester: pytest.Pytester) -> None:
    _write(pytester, SCRIPTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines_random([
        "tests/kernel_module/test_ok.sh::test_ok", "tests/kernel_module/test_skip.sh::test_skip",
        "tests/kernel_module/test_fail.sh::test_fail", "tests/kernel_module/test_helpers.sh::test_helpers",
        "legacy/safety/plant_oops.sh::plant_oops", "legacy/safety/expected_warning.sh::expected_warning",
        "tests/kernel_module/test_harness_out_of_reach.sh::test_harness_out_of_reach", "7 tests collected*"])
    result.stdout.no_fnmatch_line("*common*")
    result.stdout.no_fnmatch_line("*lib_checks*")
    result.stdout.no_fnmatch_line("*not_a_test*")
    safety = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-m", "safety")
    safety.stdout.fnmatch_lines_random(["legacy/safety/plant_oops.sh::plant_oops",
                                 "legacy/safety/expected_warning.sh::expected_warning",
                                 "2/7 tests collected (5 deselected)*"])


def test_bad_header_is_a_collection_error_naming_the_line(pytester: pytest.Pytester) -> None:
    _write(pytester, {"tests/safety/test_bad.sh": "#!/bin/sh\n# vexfs: hang_timeout=soon\nexit 0\n",
                      "tests/safety/test_domain.sh": "# vexfs: domain=networking\nexit 0\n"})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines_random([
        "*test_bad.sh:2: hang_timeout='soon'; allowed: seconds > 0*",
        "*domain='networking' is not a test domain (allowed: kernel_module, *; add new ones to the ini "
        "key vexfs_domains)*"])


def test_header_parsing() -> None:
    header = parse_header("#!/bin/sh\n# vexfs: module=installed hang_timeout=30\n# vexfs: expect_fault=oops,panic "
                          "fresh_vm requires=vectors user=vexfs\n")
    assert (header.module, header.hang_timeout, header.expect_fault) == ("installed", 30.0, ("oops", "panic"))
    assert (header.fresh_vm, header.requires, header.user) == (True, ("vectors",), "vexfs")
    with pytest.raises(ScriptHeaderError, match="x.sh:1: unknown '# vexfs:' key 'modul'"):
        parse_header("# vexfs: modul\n", "x.sh")


def test_header_cwd_args_and_the_ini_arguments() -> None:
    header = parse_header('#!/bin/bash\n# vexfs: cwd=script user=root args=--quick "two words" -n 3\n')
    assert (header.cwd, header.user, header.args) == ("script", "root", ("--quick", "two words", "-n", "3"))
    assert parse_header("#!/bin/sh\n").args is None
    with pytest.raises(ScriptHeaderError, match="x.sh:1: cwd='home'; allowed: cwd=root"):
        parse_header("# vexfs: cwd=home\n", "x.sh")
    with pytest.raises(ScriptHeaderError, match="x.sh:1: args='\"open': No closing quotation"):
        parse_header('# vexfs: args="open\n', "x.sh")
    lines = ["kernel_module/tests/check_*.sh: --fast", "*: -v 'a b'"]
    assert args_from_ini(lines, "kernel_module/tests/check_io.sh") == ("--fast",)
    assert args_from_ini(lines, "tests/other.sh") == ("-v", "a b")
    assert args_from_ini([], "x.sh") is None
    with pytest.raises(ScriptHeaderError, match="not 'PATH-GLOB: ARGUMENTS'"):
        args_from_ini(["no colon"], "x.sh")


def test_what_a_failed_script_is_told() -> None:
    assert strip_ansi("\x1b[0;34m[INFO]\x1b[0m ok \x1b[1;31mred\x1b[m \x1b]0;title\x07end") == "[INFO] ok red end"
    log = "./kernel_module/tests/x.sh\t4\t-p Continue? [y/N]  answer\nlib/ask.sh\t9\tanswer\n"
    assert stdin_reads(log, "x.sh") == ["read -p at line 4", "read at line 9 of lib/ask.sh"]
    script = "MODULE_DIR=/home/alice/src/vexfs/kernel_module\ncd \"$MODULE_DIR\"\nls /tmp/x\n"
    output = ("x.sh: line 2: cd: /home/alice/src/vexfs/kernel_module: No such file or directory\n"
              "ls: cannot access '/tmp/x': No such file or directory\n")
    assert missing_host_path(output, script) == "/home/alice/src/vexfs/kernel_module"
    below = "cat: /home/alice/src/vexfs/kernel_module/Makefile: No such file or directory"
    assert missing_host_path(below, script) == "/home/alice/src/vexfs/kernel_module/Makefile"
    # a missing path the script did not write (made by the guest, or in the guest's copy) is not rot
    assert missing_host_path("ls: cannot access '/dev/vdc': No such file or directory", script) == ""
    assert missing_host_path("cat: /tmp/vexfs-shell/t/x: No such file or directory", "cat /tmp/vexfs-shell/t/x",
                             ("/tmp/vexfs-shell",)) == ""


def test_tampering_reasons_come_from_the_test_window() -> None:
    console = (f"[ 1.0] {begin_marker('t.sh::a')}\n[ 1.5] sysrq: Power Off\n"
               f"[ 2.0] {begin_marker('t.sh::b')}\n[ 2.1] harness: pid 9 (`pkill python3`) sent SIGTERM to the "
               "harness's guest agent (pid 120); ignored\n"
               "[ 2.2] harness: the test killed the harness's guest agent (pid 120, by `pkill -9 -x python3`)\n")
    assert killed_by_test(console, "t.sh::b") == \
        "the test killed the harness's guest agent (pid 120, by `pkill -9 -x python3`)"
    assert killed_by_test(console, "t.sh::a") == "the test powered the guest off (the kernel said: sysrq: Power Off)"
    assert killed_by_test(console, "t.sh::c") == ""
    assert killed_by_test(f"{begin_marker('r')}\nreboot: Restarting system\n", "r") == \
        "the test rebooted the guest (the kernel said: reboot: Restarting system)"


@pytest.mark.parametrize(("name", "body", "domain", "reason"), [
    ("run1.sh", "insmod vexfs.ko\nrmmod vexfs\n", "kernel_module", "content (insmod, rmmod)"),
    ("run2.sh", "insmod x.ko\nmkdir /mnt/a\ndd if=/dev/zero of=/mnt/a/f\ncat /mnt/a/f\n", "filesystem_ops",
     "content (mkdir, dd, cat)"),
    ("run3.sh", "vexctl search /mnt/v 3 1,2,3\n", "vector_ops", "content (vexctl, search)"),
    ("run4.sh", "time dd if=/dev/zero of=/mnt/f bs=1M count=10\n", "performance", "content (time)"),
    ("run5.sh", "insmod x.ko\necho null_deref > /proc/vexfsref_fault\n", "safety", "content (fault)"),
    ("check_panic.sh", "true\n", "safety", "name (panic)"),
    ("mount_test.sh", "true\n", "filesystem_ops", "name (mount)"),
])
def test_domain_suggestions(tmp_path: Path, name: str, body: str, domain: str, reason: str) -> None:
    path = tmp_path / "old" / name
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n" + body)
    suggestion = suggest_domain(path)
    assert (suggestion.domain, suggestion.reason) == (domain, reason)
    in_domain_dir = tmp_path / "vector_ops" / name
    in_domain_dir.parent.mkdir()
    in_domain_dir.write_text(body)
    assert suggest_domain(in_domain_dir).domain == "vector_ops"  # the directory wins over the content


def test_vexfs_migrate_lists_and_copies(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "old"
    (old / "sub").mkdir(parents=True)
    (old / "load_unload.sh").write_text("insmod x.ko\nrmmod x\n")
    (old / "sub" / "crash.sh").write_text("echo panic > /proc/vexfsref_fault\n")
    (old / "common.sh").write_text("helpers\n")
    assert migrate_main(["list", "--json", "old"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["script"], r["domain"], r["uses_module"]) for r in rows] == [
        ("old/load_unload.sh", "kernel_module", True), ("old/sub/crash.sh", "safety", False)]
    assert migrate_main(["copy", "old"]) == 0
    assert (tmp_path / "tests/kernel_module/test_load_unload.sh").read_text() == "insmod x.ko\nrmmod x\n"
    assert (tmp_path / "tests/safety/test_crash.sh").is_file()
    assert migrate_main(["copy", "old"]) == 1  # never overwrites without --force
    assert "exists (use --force)" in capsys.readouterr().err
    # the console script is installed
    proc = subprocess.run([Path(sys.executable).with_name("vexfs-migrate"), "list", "old"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0 and "old/sub/crash.sh" in proc.stdout and "safety" in proc.stdout


def test_scripts_run_in_the_guest_with_fault_detection(pytester: pytest.Pytester) -> None:
    _write(pytester, SCRIPTS)
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=4, skipped=1, failed=2)
    result.stdout.fnmatch_lines_random([
        "SKIPPED*tests/kernel_module/test_skip.sh: needs a unicorn device",
        "*BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref*",
        "*test_fail.sh exited with status 3*",
        "*mkfs: bad superblock*",
        "FAILED legacy/safety/plant_oops.sh::plant_oops*",
        "FAILED tests/kernel_module/test_fail.sh::test_fail*"])
    cases = {}
    for suite in JUnitXml.fromfile(str(pytester.path / "junit.xml")):
        for case in suite:
            cases[case.name] = case_properties(case)
    oops = cases["plant_oops"]
    assert oops["fault_kind"] == "oops"
    assert oops["fault_title"] == "BUG: kernel NULL pointer dereference in vexfsref_fault_null_deref"
    assert oops["domain"] == "safety"
    assert cases["test_ok"]["domain"] == "kernel_module"
    assert "fault_kind" not in cases["test_helpers"]
    assert "fault_kind" not in cases["test_harness_out_of_reach"]
    assert cases["expected_warning"]["fault_kind"] == "warning"  # expected, so it passed
