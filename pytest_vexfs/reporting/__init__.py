"""Results people read: JUnit, HTML, JSON, a results history, trends and Prometheus metrics.

The modules here work without pytest (``results``, ``history``, ``trend``, ``metrics``, ``junit``,
``redact``); ``plugin`` wires them to pytest hooks and ``cli`` is the ``vexfs-report`` command.
"""
