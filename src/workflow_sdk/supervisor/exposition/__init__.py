"""What the supervisor shows outside: metrics, titles, systemd, logs, counters.

What lives here: the /metrics server and its collector (``exporter``),
the metrics port's other paths (``endpoints``: /healthz, /readyz,
/status, /pause, /resume), their verdicts (``health``) and the snapshot
of the pool they read (``status``), prometheus_client's multiprocess
directory and files (``multiproc``), the process titles (``titles``),
systemd's notify protocol (``systemd``) and the announcer that speaks both
(``announcer``), the supervisor's counters (``stats``), its log formats
(``logs``), the exit statuses with the tables of what they and the signals
mean (``manual``: ``--help`` and the documentation print them); and the
other end of the metrics port, for the ``status``, ``pause`` and
``resume`` commands (``remote``).

Each module is a tool the loop (or a worker, or the command line) calls;
none decides anything about jobs or workers.

Import rule: modules here import the rest of ``workflow_sdk``, each other,
and the supervisor's ``config`` and ``checks``; never ``loop/``, ``io/`` or
``worker/`` (``tests/unit/test_import_rules.py``). ``logs``, ``titles`` and
``multiproc`` also run in workers.
"""
