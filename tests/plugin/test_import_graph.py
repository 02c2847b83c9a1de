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
    up = (f"arrow up: settings (layer {graph.layer_of('settings')}) -> reporting (layer {graph.layer_of('reporting')}) "
          "in pytest_vexfs/settings.py")
    assert up in problems, problems
    assert any(p.startswith("mystery: in no layer") for p in problems), problems


def test_readme_layout_gives_the_layers_of_the_script() -> None:
    line = _script().render({}).splitlines()[0]
    assert f"`{line}`" in (ROOT / "README.md").read_text(), f"README's Layout section should say: `{line}`"


#: file names that repeat because the files have the same role (README, Layout)
SAME_ROLE = {"cli.py": "a console command's entry point"}
PACKAGE = ROOT / "pytest_vexfs"


def _layout_table() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    return section[:section.index("Imports run one way")]


def test_a_file_name_repeats_only_for_the_same_role() -> None:
    seen: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    repeated = {name: paths for name, paths in seen.items() if len(paths) > 1 and name not in SAME_ROLE}
    assert not repeated, f"file names used twice (rename one, or add the shared role to the rule): {repeated}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    wiring = [p.name for p in (PACKAGE / "plugin").glob("*.py") if p.stem in folders]
    assert not wiring, f"plugin modules named like a folder (name them <folder>_hooks.py): {wiring}"


def test_readme_layout_names_every_folder_and_top_level_module() -> None:
    table = _layout_table()
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    missing = [f"pytest_vexfs/{f}/" for f in folders if f"`pytest_vexfs/{f}/`" not in table]
    missing += [m for m in modules if f"`{m}`" not in table and f"`pytest_vexfs/{m}`" not in table]
    assert not missing, f"README's Layout table does not name: {missing}"
    named = {word.strip("`") for word in table.split() if word.startswith("`pytest_vexfs/")}
    gone = [n for n in named if not (ROOT / n.rstrip("`,")).exists()]
    assert not gone, f"README's Layout table names what is not there: {gone}"
