"""The one settings table: every setting (VM, backends, reporting) from the command line, a VEXFS_*
variable, the environment file or the ini file, in that order. None of these tests boots a VM."""

from __future__ import annotations

import pytest

GUEST_TEST = "def test_guest(vexfs_vm):\n    pass\n"
REMOTE = "qemu+ssh://root@host.invalid/system"  # .invalid never resolves: the connection fails at once


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for var in ("VEXFS_ENV", "VEXFS_BACKEND", "VEXFS_LIBVIRT_URI", "VEXFS_LIBVIRT_POOL"):
        monkeypatch.delenv(var, raising=False)
    return pytester


def test_libvirt_pool_from_each_level(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    project.makeini("[pytest]\nvexfs_backend = libvirt\nvexfs_libvirt_pool = from-ini\n")
    (project.path / "environments").mkdir()
    (project.path / "environments/remote.yml").write_text(
        f"backend: libvirt\nlibvirt:\n  uri: {REMOTE}\n  pool: from-env-file\n")
    header = "vexfs: libvirt {}, storage pool {}"
    project.runpytest_subprocess("--collect-only").stdout.fnmatch_lines(
        [header.format("qemu:///system", "from-ini")])
    project.runpytest_subprocess("--collect-only", "--vexfs-env=remote").stdout.fnmatch_lines(
        [header.format(REMOTE, "from-env-file")])
    monkeypatch.setenv("VEXFS_LIBVIRT_POOL", "from-variable")
    project.runpytest_subprocess("--collect-only", "--vexfs-env=remote").stdout.fnmatch_lines(
        [header.format(REMOTE, "from-variable")])
    project.runpytest_subprocess("--collect-only", "--vexfs-env=remote", "--vexfs-libvirt-pool=from-cli"
                                 ).stdout.fnmatch_lines([header.format(REMOTE, "from-cli")])


def test_remote_libvirt_is_configured_from_the_command_line(project: pytest.Pytester) -> None:
    project.makepyfile(test_guest=GUEST_TEST)
    remote = ("--vexfs-backend=libvirt", f"--vexfs-libvirt-uri={REMOTE}", "--vexfs-accel=tcg")
    without_pool = project.runpytest_subprocess(*remote)
    without_pool.assert_outcomes(errors=1)
    without_pool.stdout.fnmatch_lines([f"*libvirt URI '{REMOTE}' is remote: name a storage pool there*",
                                       "*what to do: pass --vexfs-libvirt-pool=NAME*"])
    # with the pool the backend goes on to connect: the unreachable host is the error now
    with_pool = project.runpytest_subprocess(*remote, "--vexfs-libvirt-pool=vexfs",
                                             "--vexfs-libvirt-connect-timeout=5")
    with_pool.assert_outcomes(errors=1)
    with_pool.stdout.fnmatch_lines([f"*cannot open libvirt URI '{REMOTE}'*"])
    for result in (without_pool, with_pool):
        result.stdout.no_fnmatch_line("*Traceback*")
        result.stdout.no_fnmatch_line("*During handling*")


@pytest.mark.parametrize("args, expected", [
    (("--vexfs-libvirt-console=serial",), "*bad value 'serial' for libvirt_console*allowed: auto, file, stream*"),
    (("--vexfs-libvirt-ssh-port=70000",), "*bad value '70000' for libvirt_ssh_port*integer 0-65535*"),
    (("--vexfs-console-stream=maybe",), "*bad value 'maybe' for console_stream*true/false*"),
])
def test_bad_backend_option_is_a_usage_error(project: pytest.Pytester, args: tuple[str, ...],
                                             expected: str) -> None:
    result = project.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    result.stderr.no_fnmatch_line("*Traceback*")


def test_reporting_settings_come_from_the_environment_file_too(project: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (project.path / "environments").mkdir()
    (project.path / "environments/mine.yml").write_text(
        "reporting:\n  metrics: from-env-file.prom\n  results_json: 'off'\n")
    project.makepyfile(test_plain="def test_plain():\n    pass\n")
    project.runpytest_subprocess("--vexfs-env=mine").assert_outcomes(passed=1)
    assert (project.path / "from-env-file.prom").is_file()
    assert not (project.path / ".vexfs" / "results").exists()
    monkeypatch.setenv("VEXFS_METRICS", "from-variable.prom")  # a variable beats the environment file
    project.runpytest_subprocess("--vexfs-env=mine").assert_outcomes(passed=1)
    assert (project.path / "from-variable.prom").is_file()


@pytest.mark.parametrize("text, expected", [
    ("vm:\n  memory_mb: [512]\n", "*bad value [[]512] for key 'vm.memory_mb' in the environment file: must be a "
                                  "single value*(from *environments/bad.yml, key 'vm.memory_mb')*"),
    ("vm: 512\n", "*wrong type for key 'vm' in the environment file: got the number 512*allowed: a mapping with "
                  "keys *memory_mb*"),
    ("libvirt:\n  pool: vexfs\n  pol: x\n", "*unknown key libvirt.pol in the environment file*allowed: *libvirt.pool*"),
    ("reporting:\n  metrics: out.txt\n", "*--vexfs-metrics: invalid value 'out.txt'*(from *bad.yml key "
                                         "reporting.metrics)*"),
])
def test_bad_environment_file_is_one_paragraph(project: pytest.Pytester, text: str, expected: str) -> None:
    (project.path / "environments").mkdir()
    (project.path / "environments/bad.yml").write_text(text)
    result = project.runpytest_subprocess("--vexfs-env=bad")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    result.stderr.no_fnmatch_line("*Traceback*")


def test_readme_shows_the_settings_table() -> None:
    from pathlib import Path

    from pytest_vexfs.settings import markdown_table

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings table: python -m pytest_vexfs.settings -->\n")
    end = readme.index("<!-- end of settings table -->")
    assert readme[start:end].split("\n", 1)[1] == markdown_table(), "run: python -m pytest_vexfs.settings"
