"""Findings, not failures: each failed test's cause (a stable signature and a one-line reason), and the
failures of a run grouped by cause into one findings table.

A cause is, in this order: the kernel fault the test hit (its title); a `ModuleFinding` the test raised
(its own signature and reason: a model-checker discrepancy, an undeclared limit, an unsupported
operation); an errno the module answered (errno + operation + the module's first explaining log line; an
errno that is a limit the profile does not declare is that limit's refusal, whatever test met it); else
the error itself (its type and first line). The signature is stable across tests and runs (numbers and
addresses are folded), so equal causes group; the reason is the line every report shows first.
Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import errno as errno_module
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_vexfs.errors import CommandFailed, ModuleFinding
from pytest_vexfs.faults.module_log import explains
from pytest_vexfs.module.fs import FilesystemError, MountError
from pytest_vexfs.module.limits import LIMIT_OF_ERRNO, refusal_cause
from pytest_vexfs.module.profile import ModuleProfile
from pytest_vexfs.reporting.results import FAILING, TestResult, normalise_fault_title

#: the JUnit/user properties a failed test carries: its cause's signature and its reason
FINDING_PROPERTY, REASON_PROPERTY = "finding", "reason"
#: longest reason shown (a reason is one line)
MAX_REASON = 300

_ERRNO_NUMBER = re.compile(r"\[Errno (\d+)\]")
_STRERROR = {os.strerror(n): name for n, name in sorted(errno_module.errorcode.items(), reverse=True)
             if not os.strerror(n).startswith("Unknown error")}
_STRERROR_TEXT = re.compile("|".join(re.escape(text) for text in sorted(_STRERROR, key=len, reverse=True)))
#: coreutils' and the shell's wording of the operation that failed
_TOOL_OPERATIONS = (
    ("failed to create symbolic link", "symlink"), ("failed to create hard link", "link"),
    ("cannot create directory", "mkdir"), ("cannot create regular file", "create"), ("cannot touch", "create"),
    ("cannot create", "create"), ("error writing", "write"), ("error reading", "read"),
    ("failed to truncate", "truncate"), ("cannot remove", "unlink"), ("cannot move", "rename"),
    ("cannot open", "open"), ("failed to open", "open"), ("cannot stat", "stat"), ("cannot access", "stat"),
    ("cannot read directory", "readdir"), ("failed to change mode", "chmod"), ("changing permissions", "chmod"),
    ("error closing", "close"), ("fsync failed", "fsync"), ("cannot fsync", "fsync"),
)
#: operations one refusal of the module usually covers (a module without links refuses both kinds)
_OPERATION_CLASS = {"symlink": "link/symlink", "link": "link/symlink", "linkat": "link/symlink",
                    "symlinkat": "link/symlink"}
_CALL = re.compile(r"(?:os\.|shutil\.|fcntl\.|\w+\.)?(\w+)\s*\(")
_PYTHON_ERROR = re.compile(r"^\w*(?:Error|Exception)\b.*\[Errno \d+\]")
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")
_QUOTED_PATH = re.compile(r"'/[^']*'|\"/[^\"]*\"")
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class Cause:
    """Why a test failed: `signature` groups equal causes across tests and runs; `reason` is the one line
    shown first wherever the failure is reported; `kind` is fault, finding, errno or error."""

    signature: str
    reason: str
    kind: str


def fold_numbers(text: str) -> str:
    """`text` with numbers, hex values and quoted absolute paths folded, spaces collapsed: the same cause
    met with other sizes, offsets or files compares equal."""
    return _SPACE.sub(" ", _NUMBERS.sub("N", _QUOTED_PATH.sub("'…'", text))).strip()


def one_line(text: str) -> str:
    """The first non-empty line of `text`, at most MAX_REASON characters."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= MAX_REASON else line[:MAX_REASON - 1] + "…"


def errno_in(text: str) -> tuple[str, str]:
    """The errno name a failed command's output shows and the operation it names ("" for what cannot be
    told): Python's ``OSError: [Errno 27] File too large`` after the failing call's line, coreutils'
    ``ln: failed to create symbolic link 'b': Operation not permitted``, the shell's ``cannot create``."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        number = _ERRNO_NUMBER.search(line)
        name = errno_module.errorcode.get(int(number.group(1)), "") if number else ""
        if not name:
            found = _STRERROR_TEXT.search(line)
            name = _STRERROR[found.group()] if found else ""
        if not name:
            continue
        if _PYTHON_ERROR.match(line.strip()) and index > 0:  # the call is on the traceback's line above
            call = _CALL.search(lines[index - 1])
            return name, call.group(1) if call else ""
        low = line.lower()
        operation = next((op for words, op in _TOOL_OPERATIONS if words in low), "")
        if not operation:  # "truncate: ...", "mkdir: ...": the tool's name says what failed
            tool = re.match(r"([\w.-]+): ", line.strip())
            operation = tool.group(1) if tool and tool.group(1) not in ("sh", "bash", "dash") else ""
        return name, operation
    return "", ""


def errno_of(exc: BaseException | None, text: str = "") -> tuple[str, str]:
    """The errno name and operation of a failure: from the exception (an OSError, a mount refusal, a failed
    guest command's output), else from `text` (the report's text)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno_module.errorcode:
        return errno_module.errorcode[exc.errno], _python_operation(exc)
    if isinstance(exc, MountError) and exc.errno_name:
        return exc.errno_name, "mount"
    if isinstance(exc, CommandFailed):
        return errno_in(exc.stderr + "\n" + exc.stdout)
    if isinstance(exc, FilesystemError):
        return errno_in(exc.output)
    return errno_in(text) if exc is None else ("", "")


def _python_operation(exc: OSError) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name if tb is not None else ""


def answers_differ(left: Any, right: Any, *, most: int = 4) -> list[str] | None:
    """What pytest says of a failed `answers == {...}` between two dicts (the domain tests' way of comparing
    what the module answered with what it should): the first line, which becomes the failure's reason, names
    the keys that differ with both values ("2 of 11 answers differ: hole_zero False != True; ..."), then one
    line per difference. None for anything else (pytest's own explanation)."""
    if not (isinstance(left, dict) and isinstance(right, dict)) or not all(isinstance(k, str) for k in [*left, *right]):
        return None
    keys = list(dict.fromkeys([*right, *left]))
    missing = object()
    differ = [(k, left.get(k, missing), right.get(k, missing)) for k in keys
              if left.get(k, missing) != right.get(k, missing)]
    if not differ:
        return None

    def show(value: Any) -> str:
        text = repr(value)
        return "(none)" if value is missing else text if len(text) <= 60 else text[:57] + "..."

    said = [f"{k} {show(a)} != {show(b)}" for k, a, b in differ]
    first = f"{len(differ)} of {len(keys)} {ANSWERS_DIFFER}" + "; ".join(said[:most]) \
        + (f"; and {len(said) - most} more" if len(said) > most else "")
    return [first, *said]


#: the words of answers_differ's first line before the differing keys (a cause's signature keeps the keys)
ANSWERS_DIFFER = "answers differ: "
_ANSWERS = re.compile(rf"\d+ of \d+ {ANSWERS_DIFFER}(.*)")


def _answers_signature(first: str) -> str:
    """"answers differ: hole_zero, after_hole" for answers_differ's line: the keys, not the values (what
    the module answered wrong, not the garbage it answered it with), so runs find the same cause."""
    match = _ANSWERS.search(first)
    if match is None:
        return ""
    keys = [part.split(" ", 1)[0] for part in match.group(1).split("; ") if not part.startswith("and ")]
    return f"{ANSWERS_DIFFER}{', '.join(keys)}"


def cause_of(exc: BaseException | None, *, text: str = "", fault_title: str = "", module_line: str = "",
             profile: ModuleProfile | None = None) -> Cause:
    """The cause of a failure: `exc` the exception that failed the test (None when only the report's
    `text` is known), `fault_title` the kernel fault of the test, `module_line` the module's first log line
    explaining it, `profile` the module's (to tell an undeclared limit)."""
    if fault_title:
        return Cause(f"fault: {normalise_fault_title(fault_title)}", one_line(fault_title), "fault")
    if isinstance(exc, ModuleFinding) and exc.signature:
        return Cause(exc.signature, one_line(exc.reason or str(exc)), "finding")
    name, operation = errno_of(exc, text)
    if name and profile is not None and name in LIMIT_OF_ERRNO:  # a limit, whichever test met it
        signature, reason = refusal_cause(profile, name)
        return Cause(signature, reason, "finding")
    line = one_line(module_line) if module_line and explains(module_line) else ""
    operation = _OPERATION_CLASS.get(operation, operation)
    if name:
        said = f"{operation} failed with {name}" if operation else f"{name}"
        reason = f"{said} ({os.strerror(getattr(errno_module, name))})"
        signature = f"errno {name} on {operation or '?'}"
        if line:
            reason += f"; the module said: {line}"
            signature += f": {fold_numbers(line)}"
        return Cause(signature, one_line(reason), "errno")
    if exc is not None:
        first = one_line(str(exc))
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    else:
        reason = one_line(text) or "failed"
    return Cause(f"error: {_answers_signature(reason) or fold_numbers(reason)}", one_line(reason), "error")


#: the kind of a cause, told by its signature's prefix (see cause_of)
_KIND_OF_PREFIX = (("fault: ", "fault"), ("errno ", "errno"), ("error: ", "error"))


@dataclasses.dataclass
class CauseGroup:
    """One row of the findings table: a cause and the tests it failed."""

    signature: str
    reason: str
    kind: str
    tests: list[str] = dataclasses.field(default_factory=list)

    @property
    def count(self) -> int:
        """How many tests failed with this cause."""
        return len(self.tests)

    def to_dict(self) -> dict[str, Any]:
        """The row as the run JSON carries it."""
        return {"signature": self.signature, "reason": self.reason, "kind": self.kind, "count": self.count,
                "tests": list(self.tests)}


def cause_of_result(result: TestResult) -> Cause:
    """The cause a failed result carries (its `finding` and `reason` properties), else the one its kernel
    fault or its message gives."""
    props = result.properties
    if props.get(FINDING_PROPERTY):
        reason = props.get(REASON_PROPERTY) or one_line(result.message)
        signature = props[FINDING_PROPERTY]
        kind = next((k for prefix, k in _KIND_OF_PREFIX if signature.startswith(prefix)), "finding")
        return Cause(signature, reason, kind)
    return cause_of(None, text=result.message, fault_title=props.get("fault_title", ""))


def group_by_cause(results: Iterable[TestResult]) -> list[CauseGroup]:
    """The failed (and errored) tests grouped by cause, the most frequent cause first."""
    groups: dict[str, CauseGroup] = {}
    for result in results:
        if result.outcome not in FAILING:
            continue
        cause = cause_of_result(result)
        group = groups.setdefault(cause.signature, CauseGroup(cause.signature, cause.reason, cause.kind))
        group.tests.append(result.nodeid)
    return sorted(groups.values(), key=lambda g: (-g.count, g.reason))


def table_lines(groups: Sequence[CauseGroup], examples: int = 3) -> list[str]:
    """The findings table as terminal lines: count, reason, then a few of the tests."""
    lines = []
    width = len(str(max((g.count for g in groups), default=1)))
    for group in groups:
        noun = "test " if group.count == 1 else "tests"
        lines.append(f"{group.count:>{width}} {noun}  {group.reason}")
        shown = group.tests[:examples]
        more = group.count - len(shown)
        lines.extend(f"{'':>{width}}         {nodeid}" for nodeid in shown)
        if more:
            lines.append(f"{'':>{width}}         ... and {more} more")
    return lines


def headline(groups: Sequence[CauseGroup]) -> str:
    """"2 causes of 13 failures" (the table's title)."""
    failures = sum(g.count for g in groups)
    return (f"{len(groups)} cause{'s' if len(groups) != 1 else ''} of {failures} "
            f"failure{'s' if failures != 1 else ''}")
