"""The parent's main loop and the decisions it acts on.

What lives here: the arbiter (``arbiter.Supervisor``: the phase, the loop,
the only place that starts a worker), and what it decides with: the job
ledger (``ledger``), the worker pool and its slots (``pool``, ``slots``), the
claim plan (``claim_plan``), the intake (``intake``: the job source, polls,
claims, dispatch to idle workers), the report desk (``reports``: outcomes to
the reporter threads and their answers back), the stops (``stops``: time
limits, memory kills, stale and lease-lost jobs, escalation), a worker's
lifecycle (``lifecycle``), the drain, the watch over running jobs
(``watch``), signals and the wait set, pausing and resuming intake
(``control``), what is published (``publisher``) and the start-up wiring
(``startup``).

Decisions are objects that return verdicts and never fork or send a request
themselves, so each has a unit test without a process.

Import rule: this package may import everything of the supervisor except
``cli`` (which imports it); nothing in ``io/``, ``worker/`` or
``exposition/`` imports it (``tests/unit/test_import_rules.py``).
"""
