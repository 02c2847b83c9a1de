"""Kernel-log fault detection: one engine for the serial console stream and for ``dmesg`` text.

Feed text in chunks of any size to a :class:`KernelLogMonitor`; it returns a :class:`Finding` for each
complete fault report (oops, panic, WARNING, lockups, stalls, hung tasks, sanitizer reports...).
:class:`ConsoleFollower` tails the console log file QEMU appends to.  The harness writes
:func:`begin_marker` / :func:`end_marker` lines into the guest's ``/dev/kmsg`` so that every finding
names the test during which its report started.  Nothing here depends on pytest.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vexfs.faults.kinds import KERNEL_KINDS

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "KINDS",
    "ConsoleFollower",
    "FaultDetector",
    "Finding",
    "KernelLogMonitor",
    "begin_marker",
    "end_marker",
    "find_faults",
    "marker_token",
    "summarise",
    "to_kmsg",
]

OOPS = "oops"
PANIC = "panic"
WARNING = "warning"
SOFT_LOCKUP = "soft_lockup"
HARD_LOCKUP = "hard_lockup"
RCU_STALL = "rcu_stall"
HUNG_TASK = "hung_task"
KASAN = "kasan"
UBSAN = "ubsan"
KFENCE = "kfence"
LOCKDEP = "lockdep"
GPF = "gpf"
INVALID_OPCODE = "invalid_opcode"
BUG = "bug"
KMEMLEAK = "kmemleak"
SLAB_CORRUPTION = "slab_corruption"
LIST_CORRUPTION = "list_corruption"
KINDS = KERNEL_KINDS
"""Every value :attr:`Finding.kind` can take (the kernel kinds of :mod:`pytest_vexfs.faults.kinds`)."""

BEGIN_PREFIX = "vexfs-test-begin: "
END_PREFIX = "vexfs-test-end: "
#: written right after a begin marker by a shell whose pid is the next the test's processes get: a kmemleak
#: report names the pid of the task that allocated the object, and the pid says which test that was
PID_PREFIX = "vexfs-test-pid: "
#: written when the harness unloaded a module: what only the module referenced is orphaned from then on, so
#: a leak reported after an unload that came after its allocation is the unloading test's
UNLOAD_PREFIX = "vexfs-test-unload: "
MARKER_TOKEN_MAX = 800
"""Longest test token put in a marker; /dev/kmsg records are cut near 1000 bytes."""

_MAX_REPORT_LINES = 600
_MAX_IGNORED_KEPT = 100


@dataclasses.dataclass(frozen=True)
class Finding:
    """One kernel fault report, parsed from the log.

    ``kind`` is the primary kind (one of :data:`KINDS`); ``kinds`` adds secondary ones, e.g.
    ``("oops", "panic")`` when an oops ends in a panic.  ``title`` is stable across runs (no
    addresses, pids, CPU numbers or timestamps) and names the blamed ``function``.
    """

    kind: str
    title: str
    function: str | None
    module: str | None
    excerpt: str
    header: str
    timestamp: float | None
    test: str | None
    kinds: tuple[str, ...] = ()
    frame: str = ""
    """The blamed frame as the kernel printed it (``func+0x2c/0x40 [module]``)."""
    location: str = ""
    """``file.c:123 (function)`` of the blamed frame, when its object's debug info is known
    (:mod:`pytest_vexfs.faults.symbols`); the excerpt's frames are then annotated the same way."""
    made_by: str | None = None
    """For a leak (kmemleak): the marker token of the test that allocated the object (by the allocating
    task's pid), or that orphaned it by unloading the module; None when that is the test it was reported
    in, or unknown (a kernel thread, an allocation before the first test)."""
    made_by_pid: int | None = None
    """For a leak: the pid (and so the test) of the task that allocated the object."""

    @property
    def fatal(self) -> bool:
        """Whether the kernel panicked in this report."""
        return PANIC in self.kinds

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field."""
        data = dataclasses.asdict(self)
        data["kinds"] = list(self.kinds)
        return data


# --- test markers ----------------------------------------------------------------------------------

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def marker_token(nodeid: str) -> str:
    """The text that stands for ``nodeid`` in markers and in :attr:`Finding.test`.

    Printable ASCII is kept as is; anything else becomes ``?``; ids longer than
    :data:`MARKER_TOKEN_MAX` are cut and end in ``...#`` and a hash of the full id, so they stay unique.
    """
    token = _UNPRINTABLE.sub("?", nodeid)
    if len(token) <= MARKER_TOKEN_MAX:
        return token
    digest = hashlib.sha1(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{token[:MARKER_TOKEN_MAX - 16]}...#{digest}"


def begin_marker(nodeid: str) -> str:
    """The line to write to the guest's /dev/kmsg before the test ``nodeid`` runs."""
    return BEGIN_PREFIX + marker_token(nodeid)


def end_marker(nodeid: str) -> str:
    """The line to write to the guest's /dev/kmsg after the test ``nodeid`` ran."""
    return END_PREFIX + marker_token(nodeid)


def pid_marker_command() -> str:
    """A guest shell command that writes :data:`PID_PREFIX` with its own pid (run right after the begin
    marker: every process the test starts has a higher pid, until pids wrap)."""
    return f"echo \"<5>{PID_PREFIX}${{BASHPID:-$$}}\" > /dev/kmsg"  # $$ of a bash subshell is its parent's


def unload_marker(module: str) -> str:
    """The line to write to the guest's /dev/kmsg once ``module`` was unloaded."""
    return UNLOAD_PREFIX + _UNPRINTABLE.sub("?", module)


_LEAK_OWNER = re.compile(r'comm "(?P<comm>[^"]*)", pid (?P<pid>\d+)')


class LeakOwners:
    """Which test made a leaked object: the tests' first pids in console order (a pid marker after each
    begin marker), and the module unloads (unload markers). kmemleak reports an object long after the test
    that allocated it when it scans rarely; its report names the allocating task's pid."""

    def __init__(self) -> None:
        self._starts: list[tuple[int, str, int]] = []  # (first pid, test token, unloads seen before it)
        self._unloads: list[str] = []  # the test token of every unload, in order

    def test_began(self, token: str, pid: int) -> None:
        self._starts.append((pid, token, len(self._unloads)))

    def module_unloaded(self, token: str | None) -> None:
        self._unloads.append(token or "")

    def owner(self, pid: int) -> tuple[str, bool] | None:
        """(test token, orphaned by an unload) for an object allocated by ``pid``. A pid from before the
        first test (the boot, the module's load in a restored snapshot, a kernel thread) is the first
        unloading test's, if a module was unloaded since; None otherwise, and for a pid older than a wrap.
        Pids restart after a wrap: the latest run of increasing first pids is searched first."""
        for index in range(len(self._starts) - 1, -1, -1):
            first, token, unloads_before = self._starts[index]
            if first <= pid:
                later = self._unloads[unloads_before:]
                if later and later[0]:
                    return later[0], True
                return token, False
            if index > 0 and self._starts[index - 1][0] > first:
                return None  # pids wrapped here: an older pid is ambiguous
        if self._unloads and self._unloads[0]:
            return self._unloads[0], True
        return None


def to_kmsg(line: str, level: int = 5) -> bytes:
    """One /dev/kmsg record for ``line`` at printk ``level`` (5, notice, reaches a loglevel=7 console)."""
    if not 0 <= level <= 7:
        raise ValueError(f"printk level must be 0..7, got {level}")
    return f"<{level}>{_UNPRINTABLE.sub('?', line)}\n".encode("ascii")


# --- line parsing ----------------------------------------------------------------------------------

# "[   12.345678] text", "<4>[   12.345678] text", with an optional caller id "[T123]" / "[C0]".
_TIMESTAMP = re.compile(r"(?:<\d+>)?\[\s*(\d+\.\d+)\](?:\[\s*[CT]\d+\])? ?")
_TIMESTAMP_INSIDE = re.compile(r"\[\s*\d+\.\d{6}\]")

_HEADER_STARTS = (
    "BUG", "Oops", "WARNING", "Kernel panic", "kernel BUG at", "general protection fault", "invalid opcode",
    "watchdog: ", "NMI watchdog", "rcu: INFO", "INFO: ", "UBSAN:", "unreferenced object", "vexfs-test-",
    "kmemleak: unreferenced object",
)
_HEADER_FIRST = frozenset(s[0] for s in _HEADER_STARTS)

_MOD = r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?: \[(?P<mod>[\w-]+)[^\]]*\])?"
# (pattern, rule, characters a matching line can start with), in priority order.
_HEADERS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"BUG: kernel NULL pointer dereference"), "null_deref", "B"),
    (re.compile(r"BUG: unable to handle (?:page fault|kernel paging request|kernel NULL pointer)"), "paging", "B"),
    (re.compile(r"BUG: KASAN: (?P<what>[\w-]+) in (?P<func>[\w.$]+)" + _MOD), "kasan", "B"),
    (re.compile(r"BUG: KFENCE: (?P<what>[\w -]+?) in (?P<func>[\w.$]+)" + _MOD), "kfence", "B"),
    (re.compile(r"BUG: KFENCE: (?P<what>[\w -]+)"), "kfence", "B"),
    (re.compile(r"(?:NMI )?(?:watchdog: )?BUG: soft lockup"), "soft_lockup", "BNw"),
    (re.compile(r"(?:NMI )?watchdog: Watchdog detected hard LOCKUP"), "hard_lockup", "Nw"),
    (re.compile(r"BUG: sleeping function called from invalid context"), "might_sleep", "B"),
    (re.compile(r"BUG: scheduling while atomic"), "sched_atomic", "B"),
    (re.compile(r"BUG: (?P<what>.+)"), "bug_generic", "B"),
    # SLUB debug: "BUG kmalloc-64 (Tainted: G    B   OE     ): Object already free"
    (re.compile(r"BUG (?P<cache>[\w.:-]+) \((?:Tainted|Not tainted)[^)]*\): (?P<what>.+)"), "slub", "B"),
    (re.compile(r"kernel BUG at (?P<file>[^\s:]+):\d+"), "kernel_bug", "k"),
    (re.compile(r"(?:Oops: )?general protection fault"), "gpf", "Og"),
    (re.compile(r"(?:Oops: )?invalid opcode: "), "invalid_opcode", "Oi"),
    (re.compile(r"Oops: "), "oops_generic", "O"),
    (re.compile(r"WARNING: (?:CPU: \d+ PID: \d+ )?at \S+(?: (?P<func>[\w.$]+)\+0x[0-9a-f]+/0x[0-9a-f]+"
                r"(?: \[(?P<mod>[\w-]+)[^\]]*\])?)?"), "warning", "W"),
    (re.compile(r"WARNING: (?!CPU: )(?P<what>.+)"), "lockdep", "W"),
    (re.compile(r"Kernel panic - not syncing: ?(?P<what>.*)"), "panic", "K"),
    (re.compile(r"(?:rcu: )?INFO: rcu\w* (?:self-)?detected (?:expedited )?stall"), "rcu_stall", "rI"),
    (re.compile(r"INFO: task .+:\d+ blocked for more than \d+ seconds"), "hung_task", "I"),
    (re.compile(r"UBSAN: (?P<what>[\w-]+) in (?P<file>\S+)"), "ubsan", "U"),
    (re.compile(r"unreferenced object 0x[0-9a-f]+ \(size \d+\)"), "kmemleak", "u"),
]
_HEADERS_BY_FIRST: dict[str, list[tuple[re.Pattern[str], str]]] = {
    first: [(pattern, rule) for pattern, rule, firsts in _HEADERS if first in firsts] for first in _HEADER_FIRST
}

# rule -> (kind, title prefix, end style).  End styles: "trace" (---[ end trace), "ruler" (=====),
# "quiet" (after the last stack trace, at the first line that is not part of the report), "indent"
# (kmemleak: at the first unindented line), "panic".
_RULES: dict[str, tuple[str, str, str]] = {
    "null_deref": (OOPS, "BUG: kernel NULL pointer dereference", "trace"),
    "paging": (OOPS, "", "trace"),
    "kasan": (KASAN, "KASAN:", "ruler"),
    "kfence": (KFENCE, "KFENCE:", "ruler"),
    "soft_lockup": (SOFT_LOCKUP, "soft lockup", "quiet"),
    "hard_lockup": (HARD_LOCKUP, "hard lockup", "quiet"),
    "might_sleep": (LOCKDEP, "BUG: sleeping function called from invalid context", "quiet"),
    "sched_atomic": (BUG, "BUG: scheduling while atomic", "quiet"),
    "bug_generic": (BUG, "BUG:", "quiet"),
    "kernel_bug": (BUG, "kernel BUG", "trace"),
    "gpf": (GPF, "general protection fault", "trace"),
    "invalid_opcode": (INVALID_OPCODE, "invalid opcode", "trace"),
    "oops_generic": (OOPS, "Oops", "trace"),
    "warning": (WARNING, "WARNING", "trace"),
    "lockdep": (LOCKDEP, "", "quiet"),
    "panic": (PANIC, "kernel panic:", "panic"),
    "rcu_stall": (RCU_STALL, "INFO: rcu detected stall", "quiet"),
    "hung_task": (HUNG_TASK, "task hung", "quiet"),
    "ubsan": (UBSAN, "UBSAN:", "ruler"),
    "kmemleak": (KMEMLEAK, "memory leak", "indent"),
    "slub": (SLAB_CORRUPTION, "slab corruption", "quiet"),
}
# SLUB debug's words (the "[X overwritten]" line before the report, or the report's own reason) -> the
# bug class in the title, and which of the object's tracks ("Freed in", "Allocated in") names the culprit
# when the call trace is the checker's own (slab validation after a test).
_SLUB_CLASSES: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (re.compile(r"Poison"), "use-after-free write", ("free", "trace", "alloc")),
    (re.compile(r"Redzone|[Pp]adding"), "slab out-of-bounds write", ("trace", "alloc", "free")),
    (re.compile(r"Object already free"), "double free", ("trace", "free", "alloc")),
    (re.compile(r"Free(?:pointer|chain|list Pointer)"), "slab freelist corruption", ("free", "trace", "alloc")),
    (re.compile(r"Invalid object pointer|outside of slab|No slab cache|not a valid slab"), "invalid free",
     ("trace", "alloc", "free")),
)
_SLUB_OVERWRITTEN = re.compile(r"\[(?P<what>[\w ]+) overwritten\]")
_SLUB_TRACK = re.compile(r"(?P<track>Allocated|Freed) in (?P<frame>[A-Za-z_].*)")
#: DEBUG_LIST's words; a BUG (CONFIG_BUG_ON_DATA_CORRUPTION) or a WARN follows them
_LIST_CORRUPTION = re.compile(r"list_(?:add|del) corruption|list_add double add")
# Kinds whose report may contain an "Oops:" line that belongs to it (x86 prints "BUG: ..." then "Oops:").
_OOPS_FOLLOWS = frozenset({"null_deref", "paging", "kernel_bug", "bug_generic", "kfence"})
# Kinds blamed on the function their header (or lockdep's "at:" line) names before any stack frame.
_HEADER_BLAMED = frozenset({WARNING, KASAN, KFENCE, LOCKDEP})
# Kinds whose <IRQ> stack section belongs to the detector (timer interrupt), not to the culprit.
_SKIP_IRQ_FRAMES = frozenset({SOFT_LOCKUP, HARD_LOCKUP, RCU_STALL})

_FRAME = re.compile(
    r"\s*(?:\[<[0-9a-fx]+>\]\s*)?(?P<unreliable>\? )?(?P<func>[A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
    r"(?: \[(?P<mod>[\w-]+)[^\]]*\])?"
)
_RIP = re.compile(r"(?:RIP: [0-9a-f]{4}:|pc : |EIP: |NIP \[[0-9a-f]+\] )(?P<frame>[A-Za-z_].*)")
_LOCK_AT = re.compile(r".*, at: (?P<frame>[A-Za-z_].*)")
#: after "general protection fault, probably for non-canonical address 0xdffffc0000000000" (inline KASAN)
_KASAN_NULL_DEREF = "KASAN: null-ptr-deref in range"
_KASAN_ACCESS = re.compile(r"(Read|Write) (?:of size|at addr)")
_NAME_SUFFIX = re.compile(r"(?:\.(?:cold|isra|constprop|part|llvm|lto_priv|localalias)(?:\.\d+)?)+$")

_GENERIC_FRAMES = re.compile(
    r"(?:__pfx_.*|dump_stack\w*|show_stack\w*|show_regs|__show_regs|__warn\w*|warn_slowpath\w*"
    r"|report_bug|handle_bug|exc_\w+|asm_exc_\w+|asm_sysvec_\w+|sysvec_\w+|__sysvec_\w+|common_interrupt"
    r"|panic|nmi_panic|__schedule\w*|schedule\w*|preempt_schedule\w*|io_schedule\w*|do_task_dead"
    r"|__?mutex_lock\w*|mutex_lock\w*|__?down\w*|down_\w+|rwsem\w*|__?rwsem\w*|rt_mutex\w*|__rt_mutex\w*"
    r"|_raw_\w+|queued_\w+|native_queued_\w+|__?lock_acquire\w*|lock_acquire\w*|lock_release"
    r"|lock_acquired|lock_contended|do_syscall_64|do_syscall_x64|entry_SYSCALL\w*|x64_sys_call"
    r"|syscall_exit\w*|ksys_\w+|vfs_\w+|__vfs_\w+|__x64_sys_\w+|__se_sys_\w+|__do_sys_\w+|__ia32_sys_\w+"
    r"|kthread|ret_from_fork\w*|worker_thread|process_one_work|process_scheduled_works"
    r"|watchdog_timer_fn|__hrtimer_run_queues|hrtimer_interrupt|__run_hrtimer|tick_\w+"
    r"|update_process_times|irq_exit\w*|__irq_exit\w*|handle_softirqs|__do_softirq|do_softirq\w*"
    r"|rcu_\w+|__rcu_\w+|print_\w+|__print_\w+|check_(?:noncircular|prev_add|irq_usage|deadlock|flags"
    r"|wait_context|memory_region\w*|panic_on_warn)|validate_chain|__might_\w+|might_\w+"
    r"|__schedule_bug|msleep\w*|usleep\w*|schedule_timeout\w*|wait_for_completion\w*|__wait_for_common"
    r"|do_wait_for_common|folio_wait\w*|__folio_lock\w*|wait_on_page\w*|__wait_on_bit\w*|bit_wait\w*"
    r"|out_of_line_wait_on_bit\w*|kasan_\w+|__kasan_\w+|__asan_\w+|__hwasan_\w+|kfence_\w+|__kfence_\w+"
    r"|ubsan_\w+|__ubsan_\w+|page_fault_oops|kernelmode_fixup_or_oops|__bad_area_nosemaphore"
    r"|bad_area_nosemaphore|do_kern_addr_fault|do_user_addr_fault|handle_page_fault|do_trap|do_error_trap"
    r"|die|__die\w*|oops_end|kmemleak_\w+|__kmemleak_\w+|slab_post_alloc_hook|__?kmalloc\w*"
    r"|kmalloc\w*|kmem_cache_alloc\w*|__kmem_cache_alloc\w*|kzalloc\w*|kvmalloc\w*|__kvmalloc\w*"
    r"|vmalloc\w*|__vmalloc\w*|alloc_pages\w*|__alloc_pages\w*|mem(?:cpy|set|move|cmp)\w*"
    r"|__mem(?:cpy|set|move)\w*|str(?:cpy|ncpy|len|cmp|lcpy|scpy)\w*|copy_(?:to|from)_user\w*"
    r"|_copy_(?:to|from)_user\w*|proc_reg_\w+|seq_read\w*|__list_\w+_valid\w*|list_\w+_valid\w*"
    r"|debug_show_held_locks|lockdep_\w+|__lockdep_\w+"
    # SLUB debug and DEBUG_LIST internals (the checker, not the culprit)
    r"|check_object|check_bytes_and_report|object_err|__?slab_err|__?slab_bug|print_trailer|print_track"
    r"|validate_slab\w*|validate_store|slab_attr_store|kernfs_\w+|free_debug_processing|free_to_partial_list"
    r"|__slab_free|slab_free\w*|do_slab_free|kfree\w*|kvfree\w*|kmem_cache_free\w*|alloc_debug_processing"
    r"|alloc_single_from_\w+|___slab_alloc|__slab_alloc\w*|check_slab|on_freelist|slab_pad_check"
    r"|flush_all\w*|restore_bytes|slab_fix|check_data_corruption|__list_(?:add|del)\w*|list_(?:add|del)\w*"
    # library helpers a module calls (lib/parser.c, lib/string.c, lib/vsprintf.c, lib/kstrtox.c, ...): a bug
    # found inside one is the caller's, as syzkaller skips them when it titles a report
    r"|match_(?:token|one|int|uint|u64|octal|hex|strdup|strlcpy|wildcard)|strsep|strn?chr\w*|strrchr|strn?str"
    r"|strn?case?cmp|strncmp|strnlen\w*|strim|skip_spaces|memchr\w*|memscan|_?kstrto\w+|simple_strto\w+"
    r"|_parse_integer\w*|v?sn?printf|v?scnprintf|v?sscanf|kv?asprintf\w*|sort(?:_r)?|bsearch|hex2bin"
    r"|__?bitmap_\w+|bitmap_\w+|_?find_(?:next|first|last)_\w*bit\w*)"
)

_KMEMLEAK_PREFIX = "kmemleak: "
_ADDRESS = re.compile(r"\b(?:0x)?[0-9a-f]{8,}\b|\b0x[0-9a-fA-F]+\b")
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
_SPACES = re.compile(r"\s+")
_LINE_NUMBER = re.compile(r":\d+.*")


def _clean_name(name: str) -> str:
    return _NAME_SUFFIX.sub("", name)


def _sanitise(text: str) -> str:
    """Strip what changes from run to run (addresses, numbers) out of free kernel text."""
    text = _NUMBER.sub("NUM", _ADDRESS.sub("ADDR", text))
    return _SPACES.sub(" ", text).strip()


def _is_tail_line(text: str) -> bool:
    """Lines x86 prints after ``---[ end trace`` (register reprint) or at the end of a panic."""
    return text.startswith(
        ("RIP:", "RSP:", "RAX:", "RDX:", "RBP:", "R10:", "R13:", "FS:", "CS:", "CR2:", "DR0:", "DR3:",
         "Code:", "PKRU:", "note:", "Kernel Offset:", "Rebooting in", "---[ end Kernel panic",
         "Fixing recursive fault", "Kernel panic")
    ) or not text.strip()


def _continues_quiet_report(text: str) -> bool:
    """Whether a line after a finished stack trace still belongs to a multi-trace report (RCU stall)."""
    return text.startswith(
        ("rcu:", "task:", "CPU:", "Sending NMI", "NMI backtrace", "Tainted:", "Hardware name:", "RIP:",
         "Call Trace:", "Call trace:", "<", " ", "\t", "Workqueue:", "Showing", "INFO: lockdep", "Code:",
         "RSP:", "RAX:", "RDX:", "RBP:", "R10:", "R13:", "FS:", "CS:", "CR2:", "DR0:", "DR3:", "PKRU:",
         "Modules linked in:", "irq event stamp:", "hardirqs last", "softirqs last")
    )


_Frame = tuple[str, "str | None", str]
"""(function without compiler suffixes, module or None, the frame's text as printed)"""


class _Report:
    """A fault report being collected line by line."""

    __slots__ = (
        "access", "end", "ended", "header", "header_frames", "header_text", "in_irq", "in_trace", "kind",
        "kinds", "lines", "match", "oops_seen", "rip_frames", "rule", "slub_what", "test", "timestamp",
        "trace_frames", "traces_done", "tracks",
    )

    def __init__(self, rule: str, match: re.Match[str], header: str, text: str,
                 timestamp: float | None, test: str | None, lead: Iterable[str]) -> None:
        self.rule = rule
        self.kind, _, self.end = _RULES[rule]
        self.kinds = [self.kind]
        self.header = header
        self.header_text = text
        self.match = match
        self.timestamp = timestamp
        self.test = test
        self.lines = [*lead, header]
        self.header_frames: list[_Frame] = []
        self.rip_frames: list[_Frame] = []
        self.trace_frames: list[_Frame] = []
        self.in_trace = False
        self.in_irq = False
        self.traces_done = 0
        self.oops_seen = rule in ("gpf", "invalid_opcode", "oops_generic")
        self.access = ""
        self.ended = False
        self.tracks: dict[str, _Frame] = {}
        self.slub_what = ""
        if rule == "slub":
            overwritten = [m for m in map(_SLUB_OVERWRITTEN.search, self.lines) if m]
            self.slub_what = overwritten[0].group("what") if overwritten else match.group("what")
        elif any(_LIST_CORRUPTION.search(line) for line in self.lines):
            self.kind = LIST_CORRUPTION
            self.kinds = [LIST_CORRUPTION, *self.kinds]
        func = match.groupdict().get("func")
        if func:
            frame = _FRAME.match(text, match.start("func"))
            self.header_frames.append((_clean_name(func), match.groupdict().get("mod"),
                                       frame.group(0).strip() if frame else func))

    def add(self, raw: str, text: str) -> None:
        """Append one kernel line of the report and collect the stack frames it names."""
        self.lines.append(raw)
        first = text[:1]
        if first == "<" or first == " " or first == "\t" or first == "[":
            self._stack_line(text)
            return
        if text.startswith(("Call Trace:", "Call trace:", "Backtrace:")):
            self.in_trace = True
            self.in_irq = False
            return
        rip = _RIP.match(text)
        if rip:
            self._add_frame(self.rip_frames, rip.group("frame"))
            return
        if self.rule == "lockdep" and not self.header_frames:
            at = _LOCK_AT.match(text)
            if at:
                self._add_frame(self.header_frames, at.group("frame"))
                return
        if self.rule == "slub":
            track = _SLUB_TRACK.match(text)
            if track and track.group("track") not in self.tracks:
                frames: list[_Frame] = []
                self._add_frame(frames, track.group("frame"))
                if frames:
                    self.tracks[track.group("track")] = frames[0]
                return
        if self.rule == "gpf" and text.startswith(_KASAN_NULL_DEREF):
            # inline KASAN checks the shadow of address 0 first, and that shadow address is not canonical: a
            # NULL dereference faults as a GPF, which KASAN then names. It is the NULL dereference it is
            # (kind oops, as without KASAN), and still a GPF
            self.rule = "null_deref"
            self.kind, _, self.end = _RULES["null_deref"]
            self.kinds = [self.kind, *self.kinds]
            return
        if self.kind == KASAN and not self.access:
            access = _KASAN_ACCESS.match(text)
            if access:
                self.access = access.group(1)
                return
        if self.in_trace and self.kind != KMEMLEAK:
            # Kernels without <TASK> markers end a trace at the first unindented line.
            self.in_trace = False
            self.traces_done += 1

    def _stack_line(self, text: str) -> None:
        stripped = text.strip()
        if stripped.startswith("<"):
            if stripped in ("<IRQ>", "<NMI>", "<SOFTIRQ>"):
                self.in_irq = True
            elif stripped in ("</IRQ>", "</NMI>", "</SOFTIRQ>"):
                self.in_irq = False
            elif stripped == "</TASK>":
                self.in_trace = False
                self.traces_done += 1
            elif stripped == "<TASK>":
                self.in_trace = True
            return
        if stripped.startswith("RIP:"):
            rip = _RIP.match(stripped)
            if rip:
                self._add_frame(self.rip_frames, rip.group("frame"))
            return
        if self.in_irq and self.kind in _SKIP_IRQ_FRAMES:
            return
        if self.in_trace or self.kind in (KMEMLEAK, KFENCE):  # their stacks come without "Call Trace:"
            self._add_frame(self.trace_frames, text)

    @staticmethod
    def _add_frame(frames: list[_Frame], text: str) -> None:
        frame = _FRAME.match(text)
        if frame and not frame.group("unreliable"):
            frames.append((_clean_name(frame.group("func")), frame.group("mod"),
                           frame.group(0)[frame.start("func") - frame.start():]))

    def quiet_done(self) -> bool:
        """Whether a report without end marker has printed at least one complete stack trace."""
        if self.kind == KMEMLEAK:
            return bool(self.trace_frames)
        return self.traces_done > 0 and not self.in_trace

    def blame(self, generic: re.Pattern[str]) -> tuple[str | None, str | None, str]:
        """The function (and its module) to blame: first non-generic frame in order of relevance."""
        order: tuple[list[_Frame], ...] = (self.header_frames, self.rip_frames,
                                                            self.trace_frames)
        if self.rule == "slub":
            named = {"trace": self.rip_frames + self.trace_frames, "free": self.tracks.get("Freed"),
                     "alloc": self.tracks.get("Allocated")}
            tracks = (named[n] for n in self._slub_class()[1])
            order = tuple([t] if isinstance(t, tuple) else (t or []) for t in tracks)
        elif self.kind not in _HEADER_BLAMED:
            order = (self.rip_frames, self.trace_frames, self.header_frames)
        for frames in order:
            for func, mod, text in frames:
                if not generic.fullmatch(func):
                    return func, mod, text
        return None, None, ""

    def _slub_class(self) -> tuple[str, tuple[str, ...]]:
        for pattern, name, blame in _SLUB_CLASSES:
            if pattern.search(self.slub_what):
                return name, blame
        return "slab corruption: " + _sanitise(self.slub_what), ("trace", "free", "alloc")

    def title(self, func: str | None) -> str:
        """The stable, syzkaller-style title."""
        groups = self.match.groupdict()
        what = groups.get("what") or ""
        if self.kind == LIST_CORRUPTION:
            head = "list corruption"
        elif self.rule == "slub":
            head = self._slub_class()[0]
        elif self.rule == "paging":
            head = re.sub(r" (?:for address|at)\b.*", "", self.header_text)
        elif self.rule == "kasan":
            head = f"KASAN: {what} {self.access}".rstrip()
        elif self.rule == "kfence":  # titled by bug class, as SLUB debug's reports of the same bugs
            head = what.strip()
            if head.startswith("out-of-bounds"):
                head = "slab " + head
            elif head == "memory corruption":  # its canary bytes next to the object were written
                head = "slab out-of-bounds write"
            elif head == "invalid free" and any("freed by task" in line for line in self.lines):
                head = "double free"
        elif self.rule == "ubsan":
            head = f"{_RULES[self.rule][1]} {what}"
            if func is None and self.rule == "ubsan":
                return f"{head} in {_LINE_NUMBER.sub('', groups['file'])}"
        elif self.rule == "bug_generic":
            head = "BUG: " + _sanitise(re.split(r"[:,]| in ", what, maxsplit=1)[0])
        elif self.rule == "lockdep":
            head = _sanitise(re.sub(r"(?: detected)?!?$", "", what.strip()))
        elif self.rule == "panic":
            return f"kernel panic: {_sanitise(what)}"
        else:
            head = _RULES[self.rule][1]
        return f"{head} in {func}" if func else head

    def finding(self, generic: re.Pattern[str]) -> Finding:
        """Freeze the report into a :class:`Finding`."""
        func, mod, frame = self.blame(generic)
        return Finding(
            kind=self.kind, title=self.title(func), function=func, module=mod,
            excerpt="\n".join(self.lines), header=self.header, timestamp=self.timestamp, test=self.test,
            kinds=tuple(self.kinds), frame=frame,
        )


class KernelLogMonitor:
    """Turns a stream of kernel log text into :class:`Finding` objects.

    ``ignore`` holds regexes; a finding whose header line or title matches one is dropped (kept in
    :attr:`ignored`).  ``timestamps`` says whether kernel lines carry printk timestamps: ``None``
    guesses (from the first timestamped line on, lines without one are taken as other console
    output and left out of reports).  ``tail_lines`` bounds :meth:`tail`.
    """

    def __init__(self, ignore: Sequence[str | re.Pattern[str]] = (), *, timestamps: bool | None = None,
                 tail_lines: int = 2000, generic_frames: Sequence[str] = ()) -> None:
        self._ignore = [re.compile(p) if isinstance(p, str) else p for p in ignore]
        self._timestamps = timestamps
        self._generic = _GENERIC_FRAMES
        if generic_frames:
            self._generic = re.compile(f"(?:{_GENERIC_FRAMES.pattern}|{'|'.join(generic_frames)})")
        self._partial = ""
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._lead: collections.deque[tuple[str, str]] = collections.deque(maxlen=3)
        self._report: _Report | None = None
        self._held: _Report | None = None
        self.current_test: str | None = None
        """The test whose begin marker was seen last (None outside tests)."""
        self.last_ended: str | None = None
        """The test whose end marker was seen last (everything it printed is read)."""
        self.findings: list[Finding] = []
        """Every finding returned so far, in order."""
        self.ignored: list[Finding] = []
        """Findings dropped by ``ignore`` (the first hundred)."""
        self.leak_owners = LeakOwners()
        """Which test allocated a leaked object (see :class:`LeakOwners`)."""

    def feed(self, text: str) -> list[Finding]:
        """Consume a chunk of log text (lines may be split anywhere); return findings it completed."""
        if not text:
            return []
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        out: list[Finding] = []
        # The fast path, inlined: most lines are ordinary messages outside any report.
        tail_append, lead_append = self._tail.append, self._lead.append
        timestamp_match, firsts, starts = _TIMESTAMP.match, _HEADER_FIRST, _HEADER_STARTS
        for line in lines:
            raw = line.rstrip("\r")
            tail_append(raw)
            stamp = timestamp_match(raw) if raw[:1] in ("[", "<") else None
            if stamp is not None:
                text = raw[stamp.end():]
                if self._timestamps is None:
                    self._timestamps = True
            elif self._timestamps:
                self._untimestamped(raw, out)
                continue
            else:
                text = raw
            if self._report is None and self._held is None and not (
                    text[:1] in firsts and text.startswith(starts)):
                lead_append((raw, text))
                continue
            self._kernel_line(raw, text, stamp, out)
        return out

    def flush(self) -> list[Finding]:
        """End of stream (or timeout): finish the pending line and any report in progress."""
        out: list[Finding] = []
        if self._partial:
            line, self._partial = self._partial, ""
            out += self.feed(line + "\n")
        self._release_held(out)
        if self._report is not None:
            self._finish(out)
        return out

    def settle(self) -> list[Finding]:
        """The stream went quiet: release reports that look complete.

        That is a report held back after its end marker in case a panic follows, and a report with no
        end marker (hung task, lockup, stall...) whose stack trace is complete.  Unlike :meth:`flush`
        it never cuts a stack trace short.
        """
        out: list[Finding] = []
        self._release_held(out)
        report = self._report
        if report is not None and report.end in ("quiet", "indent") and report.quiet_done():
            self._finish(out)
        return out

    def tail(self, lines: int | None = None) -> str:
        """The last ``lines`` (default: all kept) console lines, for error messages."""
        kept = list(self._tail)
        return "\n".join(kept if lines is None else kept[-lines:])

    # -- per line -----------------------------------------------------------------------------------

    def _untimestamped(self, raw: str, out: list[Finding]) -> None:
        """A line without timestamp in a stream that has them: other output, or a kernel line after it."""
        inside = _TIMESTAMP_INSIDE.search(raw) if "]" in raw else None
        stamp = _TIMESTAMP.match(raw, inside.start()) if inside is not None else None
        if stamp is not None:
            self._kernel_line(raw, raw[stamp.end():], stamp, out)
        # else: user space or firmware output, no part of any report

    def _kernel_line(self, raw: str, text: str, stamp: re.Match[str] | None, out: list[Finding]) -> None:
        if text.startswith(_KMEMLEAK_PREFIX):  # kmemleak's verbose reports (scan): one prefix per line
            text = text[len(_KMEMLEAK_PREFIX):]
        header = text[:1] in _HEADER_FIRST and text.startswith(_HEADER_STARTS)
        if header and text.startswith("vexfs-test-"):
            self._marker(text, out)
            return
        report = self._report
        if report is not None:
            if header and self._header(raw, text, stamp, out):
                return
            self._continue(report, raw, text, out)
            return
        if self._held is not None:
            if header and text.startswith("Kernel panic"):
                self._merge_panic(self._held, raw, text)
                self._report, self._held = self._held, None
                return
            if _is_tail_line(text):
                return
            self._release_held(out)
        if header and self._header(raw, text, stamp, out):
            return
        self._lead.append((raw, text))

    def _marker(self, text: str, out: list[Finding]) -> None:
        self._release_held(out)
        if self._report is not None:
            self._finish(out)
        if text.startswith(BEGIN_PREFIX):
            self.current_test = text[len(BEGIN_PREFIX):].rstrip() or None
        elif text.startswith(END_PREFIX):
            self.current_test = None
            self.last_ended = text[len(END_PREFIX):].rstrip() or None
        elif text.startswith(PID_PREFIX):
            pid = text[len(PID_PREFIX):].strip()
            if pid.isdigit() and self.current_test is not None:
                self.leak_owners.test_began(self.current_test, int(pid))
        elif text.startswith(UNLOAD_PREFIX):
            self.leak_owners.module_unloaded(self.current_test)
        self._lead.clear()

    def _header(self, raw: str, text: str, stamp: re.Match[str] | None, out: list[Finding]) -> bool:
        """Start (or merge) a report if ``text`` is a header; False if it is an ordinary line."""
        for pattern, rule in _HEADERS_BY_FIRST[text[0]]:
            match = pattern.match(text)
            if match is None:
                continue
            report = self._report
            if report is not None:
                if rule == "panic":
                    self._merge_panic(report, raw, text)
                    return True
                if rule == "warning" and report.rule == "slub" and " at mm/slub.c:" in text:
                    report.end = "trace"  # 6.12's object_err() ends its report with a WARN
                    return False
                if rule.startswith(("oops_generic", "invalid_opcode")) and report.rule in _OOPS_FOLLOWS \
                        and not report.oops_seen:
                    report.oops_seen = True
                    return False
                self._finish(out)
            lead = self._lead_lines(rule)
            timestamp = float(stamp.group(1)) if stamp is not None else None
            self._report = _Report(rule, match, raw, text, timestamp, self.current_test, lead)
            self._lead.clear()
            return True
        return False

    def _lead_lines(self, rule: str) -> list[str]:
        """Lines just before a header that belong to it: ``cut here`` and a WARN message, or a ruler."""
        lead = list(self._lead)
        for index in range(len(lead)):  # DEBUG_LIST's message before BUG's "cut here", SLUB's before "==="
            if _LIST_CORRUPTION.match(lead[index][1]) or (rule == "slub" and _SLUB_OVERWRITTEN.match(lead[index][1])):
                return [raw for raw, _ in lead[index:]]
        for index in range(len(lead) - 1, -1, -1):
            text = lead[index][1]
            if text.startswith("------------[ cut here ]"):
                return [raw for raw, _ in lead[index:]]
            if text.startswith("=====") and rule in ("kasan", "kfence", "ubsan", "lockdep", "slub"):
                return [raw for raw, _ in lead[index:]]
        return []

    def _merge_panic(self, report: _Report, raw: str, text: str) -> None:
        report.lines.append(raw)
        if PANIC not in report.kinds:
            report.kinds.append(PANIC)
        report.end = "panic"
        report.ended = False

    def _continue(self, report: _Report, raw: str, text: str, out: list[Finding]) -> None:
        end = report.end
        if end == "quiet":
            if report.quiet_done() and not _continues_quiet_report(text):
                self._finish(out)
                self._line_outside(raw, text)
                return
        elif end == "indent" and text[:1] not in (" ", "\t"):
            self._finish(out)
            self._line_outside(raw, text)
            return
        report.add(raw, text)
        if end == "trace":
            if text.startswith("---[ end trace"):
                self._hold(report)
        elif end == "ruler":
            if text.startswith(("=====", "---[ end trace")):
                self._hold(report)
        elif end == "panic" and text.startswith(("---[ end Kernel panic", "Kernel Offset:")):
            self._finish(out)
        if report is self._report and len(report.lines) >= _MAX_REPORT_LINES:
            self._finish(out)

    def _line_outside(self, raw: str, text: str) -> None:
        self._lead.append((raw, text))

    def _hold(self, report: _Report) -> None:
        """A report reached its end marker: keep it briefly in case ``Kernel panic`` follows."""
        self._held, self._report = report, None

    def _release_held(self, out: list[Finding]) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._emit(held.finding(self._generic), out)

    def _finish(self, out: list[Finding]) -> None:
        report, self._report = self._report, None
        if report is not None:
            self._emit(report.finding(self._generic), out)

    def _emit(self, finding: Finding, out: list[Finding]) -> None:
        if finding.kind == KMEMLEAK:
            finding = self._owned(finding)
        for pattern in self._ignore:
            if pattern.search(finding.header) or pattern.search(finding.title):
                if len(self.ignored) < _MAX_IGNORED_KEPT:
                    self.ignored.append(finding)
                return
        self.findings.append(finding)
        out.append(finding)


    def _owned(self, finding: Finding) -> Finding:
        """A leak with the test that made it (when that is not the test it was reported in)."""
        match = _LEAK_OWNER.search(finding.excerpt)
        if match is None:
            return finding
        pid = int(match.group("pid"))
        owner = self.leak_owners.owner(pid)
        made_by = owner[0] if owner is not None and owner[0] != finding.test else None
        return dataclasses.replace(finding, made_by=made_by, made_by_pid=pid)


FaultDetector = KernelLogMonitor
"""Alias: the same engine under the other name it is known by."""


def find_faults(text: str, ignore: Sequence[str | re.Pattern[str]] = (),
                timestamps: bool | None = None) -> list[Finding]:
    """Every finding in a complete log (``dmesg`` output, a saved console log)."""
    monitor = KernelLogMonitor(ignore, timestamps=timestamps, tail_lines=1)
    return monitor.feed(text) + monitor.flush()


def summarise(findings: Sequence[Finding]) -> str:
    """One paragraph describing ``findings`` for a test failure message ("" if there are none)."""
    if not findings:
        return ""
    counts: dict[str, int] = collections.Counter(f.title for f in findings)
    firsts: dict[str, Finding] = {}
    for finding in findings:
        firsts.setdefault(finding.title, finding)
    parts = []
    for title, first in firsts.items():
        where = [", ".join(first.kinds or (first.kind,))]
        if first.module:
            where.append(f"module {first.module}")
        if first.timestamp is not None:
            where.append(f"at {first.timestamp:.3f}s")
        if first.test:
            where.append(f"during {first.test}")
        times = f" (x{counts[title]})" if counts[title] > 1 else ""
        parts.append(f"{title}{times} [{'; '.join(where)}]")
    noun = "fault" if len(findings) == 1 else "faults"
    fatal = " The kernel panicked." if any(f.fatal for f in findings) else ""
    return f"Kernel reported {len(findings)} {noun}: {'; '.join(parts)}.{fatal}"


class ConsoleFollower:
    """Tails a growing console log file (QEMU's serial output) and feeds it to a monitor.

    Call :meth:`poll` on demand, or :meth:`start` a background thread that polls every
    ``interval`` seconds; :meth:`stop` (or leaving the ``with`` block) reads the rest and flushes.
    Once the file has not grown for ``settle_after`` seconds, reports that look complete are
    released (:meth:`KernelLogMonitor.settle`).  ``on_finding`` is called (from the polling thread)
    for each new finding.  Use one follower per VM start: a log rewritten from the start is only
    noticed if it is shorter than what was read.
    """

    def __init__(self, path: str | os.PathLike[str], monitor: KernelLogMonitor | None = None, *,
                 offset: int = 0, interval: float = 0.1, settle_after: float = 0.5, read_size: int = 1 << 20,
                 on_finding: Callable[[Finding], None] | None = None) -> None:
        self.path = Path(path)
        self.monitor = monitor if monitor is not None else KernelLogMonitor()
        self.offset = offset
        self.interval = interval
        self.settle_after = settle_after
        self._last_growth = time.monotonic()
        self._read_size = read_size
        self._on_finding = on_finding
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._idle = False

    def poll(self) -> list[Finding]:
        """Read what was appended since the last call; return the findings it completed."""
        with self._lock:
            out = self._read()
            now = time.monotonic()
            if not self._idle:
                self._last_growth = now
            elif now - self._last_growth >= self.settle_after:
                settled = self.monitor.settle()
                self._notify(settled)
                out += settled
            return out

    def settle(self) -> list[Finding]:
        """Read what was appended and release reports that look complete now, without waiting for quiet."""
        with self._lock:
            out = self._read()
            settled = self.monitor.settle()
            self._notify(settled)
            return out + settled

    def ended(self, test: str) -> bool:
        """Whether the end marker of ``test`` (a node id) was the last one read: all it printed is read."""
        with self._lock:
            return self.monitor.last_ended == marker_token(test)

    def quiet_for(self) -> float:
        """Seconds since the log was last seen growing."""
        with self._lock:
            return time.monotonic() - self._last_growth

    def findings(self, test: str | None = None) -> list[Finding]:
        """Findings so far; with ``test``, only those whose report began during that test."""
        with self._lock:
            found = list(self.monitor.findings)
        if test is None:
            return found
        token = marker_token(test)
        return [f for f in found if f.test == token]

    def tail(self, lines: int = 50) -> str:
        """The last console lines read, for error messages."""
        with self._lock:
            return self.monitor.tail(lines)

    def start(self) -> ConsoleFollower:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"console-follower:{self.path.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> list[Finding]:
        """Stop the thread, read the rest of the file, finish pending reports; return new findings."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        with self._lock:
            out = self._read()
            flushed = self.monitor.flush()
            self._notify(flushed)
            out += flushed
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return out

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read(self) -> list[Finding]:
        out: list[Finding] = []
        self._idle = True
        try:
            with open(self.path, "rb") as log:
                size = os.fstat(log.fileno()).st_size
                if size < self.offset:  # truncated and rewritten: a new VM on the same file
                    self.offset = 0
                    self._decoder.reset()
                log.seek(self.offset)
                while True:
                    data = log.read(self._read_size)
                    if not data:
                        break
                    self._idle = False
                    self.offset += len(data)
                    found = self.monitor.feed(self._decoder.decode(data))
                    self._notify(found)
                    out += found
        except FileNotFoundError:
            pass
        return out

    def _notify(self, findings: list[Finding]) -> None:
        if self._on_finding is not None:
            for finding in findings:
                self._on_finding(finding)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except OSError as error:  # surfaced by stop(); the thread must not die silently
                self._error = error
                return
