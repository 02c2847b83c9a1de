"""Running guests: the accelerator probe, the VM lifecycle (booting, restoring a snapshot, broken or
stopped), SSH and the guest agent, and the records the reaper reads. What they boot is built in
pytest_vexfs.images; the per-test harness over them is pytest_vexfs.harness."""
