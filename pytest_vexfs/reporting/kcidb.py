"""A run as KernelCI's KCIDB data (schema v5.3): one checkout (the code under test), one build (the module
against the run's kernel), a test per test, an issue per finding (one signature, one issue) and an incident
per failed test it caused. Validated with KernelCI's own I/O library, kcidb-io (`pip install
pytest-vexfs[kcidb]`), so a lab that submits to KernelCI can send it as it is. Nothing here imports pytest.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.module.identity import ModuleIdentity

#: the KCIDB schema version written (and validated against)
VERSION = (5, 3)
#: the CI system's name in every id (KCIDB: lowercase letters, digits and "_")
ORIGIN = "pytest_vexfs"
#: KCIDB's status of each test outcome
STATUS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "xfailed": "PASS",
          "xpassed": "FAIL", "interrupted": "MISS"}
_PATH_PART = re.compile(r"[^a-zA-Z0-9_-]+")
MAX_EXCERPT = 16384


class KcidbError(VexfsError):
    """The run cannot be exported (no such run, kcidb-io missing, or the data fails its validation)."""


def test_path(nodeid: str) -> str:
    """A test's node id as a KCIDB path: dot-separated names of letters, digits, "_" and "-"."""
    parts = [_PATH_PART.sub("_", part).strip("_") for part in re.split(r"::|/|\.py(?=::|$)|\[|\]", nodeid)]
    return ".".join(part for part in parts if part)


def _iso(text: Any) -> str | None:
    return str(text) if text else None


def run_to_kcidb(document: dict[str, Any], origin: str = ORIGIN) -> dict[str, Any]:
    """The KCIDB data of one run JSON document (`pytest_vexfs.reporting.results.run_document`)."""
    run = document["run"]
    environment = document.get("environment", {})
    checkout_id = f"{origin}:{run['run_id']}"
    build_id = f"{checkout_id}:build"
    checkout: dict[str, Any] = {"id": checkout_id, "origin": origin, "tree_name": run.get("env") or "default",
                                "start_time": _iso(run.get("started_at")), "valid": True,
                                "misc": {"code_version": run.get("code_version"), "host": run.get("host"),
                                         "env": run.get("env")}}
    checkout.update(_module_checkout(document.get("module"), checkout["misc"]))
    build: dict[str, Any] = {"id": build_id, "checkout_id": checkout_id, "origin": origin, "architecture": "x86_64",
                             "start_time": _iso(run.get("started_at")),
                             "config_name": environment.get("kernel_release") or "unknown",
                             "misc": {k: v for k, v in environment.items() if v}}
    tests: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    issues: dict[str, dict[str, Any]] = {}
    causes = {test: cause for cause in document.get("causes", []) for test in cause.get("tests", [])}
    for index, test in enumerate(document.get("tests", [])):
        test_id = f"{checkout_id}:test:{index}"
        props = test.get("properties", {})
        entry: dict[str, Any] = {"id": test_id, "build_id": build_id, "origin": origin,
                                 "path": test_path(test["nodeid"]), "status": STATUS.get(test["outcome"], "MISS"),
                                 "duration": float(test.get("duration") or 0.0),
                                 "comment": test["nodeid"], "misc": {"domain": test.get("domain")}}
        if props.get("kernel_release") or props.get("vm_id"):
            entry["environment"] = {"comment": f"{props.get('backend', 'qemu')} VM {props.get('vm_id', '')} "
                                               f"({props.get('accelerator', '')}), kernel "
                                               f"{props.get('kernel_release', '')}".strip()}
        if test.get("message"):
            entry["log_excerpt"] = test["message"][:MAX_EXCERPT]
        tests.append(entry)
        cause = causes.get(test["nodeid"])
        if cause is not None:
            issue_id = f"{origin}:{hashlib.sha256(cause['signature'].encode()).hexdigest()[:16]}"
            issues.setdefault(issue_id, {"id": issue_id, "version": 1, "origin": origin,
                                         "report_subject": cause["reason"][:400], "comment": cause["signature"],
                                         "culprit": {"code": cause.get("kind") != "error", "tool": False,
                                                     "harness": cause.get("kind") == "error"},
                                         "misc": {"kind": cause.get("kind"), "count": cause.get("count")}})
            incidents.append({"id": f"{test_id}:incident", "origin": origin, "issue_id": issue_id,
                              "issue_version": 1, "test_id": test_id, "build_id": build_id, "present": True})
    return {"version": {"major": VERSION[0], "minor": VERSION[1]}, "checkouts": [checkout], "builds": [build],
            "tests": tests, "issues": list(issues.values()), "incidents": incidents}


def _module_checkout(section: dict[str, Any] | None, misc: dict[str, Any]) -> dict[str, Any]:
    """The checkout's fields the module's identity gives (the run JSON's ``module``): the tree is the module,
    its git commit, branch and https repository, and its source digest (a dirty tree's commit lacks the
    changes the digest covers)."""
    if not section:
        return {}
    module = ModuleIdentity.from_dict(section)
    fields: dict[str, Any] = {"tree_name": module.name, "comment": f"{module.name} {module.version}".strip(),
                              "misc": {**misc, "module_source_digest": module.source_digest,
                                       "module_dirty": module.dirty}}
    if module.commit:
        fields.update(git_commit_hash=module.commit, git_commit_name=module.commit_name)
    if module.branch:
        fields["git_repository_branch"] = module.branch
    if module.repository_url:
        fields["git_repository_url"] = module.repository_url
    return fields


def validate(data: dict[str, Any]) -> None:
    """Validate `data` with kcidb-io against the schema version it names; KcidbError if it fails."""
    try:
        from kcidb_io import schema  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise KcidbError("validating KCIDB data needs kcidb-io, KernelCI's I/O library",
                         hint="pip install 'pytest-vexfs[kcidb]' (or pip install kcidb-io)") from None
    version = getattr(schema, f"V{data['version']['major']}_{data['version']['minor']}")
    try:
        version.validate(data)
    except Exception as err:  # noqa: BLE001 - jsonschema's ValidationError, whichever version is installed
        raise KcidbError(f"the KCIDB data does not validate against schema v{version.major}.{version.minor}: "
                         f"{str(err).splitlines()[0]}") from err


def find_run_document(run: str, results_dir: Path) -> Path:
    """The run JSON of `run`: a path, or a run id under `results_dir` (.vexfs/results)."""
    path = Path(run)
    if path.is_file():
        return path
    candidate = results_dir / f"{run}.json"
    if candidate.is_file():
        return candidate
    raise KcidbError(f"no run JSON {run!r} (neither a file nor {candidate})",
                     hint="pass the run's JSON file, or its run id with the results directory (--results-dir)")


def export(run: str, results_dir: Path) -> dict[str, Any]:
    """The validated KCIDB data of a run (its JSON path or id)."""
    data = run_to_kcidb(json.loads(find_run_document(run, results_dir).read_text()))
    validate(data)
    return data
