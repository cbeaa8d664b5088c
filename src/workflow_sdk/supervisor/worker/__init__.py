"""The worker process: what runs in the fork server and in each worker.

What lives here: the worker's main (``main``: imports the handlers, runs
one job at a time), the messages on its channel (``protocol``), handler
loading (``handlers``), the fork server's preload and init modules
(``preload``, ``forkserver_init``) and the signal dispositions of both
(``sigpolicy``).

Nothing of the parent: a worker never talks to the engine, never sees the
loop's state, and needs none of its modules.

Import rule: modules here import the rest of ``workflow_sdk`` (outside the
supervisor), each other, and from ``exposition/`` only what also runs in a
worker: ``logs``, ``titles`` and ``multiproc``. Never ``loop/``, ``io/``,
the other ``exposition`` modules or the supervisor's top-level modules
(``tests/unit/test_import_rules.py``).
"""
