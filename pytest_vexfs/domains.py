"""The test domains: one table, used for directories, markers, report sections and metric labels."""

from __future__ import annotations

#: the six domains of the suite; a project adds its own with the ini key `vexfs_domains`
DOMAINS = ("kernel_module", "filesystem_ops", "vector_ops", "performance", "safety", "integration")
