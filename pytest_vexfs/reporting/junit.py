"""JUnit XML: merge the files of CI matrix jobs, and put kernel console excerpts into them.

pytest's own ``--junitxml`` writes the test cases and their ``<property>`` elements (from
``report.user_properties``). It does not write custom report sections, so after it has written
the file the plugin adds each fault's console excerpt to the test case's ``<system-out>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from junitparser import JUnitXml, Properties, Property, TestCase, TestSuite

from pytest_vexfs.errors import VexfsError

# Characters XML 1.0 cannot carry (pytest's junitxml escapes the same way).
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class JUnitError(VexfsError):
    """A JUnit XML file could not be read or written; carries the path."""

    def __init__(self, path: Path, cause: BaseException | str) -> None:
        super().__init__(f"JUnit XML {path}: {cause}")
        self.path, self.cause = path, cause


def junit_names(nodeid: str, prefix: str | None = None) -> tuple[str, str]:
    """The ``(classname, name)`` pytest's junitxml gives the test ``nodeid``."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    classname = ".".join(names[:-1])
    if prefix:
        classname = f"{prefix}.{classname}"
    return classname, names[-1]


def xml_safe(text: str) -> str:
    """``text`` without characters XML 1.0 cannot carry."""
    return _ILLEGAL_XML.sub(lambda m: f"#x{ord(m.group()):02X}", text)


def _load(path: Path) -> JUnitXml:
    try:
        xml = JUnitXml.fromfile(str(path))
    except (OSError, SyntaxError) as err:  # ParseError is a SyntaxError
        raise JUnitError(path, err) from err
    if isinstance(xml, TestSuite) and not isinstance(xml, JUnitXml):
        root = JUnitXml()
        root.add_testsuite(xml)
        return root
    return xml


def case_properties(case: TestCase) -> dict[str, str]:
    """The ``<property>`` name/value pairs of a test case."""
    found: dict[str, str] = {}
    for props in case.iterchildren(Properties):
        for prop in props.iterchildren(Property):
            found[str(prop.name)] = str(prop.value)
    return found


def add_console_excerpts(path: Path, excerpts: Mapping[str, str], prefix: str | None = None,
                         title: str = "vexfs console") -> int:
    """Append each test's console excerpt (or other text, under `title`) by nodeid to its ``<system-out>``;
    return how many."""
    if not excerpts:
        return 0
    wanted = {junit_names(nodeid, prefix): text for nodeid, text in excerpts.items()}
    xml = _load(path)
    added = 0
    for suite in xml:
        for case in suite:
            text = wanted.get((str(case.classname), str(case.name)))
            if not text:
                continue
            block = xml_safe(f"{f' {title} ':-^80}\n{text}\n")
            case.system_out = (case.system_out or "") + block
            added += 1
    try:
        xml.write(str(path))
    except OSError as err:
        raise JUnitError(path, err) from err
    return added


def merge(inputs: Iterable[Path], output: Path) -> JUnitXml:
    """Merge JUnit XML files (one per CI job) into ``output``, one ``<testsuite>`` per input suite.

    Suites with the same name (every pytest run calls its suite ``pytest``) are kept apart by
    appending the input file's stem, so test cases of two jobs never mix.
    """
    merged = JUnitXml()
    seen: set[str] = set()
    count = 0
    for path in inputs:
        count += 1
        for suite in _load(path):
            name = str(suite.name or "tests")
            if name in seen:
                name = f"{name}[{path.stem}]"
                suite.name = name
            seen.add(name)
            suite.update_statistics()
            merged.add_testsuite(suite)
    if not count:
        raise JUnitError(output, "no input files to merge")
    merged.update_statistics()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        merged.write(str(output))
    except OSError as err:
        raise JUnitError(output, err) from err
    return merged
