"""Each fact once: the tables that hold a fact are the only places it is written (as test_fault_kinds.py
guards the table of fault kinds). Source scans, no VM."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

from pytest_vexfs import settings as cfg
from pytest_vexfs.kernels import DEBUG_FLAVOURS, KERNELS, kernel_names
from pytest_vexfs.settings import BACKEND_NAMES
from pytest_vexfs.reporting.results import ENVIRONMENT_KEYS
from pytest_vexfs.severity import SEVERITIES

PACKAGE = Path(cfg.__file__).parent


@functools.cache
def _trees() -> tuple[tuple[str, ast.AST], ...]:
    """Every module of the package, parsed once for all these tests."""
    return tuple((str(path.relative_to(PACKAGE.parent)), ast.parse(path.read_text(), str(path)))
                 for path in sorted(PACKAGE.rglob("*.py")))


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
        and node.value.id == "os"


def _variables_read(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, variable) of every read of one named variable: os.environ[...], os.environ.get(...),
    os.getenv(...). Handing the whole environment on (to a child process, to settings.resolve) is not one."""
    for node in ast.walk(tree):
        key: ast.AST | None = None
        if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            environ_get = node.func.attr == "get" and _is_os_environ(node.func.value)
            getenv = node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
            if environ_get or getenv:
                key = node.args[0]
        if key is not None:
            yield node.lineno, key.value if isinstance(key, ast.Constant) else ast.unparse(key)


def test_every_variable_the_package_reads_is_a_row_of_the_settings_table() -> None:
    """Its own variables are read through the settings table (resolve, environment_value, default_cache_dir);
    outside settings.py only other programs' variables, each listed in settings.FOREIGN_VARIABLES."""
    outside = [(path, line, name) for path, tree in _trees() if path != "pytest_vexfs/settings.py"
               for line, name in _variables_read(tree) if name not in cfg.FOREIGN_VARIABLES]
    assert not outside, f"variables read outside the settings table: {outside}"
    inside = {name for path, tree in _trees() if path == "pytest_vexfs/settings.py"
              for _, name in _variables_read(tree)}
    assert inside <= set(cfg.FOREIGN_VARIABLES), inside  # its own rows are read by env_var, never by name
    assert all(not name.startswith("VEXFS_") for name in cfg.FOREIGN_VARIABLES)


def test_the_scanner_sees_each_way_of_reading_a_variable() -> None:
    tree = ast.parse("import os\nos.environ['A']\nos.environ.get('B', 1)\nos.getenv('C')\ndict(os.environ)\n")
    assert [name for _, name in _variables_read(tree)] == ["A", "B", "C"]


def test_variable_only_rows_offer_no_option_and_are_read_by_environment_value() -> None:
    only = [s for s in cfg.SETTINGS if s.variable_only]
    assert {s.env_var for s in only} == {"VEXFS_QEMU", "VEXFS_DEBIAN_MIRROR"}
    assert all(not s.cli and not s.ini and not s.env_file_key for s in only)
    assert cfg.environment_value("qemu", {"VEXFS_QEMU": "/opt/qemu"}) == "/opt/qemu"
    assert cfg.environment_value("qemu", {}) == "qemu-system-x86_64"
    assert cfg.default_cache_dir({"VEXFS_CACHE_DIR": "/c"}) == Path("/c")
    assert cfg.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/pytest-vexfs")


def test_kernel_names_are_written_only_in_the_kernel_table() -> None:
    names = set(kernel_names())
    assert names == set(KERNELS) | set(DEBUG_FLAVOURS) and len(names) == len(KERNELS) + len(DEBUG_FLAVOURS)
    found = [(path, node.lineno, node.value) for path, tree in _trees() if path != "pytest_vexfs/kernels.py"
             for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]
    assert not found, f"kernel names written outside pytest_vexfs/kernels.py: {found}"
    row = cfg.SETTINGS_BY_NAME["kernel"]
    assert row.allowed == ", ".join(kernel_names()) and all(name in row.help for name in names)


def _displays(tree: ast.AST) -> Iterator[tuple[int, set[object]]]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            yield node.lineno, {e.value for e in node.elts if isinstance(e, ast.Constant)}
        elif isinstance(node, ast.Dict) and all(isinstance(v, ast.Constant) for v in node.values):
            # a table (name -> title); a dict of computed values (a machine's describe()) is not a list
            yield node.lineno, {k.value for k in node.keys if isinstance(k, ast.Constant)}


def test_report_environment_keys_are_one_list() -> None:
    """(A metric may be labelled by two of them: three or more in one display is a copy of the list.)"""
    found = [(path, line) for path, tree in _trees() if path != "pytest_vexfs/reporting/results.py"
             for line, values in _displays(tree) if len(values & set(ENVIRONMENT_KEYS)) >= 3]
    assert not found, f"a second list of report environment keys: {found}"


def test_one_severity_scale_for_fault_kinds_and_alerts() -> None:
    from pytest_vexfs.faults import kinds

    assert {str(k.severity) for k in kinds.TABLE} < set(SEVERITIES)
    assert cfg.AlertRule(name="r", condition="regression", severity="error").severity == "error"
    found = [(path, line) for path, tree in _trees() if path != "pytest_vexfs/severity.py"
             for line, values in _displays(tree) if len(values & set(SEVERITIES)) >= 2]
    assert not found, f"a second list of severities: {found}"


def test_backend_names_are_the_registry() -> None:
    from pytest_vexfs.backends import BACKENDS

    assert cfg.SETTINGS_BY_NAME["backend"].choices == cfg.BACKEND_NAMES == tuple(BACKENDS)
    found = [(path, line) for path, tree in _trees()
             if path not in ("pytest_vexfs/settings.py", "pytest_vexfs/backends/__init__.py")
             for line, values in _displays(tree) if len(values & set(BACKEND_NAMES)) >= 3]
    assert not found, f"a third list of backend names: {found}"


def test_kmemleak_is_driven_through_one_module() -> None:
    found = [path for path in sorted(PACKAGE.rglob("*.py")) if path.name != "kmemleak.py"
             and any(text in path.read_text() for text in ("/sys/kernel/debug/kmemleak", "kmemleak/parameters"))]
    assert not found, f"kmemleak's files named outside faults/kmemleak.py: {found}"
