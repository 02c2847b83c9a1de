"""The module under test: its profile, its build against the guest kernel, its life in a guest, and the
filesystem and vector clients over it."""
