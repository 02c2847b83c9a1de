"""Titles name the module: a fault found inside a kernel helper the module called (a parser, a string or
number helper) is titled by the module's frame, as syzkaller skips generic frames when it titles a report.
The planted case on the debug kernel (refmod's `parser_oob`: a token table without its terminator read by
match_token) is in tests/plugin/test_debug_kernel.py."""

from __future__ import annotations

import pytest

from pytest_vexfs.faults.kernel_log import find_faults

# the shape of a 6.12 KASAN report of refmod's parser_oob (addresses and offsets vary from build to build)
PARSER_OOB = """\
[   41.101010] vexfsref: injecting fault parser_oob
[   41.102000] ==================================================================
[   41.102311] BUG: KASAN: global-out-of-bounds in match_token+0x3c1/0x3f0
[   41.102811] Read of size 8 at addr ffffffffc0a1b2f8 by task sh/214
[   41.103000]
[   41.103101] CPU: 0 UID: 0 PID: 214 Comm: sh Tainted: G           O       6.12.117-vexfs-debug #1
[   41.103311] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
[   41.103500] Call Trace:
[   41.103600]  <TASK>
[   41.103700]  dump_stack_lvl+0x5d/0x80
[   41.103800]  print_report+0x171/0x4f0
[   41.103900]  kasan_report+0xc6/0x100
[   41.104000]  match_token+0x3c1/0x3f0
[   41.104100]  vexfsref_parse_legacy_options+0x9b/0x110 [vexfsref]
[   41.104200]  vexfsref_fault_parser_oob+0x6d/0xa0 [vexfsref]
[   41.104300]  vexfsref_fault_write+0x121/0x180 [vexfsref]
[   41.104400]  proc_reg_write+0x1b5/0x280
[   41.104500]  vfs_write+0x21c/0xc40
[   41.104600]  ksys_write+0xf1/0x1d0
[   41.104700]  do_syscall_64+0x4b/0x110
[   41.104800]  entry_SYSCALL_64_after_hwframe+0x76/0x7e
[   41.104900]  </TASK>
[   41.105000]
[   41.105100] The buggy address belongs to the variable:
[   41.105200]  vexfsref_legacy_tokens+0x20/0xffffffffffffc3a0 [vexfsref]
[   41.105300]
[   41.105400] ==================================================================
[   41.106000] vexfsref: legacy options parsed: last token 0
"""


def test_a_fault_inside_a_kernel_helper_is_titled_by_the_modules_frame() -> None:
    (finding,) = find_faults(PARSER_OOB)
    assert finding.kind == "kasan"
    assert finding.title == "KASAN: global-out-of-bounds Read in vexfsref_parse_legacy_options"
    assert (finding.function, finding.module) == ("vexfsref_parse_legacy_options", "vexfsref")


@pytest.mark.parametrize("helper", ["strsep", "kstrtouint", "vsnprintf", "sort_r", "memchr", "strnlen"])
def test_every_library_helper_is_skipped_the_same_way(helper: str) -> None:
    (finding,) = find_faults(PARSER_OOB.replace("match_token", helper))
    assert finding.title == "KASAN: global-out-of-bounds Read in vexfsref_parse_legacy_options"


def test_a_fault_in_the_modules_own_code_keeps_its_function() -> None:
    own = PARSER_OOB.replace("in match_token+0x3c1/0x3f0", "in vexfsref_fault_parser_oob+0x6d/0xa0 [vexfsref]")
    (finding,) = find_faults(own)
    assert finding.title == "KASAN: global-out-of-bounds Read in vexfsref_fault_parser_oob"
