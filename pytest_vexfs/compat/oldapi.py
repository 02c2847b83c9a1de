"""The old framework's VMManager and ResultCollector, over the harness, so that domain classes written
against a DomainBase of the user's own tree run unchanged.

Such a class is constructed as ``Domain(vm_manager, result_collector)`` and awaits, for example,
``vm_manager.create_vm(config)`` in ``setup_domain`` and ``vm_manager.execute_command(vm_id, command,
timeout)`` in its tests. Here every VM id names the harness's VM of the running test: ``create_vm``
boots nothing (the harness already did, and restores or replaces it after faults), ``destroy_vm`` frees
nothing the harness still needs, and every command runs through the test's session, so kernel-log
markers, hang timeouts and fault verdicts apply as for any other test. Nothing here imports pytest.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

#: the names of the old framework's classes this layer recognises in a user's tree
OLD_BASE_NAME = "DomainBase"


def is_old_style_domain(cls: type, ours: type) -> bool:
    """True for a class deriving from a `DomainBase` that is not the harness's own and whose constructor
    takes (vm_manager, result_collector)."""
    if not inspect.isclass(cls) or issubclass(cls, ours):
        return False
    if not any(base.__name__ == OLD_BASE_NAME for base in cls.__mro__[1:]):
        return False
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


class VMManagerAdapter:
    """The old `VMManager` API on the harness's VM of the running test (`session`, set per test)."""

    def __init__(self) -> None:
        self.session: Any = None      # the running test's TestSession
        self.configs: dict[str, Any] = {}
        self.destroyed: set[str] = set()

    def _vm_id(self) -> str:
        if self.session is None:
            raise RuntimeError("no VM: the old VMManager is only usable inside a domain's setup and tests")
        return str(self.session.vm.name)

    def _check(self, vm_id: str) -> None:
        current = self._vm_id()
        if vm_id != current and vm_id not in self.configs:
            raise KeyError(f"unknown VM id {vm_id!r} (this test's VM is {current!r})")

    async def create_vm(self, config: Any = None) -> str:
        """The id of the test's VM (the harness boots and replaces VMs itself)."""
        vm_id = self._vm_id()
        self.configs[vm_id] = config
        self.destroyed.discard(vm_id)
        return vm_id

    async def destroy_vm(self, vm_id: str) -> bool:
        """Forget the VM; the harness tears it down when the run (or a fault) is over."""
        self.destroyed.add(vm_id)
        return True

    async def get_vm_status(self, vm_id: str) -> dict[str, Any]:
        alive = self.session is not None and self.session.vm.is_alive() and vm_id not in self.destroyed
        return {"vm_id": vm_id, "status": "running" if alive else "stopped", "running": alive}

    async def execute_command(self, vm_id: str, command: str, timeout: float | None = None) -> dict[str, Any]:
        """Run `command` in the VM; returns {"exit_code", "stdout", "stderr", "success", "duration"}."""
        self._check(vm_id)
        start = time.monotonic()
        result = self.session.run(command, timeout=timeout)
        return {"exit_code": result.exit_status, "return_code": result.exit_status, "stdout": result.stdout,
                "stderr": result.stderr, "success": result.exit_status == 0,
                "duration": round(time.monotonic() - start, 3)}

    async def copy_file_to_vm(self, vm_id: str, local_path: str | Path, remote_path: str) -> bool:
        self._check(vm_id)
        self.session.put(local_path, remote_path)
        return True

    async def copy_file_from_vm(self, vm_id: str, remote_path: str, local_path: str | Path) -> bool:
        self._check(vm_id)
        self.session.get(remote_path, local_path)
        return True

    async def list_active_vms(self) -> list[str]:
        vm_id = self._vm_id()
        return [] if vm_id in self.destroyed else [vm_id]

    async def cleanup_all_vms(self) -> None:
        self.destroyed.update(self.configs)


class ResultCollectorAdapter:
    """The old `ResultCollector`: keeps what a domain stores; the harness's own reports are pytest's."""

    def __init__(self) -> None:
        self.results: dict[str, list[Any]] = {}

    async def store_domain_results(self, domain_name: str, results: Any) -> None:
        stored = self.results.setdefault(domain_name, [])
        stored.extend(results if isinstance(results, list) else [results])

    async def get_domain_results(self, domain_name: str) -> list[Any]:
        return list(self.results.get(domain_name, []))

    async def generate_summary_report(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for domain, results in self.results.items():
            counts: dict[str, int] = {}
            for result in results:
                status = status_name(getattr(result, "status", None)) or "unknown"
                counts[status] = counts.get(status, 0) + 1
            summary[domain] = {"total": len(results), **counts}
        return summary

    async def export_results(self, output_path: str | Path | None = None, format: str = "json") -> str:
        data = {domain: [getattr(r, "__dict__", r) for r in results] for domain, results in self.results.items()}
        text = json.dumps(data, indent=2, default=str)
        if output_path:
            Path(output_path).write_text(text)
        return text


def status_name(status: Any) -> str:
    """PASSED/FAILED/SKIPPED/ERROR of an old TestStatus member (or a string), lower case; "" if none."""
    if status is None:
        return ""
    name = getattr(status, "name", None) or getattr(status, "value", None) or status
    return str(name).lower()
