"""The chaos suite: a seeded, replayable run of real faults against real processes.

``scripts/chaos`` is the entry point (``python -m chaos`` from the repository
root). The modules: ``handlers`` (what the supervisors under test run, each
run written to a run log), ``workload`` (the workflows, their marks and what
each instance must end as), ``schedule`` (the faults drawn from the seed),
``toxiproxy`` (the network proxy), ``cluster`` (the processes: supervisors,
broker, proxies), ``inject`` (applying each fault), ``audit`` (the
must-be-zero figures, from the run log and the engine), ``report`` (tables
and JSON) and ``run`` (the whole run).
"""
