"""The test harness beneath the pytest plugin, over running guests: one VM slot per worker and one session
per test (`session.py`: fault attribution, verdicts, kernel checks), hang handling (`watch.py`: a running
command's stacks; `pace.py`: how much slower a kernel flavour is), and what a test did to the harness
itself (`tampering.py`). Nothing here imports pytest."""
