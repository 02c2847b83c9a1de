"""The fault engine: the kernel-log parser, the console follower, fault kinds and verdicts."""
