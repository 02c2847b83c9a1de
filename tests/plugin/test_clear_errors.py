"""Errors that say what to do: a guest that panics while booting shows the panic line (and, when memory
ran out, the option that fixes it); every option and command a hint names exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import pytest_vexfs
from pytest_vexfs.cli import build_parser as vexfs_vm_parser
from pytest_vexfs.images.image import forget_image, image_digest, resolve_flavour
from pytest_vexfs.reporting.cli import build_parser as vexfs_report_parser

PACKAGE = Path(pytest_vexfs.__file__).parent


def test_too_little_memory_shows_the_panic_and_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_guest="def test_guest(vexfs_vm):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vexfs-accel=tcg", "--vexfs-memory=64")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*pytest-vexfs: * the guest kernel panicked while booting: Kernel panic - not syncing: System is "
        "deadlocked on memory",
        "*what to do: the guest ran out of memory while booting with 64 MiB: raise --vexfs-memory*"])
    text = result.stdout.str()
    assert "Traceback" not in text and "During handling" not in text
    assert "--vexfs-boot-timeout" not in text  # waiting longer would not help


def _hinted(pattern: str) -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(m.group(1).strip() for m in re.finditer(pattern, path.read_text()))
    return found


def test_every_vexfs_option_named_in_the_package_exists(pytester: pytest.Pytester) -> None:
    known = set(re.findall(r"--vexfs-[a-z-]+", pytester.runpytest_subprocess("--help").stdout.str()))
    named = {o for o in _hinted(r"(--vexfs-[a-z-]*[a-z])\b") if not o.endswith("-model")}  # "--vexfs-model-*"
    assert named and not named - known, f"named but not an option: {sorted(named - known)}"


def _command_exists(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    for word in words:
        if word.startswith("--"):
            return word in parser._option_string_actions
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            return True  # the rest are arguments
        if word not in subparsers[0].choices:
            return False
        parser = subparsers[0].choices[word]
    return True


@pytest.mark.parametrize("program, parser", [("vexfs-vm", vexfs_vm_parser), ("vexfs-report", vexfs_report_parser)])
def test_every_command_named_in_a_hint_exists(program: str, parser: object) -> None:
    commands = _hinted(rf"`?{program} ((?:[a-z]+ )*[a-z]+(?: --[a-z-]+)?)")
    assert commands
    missing = [c for c in commands if not _command_exists(parser(), c.split())]  # type: ignore[operator]
    assert not missing, f"{program} has no {missing}"


def test_image_build_force_forgets_the_image_and_its_snapshots(tmp_path: Path) -> None:
    flavour = resolve_flavour("6.12")
    image = tmp_path / "images" / f"{flavour.name}-{image_digest(flavour)}"
    other = tmp_path / "images" / "6.1-0123456789abcdef"
    snapshot = tmp_path / "snapshots" / "0123456789abcdef"
    for directory in (image, other, snapshot):
        directory.mkdir(parents=True)
        (directory / "manifest.json").write_text("{}")
    assert sorted(forget_image("6.12", tmp_path)) == sorted([image, snapshot])
    assert not image.exists() and not snapshot.exists() and other.exists()
