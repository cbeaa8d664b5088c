"""The Runner's constructor arguments, checked: a clear error for each bad one.

Kept apart from the Runner so the rules read in one place: a bad argument
raises ``ValueError`` at construction, before any thread or engine call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from workflow_sdk.handler.registry import HandlerRegistry

log = logging.getLogger("workflow_sdk.runner")

#: The engine's accepted range for a requested lease (0 = its default).
LEASE_RANGE = (5, 3600)


def check_runner_options(
    client: object,
    registry: HandlerRegistry,
    job_types: Iterable[str] | None,
    *,
    parallelism: int,
    poll_interval: float,
    drain_timeout: float,
    report_deadline: float,
    heartbeat: bool,
    lease_seconds: int | None,
    heartbeat_interval: float | None,
    stale_check_interval: float,
) -> list[str]:
    """The job types to claim (the registry's by default); raises ValueError
    for a bad argument, and warns about job types without a handler."""
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise ValueError(f"parallelism must be an integer >= 1, got {parallelism!r}")
    if not poll_interval > 0:
        raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
    if drain_timeout < 0:
        raise ValueError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
    if report_deadline < 0:
        raise ValueError(f"report_deadline must be >= 0, got {report_deadline!r}")
    check_lease_options(client, heartbeat, lease_seconds, heartbeat_interval)
    if not stale_check_interval >= 0:
        raise ValueError(
            f"stale_check_interval must be >= 0 (0 = off), got {stale_check_interval!r}"
        )
    types = list(registry.job_types() if job_types is None else job_types)
    if not types:
        raise ValueError(
            "the Runner has no job types to claim: register at least one handler "
            "in the HandlerRegistry (or pass job_types)"
        )
    for job_type in types:
        if not isinstance(job_type, str) or not job_type:
            raise ValueError(f"job types must be non-empty strings, got {job_type!r}")
    missing = [t for t in types if t not in registry]
    if missing:
        log.warning(
            "no handler registered (yet) for job types %s: their jobs will be failed "
            "retryable until one is",
            missing,
        )
    return types


def check_lease_options(
    client: object, heartbeat: bool, lease_seconds: int | None, interval: float | None
) -> None:
    """Lease renewal's arguments: only with ``heartbeat``, a client that can
    renew, a lease the engine accepts, and renewals inside the lease."""
    if not heartbeat:
        if lease_seconds is not None or interval is not None:
            raise ValueError("lease_seconds and heartbeat_interval need heartbeat=True")
        return
    if not callable(getattr(client, "extend_lease", None)):
        raise ValueError(
            f"heartbeat=True needs a client with extend_lease(); {type(client).__name__} has none"
        )
    if lease_seconds is not None and (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, int)
        or not LEASE_RANGE[0] <= lease_seconds <= LEASE_RANGE[1]
    ):
        raise ValueError(
            f"lease_seconds must be an integer from {LEASE_RANGE[0]} to {LEASE_RANGE[1]} "
            f"(or None for the engine's default), got {lease_seconds!r}"
        )
    if interval is not None:
        if not interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {interval!r}")
        if lease_seconds is not None and interval >= lease_seconds:
            raise ValueError(
                f"heartbeat_interval ({interval}) must be shorter than lease_seconds "
                f"({lease_seconds}): a renewal must land before the lease ends"
            )


__all__ = ["LEASE_RANGE", "check_lease_options", "check_runner_options"]
