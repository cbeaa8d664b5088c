"""Handlers of the security process tests (tests/process/test_security.py).

``env`` answers which of the secrets' variables its worker can see;
``forge`` fails with an error message that tries to forge a log line.
"""

from __future__ import annotations

import os
from typing import Any

from workflow_sdk import HandlerRegistry, NonRetryableError

registry = HandlerRegistry()

#: A failure message with a line that looks like a record of its own, a
#: journald priority prefix and a terminal escape.
FORGED = "declined\n2099-01-01 00:00:00,000 CRITICAL workflow_sdk.supervisor[1]: forged\x1b[2J"
WATCHED = ("ROCHALLOR_ENGINE_TOKEN", "SEC_TOKEN", "SEC_KAFKA_PW")


@registry.register("env")
def env(job: dict[str, Any]) -> dict[str, Any]:
    return {"seen": sorted(name for name in WATCHED if name in os.environ), "pid": os.getpid()}


@registry.register("forge")
def forge(job: dict[str, Any]) -> None:
    if job["variables"].get("how") == "raise":
        raise ValueError(FORGED)
    raise NonRetryableError(FORGED)


@registry.register("noop")
def noop(job: dict[str, Any]) -> None:
    return None
