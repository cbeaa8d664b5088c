"""The parent's threads that talk to the engine and to Kafka.

What lives here: the job sources (``source``: the protocol and the thread
behind it; ``poller``: the engine's poll; ``kafka_feeder``: Kafka dispatch),
the reporter threads (``reporter``), the call thread that runs the main
loop's engine calls (``call_thread``: stale checks, lease renewals) and the
renewal calls themselves (``renewal``).

Each works on threads of its own and hands answers back to the main loop
through queues and a wake-up call: the loop never waits for the network.
They hold no policy of the loop: what an answer means is decided in
``loop/``.

Import rule: modules here import the rest of ``workflow_sdk``, the
supervisor's ``config`` and each other; never ``loop/``, ``worker/`` or
``exposition/`` (``tests/unit/test_import_rules.py``).
"""
