"""Disk images under test: crash states built from a recorded write log (CrashMonkey's idea) and corrupted
images mutated from small real ones (Janus's), each mounted and checked in a guest.

- `write_log.py`: the scratch disk's writes and flushes as QEMU's `blklogwrites` records them.
- `disk_rig.py`: a guest whose scratch disk the host can set to any content between mounts.
- `crash_states.py`: every crash state of a workload, checked against what it made durable.
- `mutants.py`: metadata blocks of an image mutated, mounted and exercised.
"""
