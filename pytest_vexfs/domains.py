"""The test domains: one table, used for directories, markers, report sections and metric labels."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

#: the six domains of the suite; a project adds its own with the ini key `vexfs_domains`
DOMAINS = ("kernel_module", "filesystem_ops", "vector_ops", "performance", "safety", "integration")

#: names the old shell-script framework gave the same domains; accepted where a user names domains
#: (ansible/playbooks/run_domain_tests.yml's `domains=[...]`), never written anywhere
DOMAIN_ALIASES: dict[str, str] = {
    "filesystem_operations": "filesystem_ops",
    "vector_operations": "vector_ops",
}


def canonical_domain(name: str, domains: Sequence[str] = DOMAINS) -> str:
    """The domain `name` stands for: itself, or the domain an old name is an alias of; ValueError if none."""
    canonical = DOMAIN_ALIASES.get(name, name)
    if canonical not in domains:
        old = ", ".join(f"{old} (= {new})" for old, new in DOMAIN_ALIASES.items())
        raise ValueError(f"unknown test domain {name!r}; domains: {', '.join(domains)}; old names: {old}")
    return canonical


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_vexfs.domains [NAME...]``: the canonical names as a JSON list (all without NAMEs);
    ``--table``: ``{"domains": [...], "aliases": {old: new}}`` (read by the Ansible playbooks)."""
    names = list(sys.argv[1:] if argv is None else argv)
    if names == ["--table"]:
        print(json.dumps({"domains": list(DOMAINS), "aliases": DOMAIN_ALIASES}))
        return 0
    try:
        result = [canonical_domain(n) for n in names] if names else list(DOMAINS)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(list(dict.fromkeys(result))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
