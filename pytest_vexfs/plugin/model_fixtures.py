"""The `vexfs_model` fixture: the model checker's rig (module loaded, filesystem mounted, executor in
the guest, power cuts where the backend allows) around one test. A thin wrapper over pytest_vexfs.model."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.harness.session import TestSession, VMSlot
from pytest_vexfs.model.run import Budget, ModelRun, parse_params
from pytest_vexfs.model.target import ModelRig
from pytest_vexfs.module.build import BuiltModule
from pytest_vexfs.module.profile import ModuleProfile
from pytest_vexfs.plugin.fixtures import user_error


@pytest.fixture
def vexfs_model(request: pytest.FixtureRequest, vexfs_vm: TestSession, vexfs_slot: VMSlot,
                vexfs_built_module: BuiltModule, vexfs_profile: ModuleProfile) -> Generator[ModelRun, None, None]:
    """`vexfs_model.explore()` explores the module's filesystem against the reference model (budget from
    --vexfs-model-* / --vexfs-explore); `vexfs_model.replay(OPS)` replays a reproducer's sequence.
    Findings go to <rootdir>/.vexfs/model/. Marker `model_params(**load_params)` loads the module with
    extra parameters; `model_power_cuts(False)` turns power cuts off."""
    params_marker = request.node.get_closest_marker("model_params")
    params = dict(params_marker.kwargs) if params_marker else {}
    cuts_marker = request.node.get_closest_marker("model_power_cuts")
    power_cuts = bool(cuts_marker.args[0]) if cuts_marker and cuts_marker.args else True
    settings = vexfs_slot.settings
    budget = Budget.from_settings(settings.values, settings.sources)
    override = parse_params(str(settings.values.get("model_params") or ""))
    if override is not None:
        params = override
    try:
        rig = ModelRig(vexfs_slot, vexfs_vm, vexfs_built_module, vexfs_profile, power_cuts=power_cuts,
                       load_params=params).__enter__()
    except VexfsError as err:
        raise user_error(err) from None
    run = ModelRun(rig, budget, request.config.rootpath / ".vexfs" / "model", label=request.node.nodeid,
                   params=override, coverage=vexfs_slot.save_coverage if vexfs_slot.coverage is not None else None)
    for note in run.notes():
        request.node.user_properties.append(("model_note", note))
    try:
        yield run
    finally:
        rig.__exit__(None, None, None)


class SubtestResults:
    """Each subtest its own test result in JUnit and HTML: pytest's `subtests` report them under the
    test's node id, so junitxml writes one test case with several <failure> elements and pytest-html one
    row. A subtest's report (here: each finding of the model checker) gets the id `TEST[MSG]` and a teardown
    report of its own, which junitxml and pytest-html need to close a test case. Registered only where
    reports are written (not on an xdist worker, whose reports must keep the id of the test it runs)."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, None, None]:
        msg = getattr(getattr(report, "context", None), "msg", None)
        own = report.when == "call" and msg is not None and not report.nodeid.endswith(f"[{msg}]")
        if own:
            report.nodeid = f"{report.nodeid}[{msg}]"
        result = yield
        if own:
            closing = pytest.TestReport(report.nodeid, report.location, report.keywords, "passed", None, "teardown",
                                        duration=0.0, start=report.stop, stop=report.stop,
                                        user_properties=list(report.user_properties))
            for name in ("node", "worker_id"):  # xdist: junitxml keys a test case by node id and worker
                if hasattr(report, name):
                    setattr(closing, name, getattr(report, name))
            report_hook = self.config.hook.pytest_runtest_logreport
            report_hook(report=closing)
        return result

    def __init__(self, config: pytest.Config) -> None:
        self.config = config


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and not config.pluginmanager.has_plugin("vexfs-subtest-results"):
        config.pluginmanager.register(SubtestResults(config), "vexfs-subtest-results")
