"""The package's folder-level import graph (scripts/import_graph.py): no cycles between folders, no arrow
from a lower layer to a higher one, and README's Layout section gives the same layer order."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_cycles_and_no_arrows_up() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "no cycles, no arrows up"
    assert "settings -> " in proc.stdout and "plugin -> " in proc.stdout  # the graph is printed


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pytest_vexfs"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_and_an_arrow_up_are_found(tmp_path: Path) -> None:
    graph = _script()
    root = _package(tmp_path, {
        "errors.py": "",
        "guest/__init__.py": "",
        "guest/vm.py": "from pytest_vexfs.backends import qemu\n",
        "backends/__init__.py": "",
        "backends/qemu.py": "def f():\n    from pytest_vexfs.guest.vm import x  # lazy: an arrow all the same\n",
        "settings.py": "from pytest_vexfs import errors\nfrom .reporting import alerts\n",
        "reporting/__init__.py": "", "reporting/alerts.py": "",
        "mystery/__init__.py": "",
    })
    edges = graph.edges(root)
    assert set(edges) == {("guest", "backends"), ("backends", "guest"), ("settings", "errors"),
                          ("settings", "reporting")}
    problems = graph.problems(edges, root)
    assert any(p.startswith("cycle between backends, guest") for p in problems), problems
    assert "arrow up: settings (layer 1) -> reporting (layer 8) in pytest_vexfs/settings.py" in problems
    assert any(p.startswith("mystery: in no layer") for p in problems), problems


def test_readme_layout_gives_the_layers_of_the_script() -> None:
    line = _script().render({}).splitlines()[0]
    assert f"`{line}`" in (ROOT / "README.md").read_text(), f"README's Layout section should say: `{line}`"
