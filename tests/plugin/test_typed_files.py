"""Profiles, domain seed configs and environment files are typed: a wrong type is one paragraph naming the
file, the key, the value and what fits; never a silent misreading, never a traceback. None boots a VM."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pytest_vexfs.module.profile import DEFAULT_SOURCE

VECTOR_TEST = """
import pytest

@pytest.mark.requires("vectors")
def test_vectors():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for var in ("VEXFS_ENV", "VEXFS_SOURCE", "VEXFS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return pytester


def _profile(project: pytest.Pytester, **changes: object) -> Path:
    data = yaml.safe_load((DEFAULT_SOURCE / "profile.yml").read_text())
    data.update(changes, source=str(DEFAULT_SOURCE))
    path = project.path / "mine" / "profile.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def _one_paragraph(result: pytest.RunResult) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text
    assert text.count("pytest-vexfs:") == 1


def test_capabilities_as_one_string_is_an_error_not_a_set_of_letters(project: pytest.Pytester) -> None:
    path = _profile(project, capabilities="vectors")
    project.makepyfile(test_vec=VECTOR_TEST)
    result = project.runpytest_subprocess(f"--vexfs-profile={path}")
    _one_paragraph(result)
    result.stderr.fnmatch_lines([f"*bad value 'vectors' for key 'capabilities' in the module profile: a list of "
                                 f"names, e.g. [[]files, vectors], not one string (from {path}, key "
                                 f"'capabilities'); allowed: a list of strings*"])


def test_load_params_as_a_list_is_an_error_not_an_internal_error(project: pytest.Pytester) -> None:
    path = _profile(project, load_params=["a", "b"])
    result = project.runpytest_subprocess(f"--vexfs-profile={path}")
    _one_paragraph(result)
    result.stderr.fnmatch_lines([f"*wrong type for key 'load_params' in the module profile: got the list "
                                 f"[[]'a', 'b'] (from {path}, key 'load_params'); allowed: a mapping of names "
                                 f"to values*"])


def test_unknown_profile_key_names_the_allowed_ones(project: pytest.Pytester) -> None:
    path = _profile(project, capabilites=["files"])
    result = project.runpytest_subprocess(f"--vexfs-profile={path}")
    _one_paragraph(result)
    result.stderr.fnmatch_lines(["*unknown key capabilites in the module profile*allowed: *capabilities*"])


def test_profile_of_a_source_directory_is_checked_the_same_way(project: pytest.Pytester) -> None:
    source = project.path / "mymod"
    source.mkdir()
    (source / "Makefile").write_text("obj-m := mymod.o\n")
    (source / "profile.yml").write_text("name: mymod\nmodule_file: mymod.ko\nmkfs: {tool: mkfs.mymod}\n")
    result = project.runpytest_subprocess(f"--vexfs-source={source}")
    _one_paragraph(result)
    result.stderr.fnmatch_lines(["*wrong type for key 'mkfs' in the module profile: got the mapping "
                                 "{'tool': 'mkfs.mymod'} (from */mymod/profile.yml, key 'mkfs')*"])


def test_wrong_type_in_a_domain_seed_config_fails_its_tests_in_one_paragraph(project: pytest.Pytester) -> None:
    domain = project.path / "tests" / "kernel_module"
    domain.mkdir(parents=True)
    (domain / "config.yml").write_text("max_load_time: [5]\n")
    (domain / "test_seed.py").write_text("def test_seed(vexfs_seed):\n    pass\n")
    result = project.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pytest-vexfs: wrong type for key 'max_load_time' in the seed config: got the "
                                 "list [[]5] (from */kernel_module/config.yml, key 'max_load_time'); allowed: a "
                                 "number (seconds)"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*During handling*")
