"""The filesystem model checker: a reference model of the filesystem a module profile describes, a
batch executor in the guest, and a Hypothesis state machine that explores operation sequences against
both (with remounts, module reloads, dropped caches and power cuts) and shrinks a discrepancy to a
short, replayable reproducer. Nothing here imports pytest.
"""
