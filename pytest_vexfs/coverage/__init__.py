"""Coverage of the module under test (``--vexfs-coverage``): gcov counters read from the guest after each
test (`gcov`), the run's HTML/Cobertura report and test -> lines map written with gcovr (`report`), and the
model checker's corpus of sequences that reached new code (`corpus`). Nothing here imports pytest."""
