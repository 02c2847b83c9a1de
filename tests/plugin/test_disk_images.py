"""The crash-state and image-mutation logic without a VM: a dm-log-writes log parsed, crash states enumerated
and deduplicated, what was durable when, metadata told from pattern data, mutations."""

import struct

from pytest_vexfs.disk_images.crash_check import ace_workload
from pytest_vexfs.disk_images.crash_states import (BlockHistory, CrashState, OpRecord, compare, durable_expectations,
                                                   enumerate_states, unique_states)
from pytest_vexfs.disk_images.mutants import is_pattern, metadata_blocks, mutations
from pytest_vexfs.disk_images.write_log import BLOCK, LOG_FLUSH, WriteLog


def write_log(path, requests):
    """A blklogwrites log: requests are ("w", block, [bytes per block]) or ("f",)."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<QQQI", 0x6A736677736872, 1, len(requests), BLOCK).ljust(BLOCK, b"\0"))
        for req in requests:
            if req[0] == "f":
                fh.write(struct.pack("<QQQQ", 0, 0, LOG_FLUSH, 0).ljust(BLOCK, b"\0"))
            else:
                _, block, datas = req
                fh.write(struct.pack("<QQQQ", block, len(datas), 0, 0).ljust(BLOCK, b"\0"))
                for d in datas:
                    fh.write(d.ljust(BLOCK, b"\0"))


def test_log_is_parsed_as_it_grows(tmp_path):
    path = tmp_path / "log"
    write_log(path, [("w", 5, [b"a", b"b"]), ("f",)])
    log = WriteLog(path)
    assert log.refresh() == 2
    assert [e.is_write for e in log.entries] == [True, False] and log.entries[1].is_flush
    assert log.data(log.entries[0], 6).rstrip(b"\0") == b"b"
    with open(path, "ab") as fh:  # a header whose data is not written yet is not an entry yet
        fh.write(struct.pack("<QQQQ", 9, 1, 0, 0).ljust(BLOCK, b"\0"))
    assert log.refresh() == 2
    with open(path, "ab") as fh:
        fh.write(b"c".ljust(BLOCK, b"\0"))
    assert log.refresh() == 3 and log.entries[2].block == 9


def test_states_at_every_flush_and_inside_each_epoch(tmp_path):
    path = tmp_path / "log"
    # entries: 0 mkfs write, 1 flush | workload: 2 w, 3 w, 4 flush, 5 w (super), 6 w, 7 w, 8 flush
    write_log(path, [("w", 0, [b"mkfs"]), ("f",), ("w", 1, [b"x"]), ("w", 2, [b"y"]), ("f",),
                     ("w", 0, [b"super"]), ("w", 3, [b"p1"]), ("w", 4, [b"p2"]), ("f",)])
    log = WriteLog(path)
    log.refresh()
    states = enumerate_states(log.entries, 2, 9, partial_cap=10, subset_cap=2, seed=1)
    names = [s.name for s in states]
    assert "after write #2, flush #1 of 2" in names and "after write #5, flush #2 of 2" in names
    assert "after write #3 (1 of 3 in epoch 2, before flush #2 of 2)" in names
    first = next(s for s in states if s.name.startswith("after write #3 (1 of 3"))
    assert first.prefix == 5 and first.extra == (5,) and first.kind == "partial"
    subsets = [s for s in states if s.kind == "subset"]
    assert subsets and all(set(s.extra) < {2, 3} or set(s.extra) < {5, 6, 7} for s in subsets)
    history = BlockHistory(log)
    history.update()
    assert history.source(first, 0) == 5 and history.source(first, 3) == -1
    blocks = sorted({b for e in log.entries[2:9] if e.is_write for b in e.blocks()})
    # the state before the workload and the one after its first epoch's flush differ; identical ones dedup
    unique = list(unique_states(states + [CrashState(5, (), "same as flush #1", "flush")], history, blocks))
    assert len(unique) == len({d for _, d in unique}) and all(s.name != "same as flush #1" for s, _ in unique)


def record(number, op, start, end, tree, answer="ok\t"):
    return OpRecord(number, op, answer, start, end, tree)


def test_durable_after_fsync_unless_changed_since():
    a1 = {"a": "f 644 1 10 10:aaaa"}
    a2 = {"a": "f 644 1 20 20:bbbb"}
    records = [record(1, ("write", "a", 0, 10, 1), 0, 0, a1), record(2, ("fsync", "a"), 0, 3, a1),
               record(3, ("write", "a", 0, 20, 2), 3, 3, a2), record(4, ("sync",), 3, 6, a2)]
    before = durable_expectations(records, CrashState(2, (), "", "flush"))
    assert before == {}
    after_fsync = durable_expectations(records, CrashState(3, (), "", "flush"))
    assert after_fsync == {"a": ("f 644 10 10:aaaa", "after #2 fsync('a')")}
    # past entry 3 the next write to `a` has started: either version may be on disk, `a` is not checked
    assert durable_expectations(records, CrashState(4, (), "", "flush")) == {}
    after_sync = durable_expectations(records, CrashState(6, (), "", "flush"))
    assert after_sync["a"][0] == "f 644 20 20:bbbb"
    assert compare(after_sync, {"a": "f 644 1 20 20:bbbb"}) == []
    assert compare(after_sync, {}) == ["a: missing (after #4 sync(): f 644 20 20:bbbb)"]


def test_ace_workloads_persist_what_they_change():
    import random

    rng = random.Random(3)
    for _ in range(20):
        ops = ace_workload(rng)
        assert ops[0][0] == "mkdir" and ops[-1][0] in ("fsync", "fdatasync", "sync")


def pattern(seed, off, n):
    return bytes(((seed * 31 + off + i) % 251) + 1 for i in range(n))


def test_metadata_is_what_is_neither_zeros_nor_pattern():
    blocks = {0: b"\x01\x00\x00\x00superblock".ljust(BLOCK, b"\0"), 1: pattern(3, 0, BLOCK), 2: bytes(BLOCK),
              3: pattern(5, 100, 1000).ljust(BLOCK, b"\0")}
    assert is_pattern(blocks[1]) and is_pattern(blocks[3]) and not is_pattern(blocks[0])
    assert metadata_blocks(blocks) == [0]
    found = [m for _, m in zip(range(10), mutations(blocks, seed=1))]
    assert found[0].kind == "field" and found[0].block == 0 and found[0].offset == 0
    assert found[0].new == struct.pack("<I", 0xFF) and found[0].old == b"\x01\x00\x00\x00"
    assert all(m.block == 0 for m in found)
    mutated = found[0].apply(blocks[0])
    assert len(mutated) == BLOCK and mutated[:4] == b"\xff\x00\x00\x00"


def test_fdatasync_does_not_make_a_new_name_durable():
    """rename(c, b) then fdatasync(b): the renamed file's data is durable, its new name is not (ext4 may keep
    the old b after a crash, rightly, so b is not checked); after an fsync of b, the new name is durable."""
    old_b = {"b": "f 644 1 9000 9000:aaaa", "c": "f 644 1 100 100:cccc"}
    new_b = {"b": "f 644 1 100 100:cccc"}
    records = [record(1, ("sync",), 0, 2, old_b), record(2, ("rename", "c", "b"), 2, 2, new_b),
               record(3, ("fdatasync", "b"), 2, 4, new_b)]
    assert "b" not in durable_expectations(records, CrashState(4, (), "", "flush"))  # old or new: either
    records.append(record(4, ("fsync", "b"), 4, 6, new_b))
    assert durable_expectations(records, CrashState(6, (), "", "flush"))["b"][0] == "f 644 100 100:cccc"
