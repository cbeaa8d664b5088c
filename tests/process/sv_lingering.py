"""Handlers whose module starts a non-daemon thread at import, as many client
libraries do (a connection pool's keep-alive, a metrics pusher...).

Python waits for non-daemon threads before a process ends: a worker that
left that to Python after its channel closed never exited. ``noop`` is the
only handler; the thread waits for an event nobody sets.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

_never = threading.Event()
threading.Thread(target=_never.wait, name="client-keepalive", daemon=False).start()


@registry.register("noop")
def noop(job: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid()}
