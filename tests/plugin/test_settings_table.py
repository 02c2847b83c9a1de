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
