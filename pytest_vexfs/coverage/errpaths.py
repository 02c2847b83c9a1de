"""What a fault-injection sweep reached of the module's error handling (with ``--vexfs-coverage``).

From the module's sources: its error-handling lines (a line that returns or sets an error code, or jumps
to a cleanup label) and its allocation sites (a line that calls an allocator, or a helper that allocates:
``kmalloc``, ``kvmalloc_array``, ``alloc_inode_sb``, ``sb_bread``, ``new_inode``, ...). With the lines the
sweep executed (gcov) and the sites its failure points failed (the first module frame of each forced
failure's stack), `ErrorPaths.describe` says which error-handling lines were reached and which allocation
sites the sweep executed but never failed. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

from pytest_vexfs.coverage.gcov import Hits

ERROR_LINE = re.compile(r"\breturn\s+(-E[A-Z0-9]+|ERR_PTR\(|PTR_ERR\()|\bgoto\s+\w+\s*;|\b\w+\s*=\s*-E[A-Z0-9]+\s*;")
ALLOCATION = re.compile(r"\b(k[mz]alloc\w*|kcalloc|kvmalloc\w*|kvzalloc|kvcalloc|krealloc|kstrn?dup|kmemdup\w*|"
                        r"kmem_cache_alloc\w*|kmem_cache_zalloc|alloc_inode_sb|alloc_pages?\w*|__get_free_pages?|"
                        r"get_zeroed_page|v[mz]alloc\w*|new_inode|sb_bread\w*|__bread\w*|sb_getblk\w*|__getblk\w*|"
                        r"grab_cache_page\w*|read_mapping_page|read_cache_folio|d_alloc\w*|d_make_root|iget_locked|"
                        r"kasprintf|kobject_create\w*)\s*\(")
_SITE = re.compile(r"(?P<file>[^\s:/]+\.[ch]):(?P<line>\d+)")


@dataclasses.dataclass(frozen=True)
class Site:
    """A line of the module's sources."""

    file: str   # relative to the source directory
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclasses.dataclass
class ErrorPaths:
    """The module's error-handling lines and allocation sites (see the module docstring)."""

    error_lines: list[Site]
    allocation_sites: list[Site]

    @classmethod
    def scan(cls, source: Path) -> ErrorPaths:
        errors, sites = [], []
        for path in sorted(source.rglob("*.c")):
            if path.name.endswith(".mod.c"):
                continue
            rel = str(path.relative_to(source))
            for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
                code = text.split("//", 1)[0]
                if code.lstrip().startswith(("*", "/*")):
                    continue
                if ERROR_LINE.search(code):
                    errors.append(Site(rel, number, text.strip()))
                if ALLOCATION.search(code):
                    sites.append(Site(rel, number, text.strip()))
        return cls(errors, sites)

    def describe(self, hits: Hits, failed_at: Iterable[str]) -> str:
        """Which error-handling lines `hits` reached, and which allocation sites it executed but no failure
        point failed (`failed_at`: where each forced failure hit, ``file.c:123 (function)``)."""
        failed = {(m["file"], int(m["line"])) for where in failed_at for m in [_SITE.search(where)] if m}

        def reached(site: Site) -> bool:
            return any(Path(f).name == Path(site.file).name and site.line in lines for f, lines in hits.lines.items())

        def was_failed(site: Site) -> bool:
            return (Path(site.file).name, site.line) in failed

        errors_reached = [s for s in self.error_lines if reached(s)]
        executed = [s for s in self.allocation_sites if reached(s)]
        never_failed = [s for s in executed if not was_failed(s)]
        lines = [f"error paths (coverage): {len(errors_reached)} of the module's {len(self.error_lines)} "
                 f"error-handling lines reached" + (": " + ", ".join(map(str, errors_reached)) if errors_reached
                                                    else ""),
                 f"allocation sites: {len(executed)} of {len(self.allocation_sites)} executed, "
                 f"{len(executed) - len(never_failed)} of them failed by a failure point, "
                 f"{len(never_failed)} never failed" + (":" if never_failed else "")]
        lines += [f"  {site} {site.text}" for site in never_failed]
        return "\n".join(lines)
