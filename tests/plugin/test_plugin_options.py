"""The plugin as a user meets it before any VM boots: options, precedence, environment files, markers,
and the errors bad input gets. None of these tests boots a VM."""

from __future__ import annotations

import pytest

DOMAIN_TESTS = {
    "tests/kernel_module/test_km.py": "def test_km():\n    pass\n",
    "tests/safety/test_safe.py": "def test_safe():\n    pass\n",
    "tests/vector_ops/deep/test_vec.py": "def test_vec():\n    pass\n",
    "tests/test_top.py": "def test_top():\n    pass\n",
}


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for var in ("VEXFS_ENV", "VEXFS_MEMORY", "VEXFS_KERNEL", "VEXFS_BACKEND", "VEXFS_SOURCE",
                "VEXFS_PROFILE", "VEXFS_ACCEL"):
        monkeypatch.delenv(var, raising=False)
    for path, text in DOMAIN_TESTS.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return pytester


def test_domain_marker_selects_the_same_tests_as_the_directory(project: pytest.Pytester) -> None:
    by_marker = project.runpytest_subprocess("-m", "kernel_module", "--collect-only", "-q")
    by_dir = project.runpytest_subprocess("tests/kernel_module", "--collect-only", "-q")
    by_marker.stdout.fnmatch_lines(["tests/kernel_module/test_km.py::test_km", "*1/4 tests collected*"])
    by_dir.stdout.fnmatch_lines(["tests/kernel_module/test_km.py::test_km"])
    deep = project.runpytest_subprocess("-m", "vector_ops", "--collect-only", "-q")
    deep.stdout.fnmatch_lines(["tests/vector_ops/deep/test_vec.py::test_vec"])
    deep.stdout.no_fnmatch_line("*test_top*")


def test_markers_are_registered(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.kernel_module:*", "@pytest.mark.integration:*",
                                 "@pytest.mark.expect_fault(*kinds)*", "@pytest.mark.hang_timeout(seconds)*",
                                 "@pytest.mark.fresh_vm*"])


def test_extra_domain_from_one_ini_line(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\nvexfs_domains = compression\n")
    target = project.path / "tests/compression/test_zip.py"
    target.parent.mkdir(parents=True)
    target.write_text("def test_zip():\n    pass\n")
    result = project.runpytest_subprocess("-m", "compression", "--collect-only", "-q", "--strict-markers")
    result.stdout.fnmatch_lines(["tests/compression/test_zip.py::test_zip", "*1/5 tests collected*"])


def test_collection_boots_nothing_even_without_qemu(project: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEXFS_QEMU", "/nonexistent/qemu-system-x86_64")
    result = project.runpytest_subprocess("--collect-only", "-q")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*4 tests collected*"])


def test_report_header_shows_backend_kernel_image_and_accel(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--collect-only", "--vexfs-accel", "tcg")
    result.stdout.fnmatch_lines(["vexfs: backend qemu, kernel 6.12, image *, accel tcg (requested)",
                                 "vexfs: environment *"])


def test_precedence_cli_over_env_var_over_env_file_over_ini(project: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    project.makeini("[pytest]\nvexfs_memory = 700\nvexfs_cpus = 3\n")
    (project.path / "environments").mkdir()
    (project.path / "environments/mine.yml").write_text("vm:\n  memory_mb: 800\n  cpus: 2\n")
    header = "vexfs: environment *, VM {} MiB x {} CPU*"
    # the plugin's wiring of each level (the rules themselves, level by level: test_settings_resolution.py)
    project.runpytest_subprocess("--collect-only").stdout.fnmatch_lines([header.format(700, 3)])
    monkeypatch.setenv("VEXFS_MEMORY", "900")
    project.runpytest_subprocess("--collect-only", "--vexfs-env", "mine").stdout.fnmatch_lines(
        [header.format(900, 2)])
    project.runpytest_subprocess("--collect-only", "--vexfs-env", "mine", "--vexfs-memory", "1000"
                                 ).stdout.fnmatch_lines([header.format(1000, 2)])


def test_unknown_environment_names_the_allowed_ones(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("--vexfs-env", "prod")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown environment 'prod'*; allowed: ci, dev, staging, test*",
                                 "*what to do: create environments/prod.yml*"])


def test_malformed_yaml_names_file_and_line(project: pytest.Pytester) -> None:
    (project.path / "environments").mkdir()
    (project.path / "environments/broken.yml").write_text("vm:\n  memory_mb: 512\n   cpus: [1\n")
    result = project.runpytest_subprocess("--vexfs-env", "broken")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*malformed YAML at line *environments/broken.yml*"])


def test_unknown_key_in_environment_file(project: pytest.Pytester) -> None:
    (project.path / "environments").mkdir()
    (project.path / "environments/typo.yml").write_text("vm:\n  memroy_mb: 512\n")
    result = project.runpytest_subprocess("--vexfs-env", "typo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown key vm.memroy_mb*typo.yml*allowed: *vm.memory_mb*"])


# a bad setting and a bad module source become usage errors without a traceback; every other bad value's
# message: test_settings_resolution.py and test_profile_validation.py (direct calls)
@pytest.mark.parametrize("args, expected", [
    (("--vexfs-memory", "lots"), "*bad value 'lots' for memory*command line option --vexfs-memory*integer > 0*"),
    (("--vexfs-source", "/nonexistent/module"), "*module source directory /nonexistent/module does not exist*"),
])
def test_bad_values_are_usage_errors(project: pytest.Pytester, args: tuple[str, ...], expected: str) -> None:
    result = project.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    result.stderr.no_fnmatch_line("*Traceback*")


def test_resource_budget_overrun_fails_up_front_with_numbers(project: pytest.Pytester) -> None:
    (project.path / "environments").mkdir()
    (project.path / "environments/small.yml").write_text("limits:\n  max_total_memory_gb: 1\n")
    result = project.runpytest_subprocess("--vexfs-env", "small", "-p", "xdist", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*exceed its resource budget: 2 x 1024 MiB = 2.0 GiB memory > "
                                 "max_total_memory_gb 1*"])


def test_expect_fault_marker_arguments_are_checked(project: pytest.Pytester) -> None:
    project.makepyfile(test_bad_marker="""
        import pytest

        @pytest.mark.expect_fault(42)
        def test_x(vexfs_vm):
            pass
    """)
    result = project.runpytest_subprocess("test_bad_marker.py", "--vexfs-accel", "tcg")
    result.stderr.fnmatch_lines(["*expect_fault takes fault kinds as strings, got (42,)*"])  # at collection
    assert result.ret != 0 and "Traceback" not in result.stderr.str()
    project.makepyfile(test_bad_marker="""
        import pytest

        @pytest.mark.expect_fault("kasan", "opps")
        def test_x(vexfs_vm):
            pass
    """)
    result = project.runpytest_subprocess("test_bad_marker.py", "--vexfs-accel", "tcg")
    result.stderr.fnmatch_lines(["*test_bad_marker.py::test_x: expect_fault names 'opps', which is no fault kind; "
                                 "the kinds are: oops, gpf, *"])
    assert result.ret != 0 and "Traceback" not in result.stderr.str()
