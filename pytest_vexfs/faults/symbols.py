"""File and line for the frames of a kernel report: ``vexfsref_fault_uaf_write+0x2c/0x40 [vexfsref]``
becomes ``refmod/vexfsref_fault.c:215 (vexfsref_fault_uaf_write)``.

A :class:`Symbolizer` knows ELF objects with debug info: the modules under test (their ``.ko`` as
built, relocatable, so offsets are taken within the symbol's section) and, where one exists, a
``vmlinux`` with DWARF (the debug kernel flavour's, or Debian's ``linux-image-*-dbg``). Addresses are
resolved with binutils' ``addr2line`` (the kernel's ``scripts/decode_stacktrace.sh`` does the same), the
return address of a call frame one byte back so the line is the call's, not the next one. Nothing here
depends on pytest.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["ElfObject", "SourceLine", "Symbolizer", "frame_function"]

_FRAME = re.compile(r"(?P<func>[A-Za-z_.$][\w.$]*)\+0x(?P<off>[0-9a-f]+)/0x[0-9a-f]+(?: \[(?P<mod>[\w-]+)[^\]]*\])?")
#: a frame printed as a bare address: the kernel no longer knows the module that held it (unloaded)
_BARE = re.compile(r"^(?:\[[^\]]*\] )?(?:kmemleak: )?\s+(?:\[<[0-9a-f]+>\] )?0x(?P<addr>[0-9a-f]{16})\s*$")
#: a /proc/kallsyms line of a module's text symbol: "ffffffffa0007000 t name\t[module]"
_KALLSYMS = re.compile(r"^(?P<addr>[0-9a-f]{16}) [tT] (?P<func>\S+)\s+\[(?P<mod>[\w-]+)\]", re.M)
#: a bare address further than this past the nearest known symbol is not taken as inside it
_MAX_FUNCTION = 0x10000
_EXACT_PC = re.compile(r"(?:.*\] )?\s*(?:RIP: [0-9a-f]{4}:|pc : )")  # the faulting instruction itself
_KERNEL = "vmlinux"


@dataclasses.dataclass(frozen=True)
class SourceLine:
    """Where one frame's instruction comes from (the innermost inlined function's line)."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.function})"


class ElfObject:
    """One object with debug info: a module's ``.ko`` or a ``vmlinux``.

    ``path_map`` rewrites the file names the compiler recorded (the build directory) to the ones a
    developer opens (the module's source directory)."""

    def __init__(self, path: Path, path_map: tuple[tuple[str, str], ...] = (),
                 own_prefixes: tuple[str, ...] = (), tree: Path | None = None) -> None:
        self.path = Path(path)
        self.tree = tree  # a kernel tree: file names are shown relative to it (mm/slub.c)
        self.path_map = path_map
        self.own_prefixes = own_prefixes
        self._symbols: dict[str, tuple[str, int]] | None = None
        self._relocatable = False
        self._cache: dict[tuple[str, int], SourceLine | None] = {}

    def _load(self) -> dict[str, tuple[str, int]]:
        """Function symbols: name -> (section name, value), from ``readelf``."""
        if self._symbols is not None:
            return self._symbols
        readelf = shutil.which("readelf")
        self._symbols = {}
        if readelf is None:
            return self._symbols
        header = _run([readelf, "-hW", str(self.path)])
        self._relocatable = "REL (Relocatable file)" in header
        sections: dict[str, str] = {}
        for m in re.finditer(r"^\s*\[\s*(\d+)\]\s+(\S+)", _run([readelf, "-SW", str(self.path)]), re.M):
            sections[m.group(1)] = m.group(2)
        for line in _run([readelf, "-sW", str(self.path)]).splitlines():
            parts = line.split()
            # Num: Value Size Type Bind Vis Ndx Name
            if len(parts) >= 8 and parts[3] == "FUNC" and parts[6].isdigit():
                self._symbols.setdefault(parts[7], (sections.get(parts[6], ".text"), int(parts[1], 16)))
        return self._symbols

    def resolve_many(self, frames: list[tuple[str, int]]) -> dict[tuple[str, int], SourceLine | None]:
        """Resolve (function, offset) pairs; unknown functions resolve to None."""
        symbols = self._load()
        todo: dict[str, list[tuple[tuple[str, int], int]]] = {}
        for func, offset in frames:
            key = (func, offset)
            if key in self._cache:
                continue
            found = symbols.get(func)
            if found is None:
                self._cache[key] = None
                continue
            section, value = found
            todo.setdefault(section if self._relocatable else "", []).append((key, value + offset))
        addr2line = shutil.which("addr2line")
        for section, items in todo.items():
            if addr2line is None:
                self._cache.update({key: None for key, _ in items})
                continue
            argv = [addr2line, "-a", "-f", "-i", "-e", str(self.path)] + (["-j", section] if section else [])
            out = _run(argv + [hex(addr) for _, addr in items])
            self._cache.update(zip([key for key, _ in items], self._parse(out, len(items))))
        return {key: self._cache.get(key) for key in frames}

    def _parse(self, out: str, count: int) -> list[SourceLine | None]:
        """addr2line -a -f -i prints, per address, the address then pairs (function, file:line),
        innermost inlined function first: keep the innermost, where the instruction really is."""
        chains: list[list[str]] = []
        for line in out.splitlines():
            if re.fullmatch(r"0x[0-9a-f]+", line.strip()):
                chains.append([])
            elif chains:
                chains[-1].append(line)
        if len(chains) != count:
            return [None] * count
        return [self._pick(chain) for chain in chains]

    def _pick(self, chain: list[str]) -> SourceLine | None:
        """The innermost line in the object's own sources (a module's code inlining kmalloc() or
        list_del() is shown at its own line, not in the kernel header), else the innermost."""
        pairs = [(chain[i], chain[i + 1]) for i in range(0, len(chain) - 1, 2)]
        if self.own_prefixes:
            for func, where in pairs:
                if where.startswith(self.own_prefixes):
                    return self._source_line(func, where)
        return self._source_line(*pairs[0]) if pairs else None

    def _source_line(self, func: str, where: str) -> SourceLine | None:
        file, _, line = where.rpartition(":")
        line = line.split()[0] if line else ""
        if not file or file == "??" or not line.isdigit() or int(line) == 0:
            return None
        for prefix, replacement in self.path_map:
            if file.startswith(prefix):
                file = replacement + file[len(prefix):]
                break
        else:
            if self.tree is not None:
                return SourceLine(_in_tree(file, self.tree), int(line), func)
        return SourceLine(_display_path(file), int(line), func)


class Symbolizer:
    """Resolves the frames of kernel reports against the objects it was given."""

    def __init__(self) -> None:
        self.objects: dict[str, ElfObject] = {}
        self._addresses: dict[int, tuple[str, str]] = {}  # module text symbols seen loaded: (function, module)
        self._sorted: list[int] = []

    def remember_module_symbols(self, kallsyms: str) -> None:
        """Where the modules' functions were while loaded (``/proc/kallsyms`` lines): once a module is
        unloaded the kernel prints its frames as bare addresses (a kmemleak report of what it leaked),
        which are then resolved through the addresses it had. A reload elsewhere overwrites what
        collides; addresses it does not reuse are kept."""
        for m in _KALLSYMS.finditer(kallsyms):
            mod = m.group("mod").replace("-", "_")
            if mod in self.objects:
                self._addresses[int(m.group("addr"), 16)] = (m.group("func"), mod)
        self._sorted = sorted(self._addresses)

    def _bare(self, address: int) -> tuple[str, str, int] | None:
        """(module, function, offset) of a bare address, through the module symbols remembered."""
        import bisect

        index = bisect.bisect_right(self._sorted, address) - 1
        if index < 0 or address - self._sorted[index] > _MAX_FUNCTION:
            return None
        func, mod = self._addresses[self._sorted[index]]
        return mod, func, address - self._sorted[index]

    def add_module(self, name: str, ko: Path, build_dir: str | None = None, source: Path | None = None) -> None:
        """A module (name as in traces, ``[name]``) and, to map file names, where it was built from what."""
        path_map = ((build_dir.rstrip("/") + "/", str(source).rstrip("/") + "/"),) if build_dir and source else ()
        self.objects[name.replace("-", "_")] = ElfObject(ko, path_map, tuple(p for p, _ in path_map))

    def add_kernel(self, vmlinux: Path, source_tree: Path | None = None) -> bool:
        """The kernel's own frames, if ``vmlinux`` carries line tables (a stripped one is ignored)."""
        if not vmlinux.is_file() or not _has_line_info(vmlinux):
            return False
        self.objects[_KERNEL] = ElfObject(vmlinux, tree=source_tree)
        return True

    def locate(self, text: str) -> list[tuple[int, SourceLine]]:
        """(line index, source line) for every resolvable frame in ``text``."""
        wanted: dict[str, list[tuple[int, str, int]]] = {}
        for index, line in enumerate(text.splitlines()):
            bare = _BARE.match(line) if self._sorted and "0x" in line else None
            known = self._bare(int(bare.group("addr"), 16)) if bare else None
            if known is not None:
                mod, func, offset = known
                wanted.setdefault(mod, []).append((index, func, offset - 1 if offset else 0))
                continue
            for m in _FRAME.finditer(line):
                mod = (m.group("mod") or _KERNEL).replace("-", "_")
                if mod not in self.objects:
                    continue
                offset = int(m.group("off"), 16)
                if offset and not _EXACT_PC.match(line):
                    offset -= 1  # a return address: the call is the instruction before
                wanted.setdefault(mod, []).append((index, m.group("func"), offset))
        found: list[tuple[int, SourceLine]] = []
        for mod, frames in wanted.items():
            resolved = self.objects[mod].resolve_many([(f, o) for _, f, o in frames])
            for index, func, offset in frames:
                where = resolved.get((func, offset))
                if where is not None:
                    found.append((index, where))
        return sorted(found, key=lambda item: item[0])

    def annotate(self, text: str) -> tuple[str, dict[int, SourceLine]]:
        """``text`` with `` file.c:123 (function)`` appended to each resolved frame line, and the map."""
        located = dict(self.locate(text))
        lines = text.splitlines()
        for index, where in located.items():
            lines[index] = f"{lines[index]}  {where}"
        return "\n".join(lines), located


def frame_function(line: str) -> str | None:
    """The function of the first frame on a report line, without compiler suffixes (.cold, .isra...)."""
    m = _FRAME.search(line)
    return re.sub(r"(?:\.(?:cold|isra|constprop|part|llvm|lto_priv|localalias)(?:\.\d+)?)+$", "",
                  m.group("func")) if m else None


def _has_line_info(path: Path) -> bool:
    readelf = shutil.which("readelf")
    return readelf is not None and ".debug_line" in _run([readelf, "-SW", str(path)])


def _in_tree(file: str, tree: Path) -> str:
    """A kernel source file relative to its tree, whatever directory it was compiled in (ccache may hand
    back an object compiled elsewhere): the longest tail of the path that exists in the tree."""
    parts = Path(file).parts
    for i in range(1, len(parts)):
        if (tree / Path(*parts[i:])).is_file():
            return str(Path(*parts[i:]))
    return file


def _display_path(file: str) -> str:
    """Relative to the working directory when the file is beneath it, else as is."""
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return file
    return file if rel.startswith("..") or not os.path.isabs(file) else rel


def _run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              errors="replace", timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout
