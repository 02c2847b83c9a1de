"""The model checker against the module under test: random operation sequences (with remounts,
module reloads, dropped caches and power cuts where the profile allows) compared with the reference
model; a discrepancy fails with the shrunk sequence and a reproducer file under .vexfs/model/."""



def test_model_exploration(vexfs_model, request):
    summary = vexfs_model.explore()
    request.node.user_properties.append(("model_summary", summary.describe()))
    print(f"model checker: {summary.describe()}")
    for note in vexfs_model.notes():
        print(f"model checker: {note}")
    assert summary.operations > 0
