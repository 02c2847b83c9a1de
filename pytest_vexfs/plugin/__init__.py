"""The pytest wiring: hooks (options, markers, verdicts), fixtures, collection of legacy tests, reports."""
