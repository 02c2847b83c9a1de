"""What a module that fails to link needs of its kernel: modpost's ``"SYMBOL" [x.ko] undefined!`` lines
turned into one paragraph naming each missing symbol and, where known, the Kconfig option that exports
it (a kernel configured small, such as the debug flavour's, may lack what a filesystem module links).
Nothing here depends on pytest."""

from __future__ import annotations

import re

_UNDEFINED = re.compile(r'ERROR: modpost: "(?P<symbol>[^"]+)" \[[^\]]+\] undefined!')

#: symbol pattern -> the Kconfig option that exports it (and what selects it when it has no prompt)
_OPTIONS = (
    (r"__blockdev_direct_IO", "CONFIG_LEGACY_DIRECT_IO (no prompt: selected by FAT_FS, UDF_FS and other "
                              "block filesystems)"),
    (r"(?:__)?dquot_\w+|dq(?:get|put)|register_quota_format|unregister_quota_format", "CONFIG_QUOTA"),
    (r"qtree_\w+", "CONFIG_QUOTA_TREE (selected by QFMT_V2)"),
    (r"exportfs_\w+", "CONFIG_EXPORTFS (no prompt: selected by NFSD, OVERLAY_FS)"),
    (r"iomap_swapfile_activate|add_swap_extent", "CONFIG_SWAP"),
    (r"iomap_\w+", "CONFIG_FS_IOMAP (no prompt: selected by EXT4_FS, XFS_FS and others)"),
    (r"mpage_\w+|__bread\w*|__breadahead\w*|__brelse|__bforget|__getblk\w*|block_\w+|mark_buffer_\w+"
     r"|sync_dirty_buffer|generic_block_bmap|create_empty_buffers|submit_bh|end_buffer_\w+",
     "CONFIG_BUFFER_HEAD (no prompt: selected by EXT4_FS, FAT_FS and other block filesystems)"),
    (r"load_nls\w*|unload_nls|utf8s?_to_utf16s|utf16s_to_utf8s|__register_nls|unregister_nls", "CONFIG_NLS"),
    (r"crc16", "CONFIG_CRC16"),
    (r"crc_itu_t\w*", "CONFIG_CRC_ITU_T"),
    (r"crc_ccitt\w*", "CONFIG_CRC_CCITT"),
    (r"crc32c\w*|__crc32c\w*", "CONFIG_LIBCRC32C"),
    (r"jbd2_\w+", "CONFIG_JBD2 (selected by EXT4_FS)"),
    (r"mb_cache_\w+", "CONFIG_FS_MBCACHE"),
    (r"posix_acl_\w+|set_posix_acl|get_inode_acl", "CONFIG_FS_POSIX_ACL"),
    (r"fscrypt_\w+", "CONFIG_FS_ENCRYPTION"),
    (r"fsverity_\w+", "CONFIG_FS_VERITY"),
    (r"dax_\w+", "CONFIG_FS_DAX"),
    (r"__asan_\w+|kasan_\w+", "CONFIG_KASAN (the module was built for a KASAN kernel)"),
    (r"__gcov_\w+", "CONFIG_GCOV_KERNEL"),
    (r"__sanitizer_cov_\w+", "CONFIG_KCOV"),
)
KCONFIG_OF_SYMBOL: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), o) for p, o in _OPTIONS)


def undefined_symbols(output: str) -> list[str]:
    """The symbols modpost found undefined, in order, each once."""
    return list(dict.fromkeys(m.group("symbol") for m in _UNDEFINED.finditer(output)))


def kconfig_option(symbol: str) -> str:
    """The Kconfig option that exports ``symbol`` ("" when not known)."""
    return next((option for pattern, option in KCONFIG_OF_SYMBOL if pattern.fullmatch(symbol)), "")


def undefined_symbols_hint(output: str, kernel: str) -> str:
    """One paragraph for a build that failed at modpost on symbols the kernel does not export ("" when
    that is not why it failed)."""
    symbols = undefined_symbols(output)
    if not symbols:
        return ""
    named = []
    for symbol in symbols[:12]:
        option = kconfig_option(symbol)
        named.append(f"{symbol} ({option})" if option else symbol)
    more = f" and {len(symbols) - 12} more" if len(symbols) > 12 else ""
    return (f"kernel {kernel} does not export {len(symbols)} symbol(s) the module links: "
            f"{', '.join(named)}{more}. Build against a kernel configured with those options: for the debug "
            f"flavour add them to pytest_vexfs/images/kernel/debug.config (rebuilt on next use), for a kernel "
            f"you built pass --vexfs-kernel PATH with its build tree; a symbol with no option named may be "
            f"GPL-only (check the module's MODULE_LICENSE) or not exported by any configuration")
