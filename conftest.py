"""Project-level pytest configuration: the pytest-vexfs plugin is loaded through its entry point.

The suite's own options (VM size, kernel, environment) are the plugin's `--vexfs-*` options; see
README.md. Nothing here boots a VM: collection stays VM-free.
"""

pytest_plugins = ["pytester"]

# Test data of the self-tests (sample projects run through pytester) is not part of this suite.
collect_ignore = ["tests/plugin/data"]
