"""The guest: its image built from Debian packages, the accelerator probe, the VM lifecycle, SSH, and the
per-worker slot and per-test session over them."""
