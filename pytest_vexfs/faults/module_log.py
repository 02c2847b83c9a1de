"""The module's own words about a test: the kernel log lines printed while the test ran, deduplicated.

A module that refuses something usually says why in the kernel log ("mymod: extent tree full, write
refused"); the errno that reaches the test does not. `module_words` takes the guest's kernel log, keeps
the lines printed between the test's begin and end markers (or naming the module anywhere after the
begin marker), drops the harness's own lines and the profile's ignored messages, and folds repeats into
one line with a count: "mymod: extent tree full, write refused (×9)". Under a failure only the lines that
explain it are shown (`explains`): errors and warnings (by log level, or by their words), else the last lines
before the failure; the mount and load chatter of the test is left out with a count. Nothing here imports
pytest.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pytest_vexfs.faults.kernel_log import BEGIN_PREFIX, END_PREFIX, PID_PREFIX, UNLOAD_PREFIX, begin_marker, end_marker
from pytest_vexfs.command import CommandResult

#: the report section (terminal, JUnit system-out, HTML) holding a failed test's module log lines
MODULE_LOG_SECTION = "vexfs module log"
#: at most this many distinct lines are shown; the rest are counted
MAX_LINES = 40
_STAMP = re.compile(r"^(?:<\d+>)?\[\s*\d+\.\d+\](?:\[\s*[CT]\d+\])?\s?")
_LEVEL = re.compile(r"^<(\d+)>")
#: printk levels 0-4 (emerg .. warning): a line at one of these explains a failure
WARNING_LEVEL = 4
#: words of a line that explains a failure whatever its log level (a module may log errors with pr_info)
_EXPLAINING = re.compile(
    r"error|fail|refus|cannot|can't|unable|invalid|corrupt|mismatch|too (?:large|big|long|many)|\bfull\b"
    r"|no space|exceed|limit|denied|not (?:supported|permitted|allowed)|unsupported|\bbad\b|\blost\b|leak"
    r"|\bwarn|overflow|\bE[A-Z]{2,}\b|\(-\d+\)|=\s*-\d+\b", re.IGNORECASE)
#: when no line explains, this many last lines (those printed at the failing operation) are shown
LAST_LINES = 5
_NUMBERS = re.compile(r"\d+")
#: kernel lines the harness itself causes around every test
_HARNESS = (BEGIN_PREFIX, END_PREFIX, PID_PREFIX, UNLOAD_PREFIX, "sysrq:", "drop_caches:")


@dataclasses.dataclass(frozen=True)
class ModuleWords:
    """Distinct kernel log lines of one test, first-seen order, with how often each (or a line differing
    only in its numbers) was printed."""

    lines: list[tuple[str, int]]
    dropped: int = 0
    left_out: int = 0
    """Lines of the test's window left out because they explain nothing (mount and load chatter)."""
    explained: bool = False
    """Whether the lines are errors or warnings (else they are the last lines before the failure)."""

    def __bool__(self) -> bool:
        return bool(self.lines)

    @property
    def first(self) -> str:
        """The first line that explains the failure (an error or a warning), "" if none does."""
        return self.lines[0][0] if self.lines and self.explained else ""

    def render(self) -> str:
        text = [line if count == 1 else f"{line} (×{count})" for line, count in self.lines]
        if self.dropped:
            text.append(f"... and {self.dropped} more distinct line(s)")
        if self.left_out:
            text.append(f"({self.left_out} other kernel line(s) of this test left out: chatter, or not the module's)")
        return "\n".join(text)


def _strip(line: str) -> str:
    return _STAMP.sub("", line.rstrip("\r")).strip()


def window_of(log: str, nodeid: str) -> list[str]:
    """The lines after the test's last begin marker, up to its end marker (or the next test's begin, or
    the end of the log);
    empty if the begin marker is not in the log (a wrapped ring buffer, another test)."""
    lines = log.splitlines()
    begin, end = begin_marker(nodeid), end_marker(nodeid)
    start = max((i for i, line in enumerate(lines) if begin in line), default=-1)
    if start < 0:
        return []
    window = []
    for line in lines[start + 1:]:
        if end in line or BEGIN_PREFIX in line:  # its end, or the next test's begin
            break
        window.append(line)
    return window


def fold(lines: Iterable[str], max_lines: int = MAX_LINES) -> ModuleWords:
    """Fold repeats (lines equal but for their numbers) into one line with a count."""
    counts: dict[str, list[Any]] = {}
    for line in lines:
        key = _NUMBERS.sub("#", line)
        if key in counts:
            counts[key][1] += 1
        else:
            counts[key] = [line, 1]
    rows = [(line, count) for line, count in counts.values()]
    return ModuleWords(rows[:max_lines], max(0, len(rows) - max_lines))


def explains(line: str, level: int | None = None) -> bool:
    """Whether a kernel line explains a failure: printed at warning level or above, or worded as an error."""
    return (level is not None and level <= WARNING_LEVEL) or bool(_EXPLAINING.search(line))


def module_words(log: str, nodeid: str, names: Sequence[str] = (),
                 ignore: Sequence[str | re.Pattern[str]] = (), *, explain: bool = False) -> ModuleWords:
    """The kernel's lines of test `nodeid` from `log` (dmesg, `dmesg -r` or console text), folded.

    Kept: every line between the test's markers except the harness's own and those matching `ignore`
    (substrings or regular expressions, as the profile's ignore_kernel_messages). When the window holds
    lines naming the module (`names`: its name, its fs type; case-insensitive), those come first.
    With `explain`, only the lines that explain a failure (`explains`: errors and warnings) are kept, or
    if there are none the last LAST_LINES lines, those printed at the failing operation; the others are
    counted in `left_out`.
    """
    patterns = [p if isinstance(p, re.Pattern) else re.compile(re.escape(p)) for p in ignore]
    kept: list[tuple[str, int | None]] = []
    for raw in window_of(log, nodeid):
        level = _LEVEL.match(raw.lstrip())
        line = _strip(raw.lstrip())
        if not line or line.startswith(_HARNESS) or any(p.search(line) for p in patterns):
            continue
        kept.append((line, int(level.group(1)) % 8 if level else None))
    left_out, explained = 0, False
    wanted = [n.lower() for n in names if n]
    if explain and kept:
        errors = [(line, lvl) for line, lvl in kept if explains(line, lvl)]
        own = [(line, lvl) for line, lvl in errors if any(n in line.lower() for n in wanted)]
        chosen = own or errors or kept[-LAST_LINES:]  # the module's own errors, when it said any
        left_out, explained = len(kept) - len(chosen), bool(errors)
        kept = chosen
    naming = [any(n in line.lower() for n in wanted) for line, _ in kept]
    words = fold([line for (line, _), named in zip(kept, naming) if named]
                 + [line for (line, _), named in zip(kept, naming) if not named])
    return dataclasses.replace(words, left_out=left_out, explained=explained)


def gather(vm: _Guest, nodeid: str, names: Sequence[str] = (),
           ignore: Sequence[str | re.Pattern[str]] = ()) -> ModuleWords:
    """The lines that explain a failure of test `nodeid` (`module_words` with `explain`) from a guest: its
    dmesg with log levels if the VM still answers (it holds every level), else the serial console's record.
    Never raises: a report is written whatever the guest does."""
    log = ""
    try:
        if vm.is_alive():
            result = vm.run("dmesg -r", timeout=30)
            log = result.stdout if result.ok else ""
    except Exception:  # noqa: BLE001 - a dead or broken guest: fall back to the console
        log = ""
    if not log or begin_marker(nodeid) not in log:
        try:
            log = vm.console_tail(lines=5000)
        except Exception:  # noqa: BLE001
            return ModuleWords([])
    return module_words(log, nodeid, names, ignore, explain=True)


class _Guest(Protocol):
    def is_alive(self) -> bool: ...

    def run(self, command: str, *, timeout: float | None = ...) -> CommandResult: ...

    def console_tail(self, lines: int = ...) -> str: ...
