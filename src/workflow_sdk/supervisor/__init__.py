"""The worker supervisor: a pool of forked worker processes fed by one parent.

Where things live (each folder's ``__init__`` says what it may import):

- ``loop/``: the parent's main loop (``arbiter.Supervisor``) and the
  decisions it acts on: ledger, pool and slots, claim plan, intake, report
  desk, stops, lifecycle, drain, watch, signals, start-up.
- ``io/``: the parent's threads that talk to the engine and to Kafka: job
  sources (poller, Kafka feeder), reporters, the call thread, renewals.
- ``worker/``: the worker process and the fork server: nothing of the parent.
- ``exposition/``: what is shown outside: /metrics, multiprocess metric
  files, process titles, systemd, counters, log formats.
- At the top: the command line (``cli``), the configuration (``config``,
  ``security``), ``check``'s verdicts (``checks``), the engine clients
  (``clients``) and SIGHUP's reload (``reload``).
"""

from workflow_sdk.supervisor.config import SupervisorConfig, load_config, parse_config
from workflow_sdk.supervisor.loop.arbiter import (
    EXIT_BOOT_FAILED,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
    Supervisor,
)

__all__ = [
    "EXIT_BOOT_FAILED",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_OK",
    "Supervisor",
    "SupervisorConfig",
    "load_config",
    "parse_config",
]
