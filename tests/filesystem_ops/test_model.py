"""The model checker against the module under test: random operation sequences (with remounts, module
reloads, dropped caches and power cuts where the profile allows) compared with the reference model.
Exploration goes on past each finding within the budget; every distinct finding (a discrepancy shrunk and
written as a reproducer under .vexfs/model/, an operation the module does not support, a limit its
profile does not declare) is a test result of its own (a subtest, its own test case in JUnit and HTML)."""

import pytest

#: the model's paths, probes and sequences use directories: a flat filesystem's profile leaves them out
pytestmark = pytest.mark.requires("directories")


def test_model_exploration(vexfs_model, request, subtests):
    summary = vexfs_model.explore()
    request.node.user_properties.append(("model_summary", summary.describe()))
    request.node.user_properties.append(("model_findings", summary.findings_line()))
    print(f"model checker: {summary.describe()}")
    for note in vexfs_model.notes():
        print(f"model checker: {note}")
    print(f"model checker: {summary.findings_line()}")
    for finding in summary.findings:
        with subtests.test(msg=finding.signature):
            raise finding.error
    assert summary.operations > 0
