"""Handlers whose module keeps its worker from exiting even when the worker
ends deliberately: a non-daemon thread, and a logging handler whose flush at
shutdown never returns (a log shipper waiting for an unreachable server).

Only the supervisor's escalation (SIGTERM, then SIGKILL) ends such a worker.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

_never = threading.Event()
threading.Thread(target=_never.wait, name="client-keepalive", daemon=False).start()


class _ShipperHandler(logging.Handler):
    """Ships nothing; its final flush waits for ever."""

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        _never.wait()
        super().close()


logging.getLogger("sv_stuck_exit.shipper").addHandler(_ShipperHandler())


@registry.register("noop")
def noop(job: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid()}
