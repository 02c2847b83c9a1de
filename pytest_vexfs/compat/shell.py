"""Legacy shell test scripts: which ones are tests, what their header asks for, which domain they suit,
and the ``vexfs-migrate`` command that lists them and copies them into ``tests/<domain>/``.

Which ``*.sh`` files pytest collects (see :mod:`pytest_vexfs.plugin.collect`):

* in a domain directory (a directory named after a domain, e.g. ``tests/safety/``): ``test_*.sh`` and
  ``*_test.sh``, like Python test files;
* anywhere under a directory listed in the ini key ``vexfs_shell_dirs``: every ``*.sh`` except helper
  files (``_*.sh``, ``lib*.sh``, ``common*.sh``).

A script is left out when its header says ``# vexfs: ignore``. Header comments (``# vexfs: ...`` lines in
the first 30 lines) say what the script needs::

    # vexfs: module              build, install and load the module under test first
    # vexfs: module=installed    install it (and its tools) but leave loading to the script
    # vexfs: domain=safety       the domain when the directory does not tell
    # vexfs: hang_timeout=30     seconds; also expect_fault=oops,panic  fresh_vm  requires=vectors
    # vexfs: user=root           run as root (default: the guest's normal user, with passwordless sudo)
    # vexfs: cwd=script          start in the script's own directory (default: the rootdir, as CI runs it)
    # vexfs: args=--quick "a b"  arguments (the rest of the line, shell words), as `make check` passes them

The ini keys ``vexfs_shell_user``, ``vexfs_shell_cwd`` and ``vexfs_shell_args`` (``PATH-GLOB: ARGS`` lines)
set the same for every script; a header wins. A script runs with standard input at end-of-file: a
``read`` there fails at once, and the failure says so. Nothing here imports pytest.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from pytest_vexfs.domains import DOMAINS

SKIP_STATUS = 77
HEADER_LINES = 30
HELPER_PREFIXES = ("_", "lib", "common")
_HEADER = re.compile(r"^\s*#\s*vexfs:\s*(?P<body>.*?)\s*$")
_KNOWN_KEYS = {"module", "domain", "hang_timeout", "expect_fault", "fresh_vm", "requires", "user", "ignore", "cwd",
               "args"}
CWD_CHOICES = ("root", "script")


class ScriptHeaderError(ValueError):
    """A ``# vexfs:`` header line that cannot be understood (names the file, line and what is allowed)."""


@dataclasses.dataclass
class ScriptHeader:
    """What a script's ``# vexfs:`` comments ask for."""

    module: str = ""                  # "", "loaded" or "installed"
    domain: str = ""
    hang_timeout: float | None = None
    expect_fault: tuple[str, ...] = ()
    fresh_vm: bool = False
    requires: tuple[str, ...] = ()
    user: str = ""
    ignore: bool = False
    cwd: str = ""                     # "", "root" or "script"
    args: tuple[str, ...] | None = None


def parse_header(text: str, source: str = "script") -> ScriptHeader:
    """Read the ``# vexfs: key[=value]`` lines among the first lines of a script."""
    header = ScriptHeader()
    for number, line in enumerate(text.splitlines()[:HEADER_LINES], start=1):
        match = _HEADER.match(line)
        if not match:
            continue
        body = match.group("body")
        where = f"{source}:{number}"
        words, args_at, args = body, re.search(r"(?:^|\s)args=", body), ""
        if args_at:  # args= takes the rest of the line, as shell words
            words, args = body[:args_at.start()], body[args_at.end():]
            try:
                header.args = tuple(shlex.split(args))
            except ValueError as exc:
                raise ScriptHeaderError(f"{where}: args={args!r}: {exc}") from None
        for word in words.split():
            key, has_value, value = word.partition("=")
            if key not in _KNOWN_KEYS:
                raise ScriptHeaderError(f"{where}: unknown '# vexfs:' key {key!r} "
                                        f"(allowed: {', '.join(sorted(_KNOWN_KEYS))})")
            if key == "module":
                value = value or "loaded"
                if value not in ("loaded", "installed"):
                    raise ScriptHeaderError(f"{where}: module={value!r}; allowed: module, module=loaded, "
                                            "module=installed")
                header.module = value
            elif key in ("fresh_vm", "ignore"):
                setattr(header, key, True)
            elif not has_value or not value:
                raise ScriptHeaderError(f"{where}: {key} needs a value ({key}=...)")
            elif key == "hang_timeout":
                try:
                    header.hang_timeout = float(value)
                except ValueError:
                    header.hang_timeout = -1.0
                if header.hang_timeout <= 0:
                    raise ScriptHeaderError(f"{where}: hang_timeout={value!r}; allowed: seconds > 0")
            elif key in ("expect_fault", "requires"):
                setattr(header, key, tuple(v for v in value.split(",") if v))
            elif key == "cwd":
                if value not in CWD_CHOICES:
                    raise ScriptHeaderError(f"{where}: cwd={value!r}; allowed: cwd=root (the rootdir, the "
                                            "default), cwd=script (the script's own directory)")
                header.cwd = value
            else:
                setattr(header, key, value)
    return header


def args_from_ini(lines: Sequence[str], rel_path: str) -> tuple[str, ...] | None:
    """The arguments the ini key ``vexfs_shell_args`` gives the script at `rel_path` (relative to the
    rootdir): the first ``GLOB: ARGS`` line whose glob matches, or None."""
    for line in lines:
        pattern, sep, args = line.partition(":")
        if not sep:
            raise ScriptHeaderError(f"vexfs_shell_args: {line!r} is not 'PATH-GLOB: ARGUMENTS'")
        if fnmatch.fnmatch(rel_path, pattern.strip()):
            try:
                return tuple(shlex.split(args))
            except ValueError as exc:
                raise ScriptHeaderError(f"vexfs_shell_args: {line!r}: {exc}") from None
    return None


def read_header(path: Path) -> ScriptHeader:
    return parse_header(_read_start(path), str(path))


def _read_start(path: Path, limit: int = 16384) -> str:
    with open(path, "rb") as fh:
        return fh.read(limit).decode(errors="replace")


def is_helper(path: Path) -> bool:
    """A file sourced by tests rather than a test (``_x.sh``, ``lib*.sh``, ``common*.sh``)."""
    return path.name.startswith(HELPER_PREFIXES)


def is_test_name(path: Path) -> bool:
    """Named like a test in a domain directory: ``test_*.sh`` or ``*_test.sh``."""
    return path.suffix == ".sh" and (path.name.startswith("test_") or path.stem.endswith("_test"))


def is_shell_test(path: Path, rootdir: Path, shell_dirs: Sequence[str], domains: Iterable[str]) -> bool:
    """Whether pytest should collect `path` as a shell test (rules in the module docstring)."""
    if path.suffix != ".sh" or not path.is_file():
        return False
    resolved = path.resolve()
    wanted = False
    for entry in shell_dirs:
        base = Path(entry)
        base = (base if base.is_absolute() else rootdir / base).resolve()
        if resolved.is_relative_to(base) and not is_helper(path):
            wanted = True
    if not wanted and is_test_name(path) and path.parent.name in set(domains):
        wanted = True
    if not wanted:
        return False
    try:
        return not read_header(path).ignore
    except ScriptHeaderError:
        return True  # collected so that the item reports the header problem


# -- what a run of a script says -------------------------------------------------------------------

#: ANSI escape sequences (colours, cursor moves, OSC titles): kept in the raw log, stripped from reports
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """`text` without ANSI escape sequences."""
    return _ANSI.sub("", text)


#: Sourced by bash through BASH_ENV before the script: `read` from the harness's standard input (always at
#: end-of-file, /dev/null) is written down with its line, so that the failure can say so.
STDIN_GUARD = r"""read() {
    builtin read "$@" && return 0
    local __harness_status=$?
    if [ /proc/self/fd/0 -ef /dev/null ] && [ -n "$HARNESS_STDIN_LOG" ]; then
        printf '%s\t%s\t%s\n' "${BASH_SOURCE[1]}" "${BASH_LINENO[0]}" "$*" >> "$HARNESS_STDIN_LOG"
    fi
    return $__harness_status
}
"""


def stdin_reads(log: str, script: str = "") -> list[str]:
    """"read -p at line N" for each line of the STDIN_GUARD log (its options, not its prompt); "of FILE"
    when the read is in another file than the script named `script`."""
    found = []
    for line in log.splitlines():
        source, _, rest = line.partition("\t")
        number, _, words = rest.partition("\t")
        options = [w for w in words.split() if w.startswith("-") and len(w) <= 4]
        where = f"line {number}" if Path(source).name == Path(script).name else f"line {number} of {source}"
        found.append(f"{' '.join(['read', *options])} at {where}")
    return list(dict.fromkeys(found))


_MISSING = re.compile(r"No such file or directory|cannot access|not found|cannot open|does not exist")
_ABSOLUTE = re.compile(r"(?<![\w.~$-])(/[\w.+-]+(?:/[\w.+-]+)+)")


def missing_host_path(output: str, script: str, guest_roots: Sequence[str] = ()) -> str:
    """An absolute path written in `script` (or one below such a path) that an error line of `output` says
    is missing: the script was written for someone's machine (/home/...), not for the guest."""
    for line in output.splitlines():
        if not _MISSING.search(line):
            continue
        for path in map(str, _ABSOLUTE.findall(line)):
            if any(path.startswith(root) for root in guest_roots):
                continue
            parts = path.split("/")
            if any("/".join(parts[:n]) in script for n in range(len(parts), 2, -1)):
                return path
    return ""


# -- domain suggestions ------------------------------------------------------------------------------

#: (domain, file-name words, {content keyword: pattern}), strongest signal first.
RULES: tuple[tuple[str, tuple[str, ...], dict[str, str]], ...] = (
    ("safety", ("fault", "panic", "oops", "crash", "safety", "lockup", "hang"),
     {"fault": r"fault", "panic": r"\bpanic\b", "oops": r"\boops\b", "sysrq": r"sysrq",
      "BUG:": r"\bBUG:", "lockup": r"lockup"}),
    ("vector_ops", ("vector", "vec", "search", "knn", "ioctl", "ann", "embedding"),
     {"vexctl": r"\bvexctl\b", "ioctl": r"\bioctl\b", "search": r"\bsearch\b", "knn": r"\bknn\b",
      "vector": r"\bvectors?\b"}),
    ("performance", ("perf", "bench", "benchmark", "fio", "throughput", "latency", "speed"),
     {"fio": r"\bfio\b", "time": r"(^|[;&|]\s*|\$\(\s*)time\s", "perf": r"\bperf\b",
      "hyperfine": r"\bhyperfine\b", "MB/s": r"MB/s|ops/s|IOPS"}),
    ("integration", ("integration", "e2e", "end2end", "scenario", "workflow"),
     {"integration": r"\bintegration\b"}),
    ("kernel_module", ("module", "load", "unload", "insmod", "rmmod", "modprobe", "lifecycle", "param"),
     {"insmod": r"\binsmod\b", "rmmod": r"\brmmod\b", "modprobe": r"\bmodprobe\b", "lsmod": r"\blsmod\b",
      "/sys/module": r"/sys/module/"}),
    ("filesystem_ops", ("fs", "file", "files", "dir", "mount", "mkdir", "io", "rename", "persist"),
     {"mkdir": r"\bmkdir\b", "dd": r"\bdd\b", "cat": r"\bcat\b", "mount": r"\bmount\b",
      "touch": r"\btouch\b", "mv": r"\bmv\b", "ln": r"\bln\b", "mkfs": r"\bmkfs"}),
)


@dataclasses.dataclass
class Suggestion:
    """The suggested domain of one script and why."""

    path: Path
    domain: str
    reason: str
    uses_module: bool


def suggest_domain(path: Path, text: str | None = None, domains: Sequence[str] = DOMAINS) -> Suggestion:
    """Header, then directory, then file name, then content keywords decide (the reason says which)."""
    text = _read_start(path, 1 << 20) if text is None else text
    uses_module = bool(re.search(r"\b(insmod|rmmod|modprobe)\b", text))
    try:
        header = parse_header(text, str(path))
    except ScriptHeaderError:
        header = ScriptHeader()
    if header.domain:
        return Suggestion(path, header.domain, "header '# vexfs: domain'", uses_module)
    for part in reversed(path.parent.parts):
        if part in domains:
            return Suggestion(path, part, f"directory {part}/", uses_module)
    words = set(re.split(r"[^a-z0-9]+", path.stem.lower())) - {"", "test", "tests", "sh"}
    for domain, name_words, _ in RULES:
        hit = sorted(words & set(name_words))
        if hit:
            return Suggestion(path, domain, f"name ({', '.join(hit)})", uses_module)
    body = "\n".join(line for line in text.splitlines() if not _HEADER.match(line))
    found = {domain: [word for word, pattern in patterns.items() if re.search(pattern, body, re.MULTILINE)]
             for domain, _, patterns in RULES}
    # specific signals win in RULES order; the two everyday ones (module loading, file commands) by the
    # number of different commands used, so a file test that loads the module first stays a file test
    best = next((d for d, _, _ in RULES[:4] if found[d]), None)
    if best is None and (found["kernel_module"] or found["filesystem_ops"]):
        best = ("filesystem_ops" if len(found["filesystem_ops"]) > len(found["kernel_module"])
                else "kernel_module")
    if best is not None:
        return Suggestion(path, best, f"content ({', '.join(found[best])})", uses_module)
    return Suggestion(path, "integration", "nothing specific found", uses_module)


def find_scripts(paths: Sequence[Path]) -> list[Path]:
    """Every ``*.sh`` under `paths` (files given directly are kept), helpers excluded, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.sh")) if p.is_file() and not is_helper(p))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found


def migrated_name(path: Path) -> str:
    """The file name a script gets in tests/<domain>/ (``test_`` prefix unless it is already a test name)."""
    return path.name if is_test_name(path) else f"test_{path.name}"


# -- vexfs-migrate --------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``vexfs-migrate list|copy PATH...``: suggest a domain for each shell script, or copy them."""
    parser = argparse.ArgumentParser(
        prog="vexfs-migrate",
        description="List legacy shell test scripts with a suggested test domain, or copy them into "
                    "tests/<domain>/ where pytest collects them (exit 0 passes, 77 skips).")
    sub = parser.add_subparsers(dest="command")
    listing = sub.add_parser("list", help="list scripts with their suggested domain")
    listing.add_argument("paths", nargs="*", type=Path, default=[Path(".")])
    listing.add_argument("--json", action="store_true", help="one JSON object per script")
    copy = sub.add_parser("copy", help="copy scripts into <tests>/<domain>/ as test_*.sh")
    copy.add_argument("paths", nargs="+", type=Path)
    copy.add_argument("--tests-dir", type=Path, default=Path("tests"), help="default: tests")
    copy.add_argument("--domain", help="put every script in this domain instead of the suggestion")
    copy.add_argument("--dry-run", action="store_true", help="print what would be copied")
    copy.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["list", *(argv or [])])
    try:
        scripts = find_scripts(args.paths)
    except FileNotFoundError as exc:
        print(f"vexfs-migrate: {exc}", file=sys.stderr)
        return 2
    if not scripts:
        print("vexfs-migrate: no *.sh scripts found", file=sys.stderr)
        return 1
    suggestions = [suggest_domain(p) for p in scripts]
    if args.command == "list":
        if args.json:
            for s in suggestions:
                print(json.dumps({"script": str(s.path), "domain": s.domain, "reason": s.reason,
                                  "uses_module": s.uses_module}))
        else:
            width = max(len(str(s.path)) for s in suggestions)
            print(f"{'script':<{width}}  {'domain':<14}  reason")
            for s in suggestions:
                note = "  [insmod/rmmod: add '# vexfs: module=installed']" if s.uses_module else ""
                print(f"{s.path!s:<{width}}  {s.domain:<14}  {s.reason}{note}")
        return 0
    status = 0
    for s in suggestions:
        domain = args.domain or s.domain
        target = args.tests_dir / domain / migrated_name(s.path)
        if target.exists() and not args.force:
            print(f"skip {s.path}: {target} exists (use --force)", file=sys.stderr)
            status = 1
            continue
        print(f"{'would copy' if args.dry_run else 'copy'} {s.path} -> {target}  ({s.reason})")
        if not args.dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s.path, target)
    return status


if __name__ == "__main__":
    sys.exit(main())
