"""Lease renewal from the supervisor's parent, on engines that can extend a lease.

The released engine's lease is fixed (30 s); newer engines add
``POST /v1/jobs/{id}/heartbeat`` ("Lease extension" in the contract). The
parent renews the lease of every running job before it ends. It never runs
handler code, so renewal keeps working while a handler holds the GIL in a
long C call, where a heartbeat thread inside the worker would stall.

``probe`` tells at start-up whether the engine can renew at all; ``renew``
makes one renewal and classifies the answer. Both run on an errand thread,
never on the main loop.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol, cast

from workflow_sdk.errors import ConfigError, EngineClientError, LeaseLostError, WorkflowSDKError
from workflow_sdk.lease import DEFAULT_LEASE_SECONDS
from workflow_sdk.supervisor.config import SupervisorConfig

log = logging.getLogger("workflow_sdk.supervisor")


class LeaseRenewer(Protocol):
    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None: ...


class RenewalResult(enum.Enum):
    """Label values of ``workflow_sdk_lease_renewals_total{result}``."""

    ACCEPTED = "accepted"
    #: a transient error: try again, inside the current lease
    RETRY = "retry"
    #: the engine refused: the job may already run on another worker
    LEASE_LOST = "lease_lost"
    #: the engine has no heartbeat route
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class RenewalAnswer:
    result: RenewalResult
    #: ``time.monotonic()`` just before the request was sent: the renewed
    #: lease surely ends no later than this plus its length.
    sent_at: float
    detail: str = ""


class Support(enum.Enum):
    YES = "yes"
    NO = "no"
    #: the engine could not be asked (down, timeout)
    UNKNOWN = "unknown"


def renew(client: LeaseRenewer, worker_id: str, job_id: str, lease_seconds: int) -> RenewalAnswer:
    sent_at = time.monotonic()
    try:
        answer = client.extend_lease(job_id, worker_id, lease_seconds)
    except LeaseLostError as exc:
        return RenewalAnswer(RenewalResult.LEASE_LOST, sent_at, exc.message)
    except WorkflowSDKError as exc:
        # Transient or not, the job is ours until the engine says otherwise;
        # the lease end decides how long we keep trying.
        return RenewalAnswer(RenewalResult.RETRY, sent_at, str(exc))
    if answer is None:
        return RenewalAnswer(RenewalResult.UNSUPPORTED, sent_at, "no heartbeat route")
    if answer.get("accepted") is False:
        return RenewalAnswer(RenewalResult.LEASE_LOST, sent_at, "renewal not accepted")
    return RenewalAnswer(RenewalResult.ACCEPTED, sent_at)


def probe(client: LeaseRenewer, worker_id: str) -> tuple[Support, str]:
    """Does the engine have the heartbeat route? Asks about a job that does
    not exist: an engine with the route refuses it (lease lost); a released
    engine answers its plain-text 404."""
    try:
        answer = client.extend_lease(f"rochallor-probe-{uuid.uuid4()}", worker_id, 0)
    except LeaseLostError:
        return Support.YES, ""
    except EngineClientError as exc:
        return Support.UNKNOWN, str(exc)
    except WorkflowSDKError as exc:
        return Support.UNKNOWN, str(exc)
    return (Support.NO, "") if answer is None else (Support.YES, "")


class RenewalUnavailableError(WorkflowSDKError):
    """``lease_renewal = "required"`` and the engine could not be asked."""


def plan_renewal(config: SupervisorConfig, client: object) -> LeaseRenewer | None:
    """The client to renew leases with, as ``[supervisor] lease_renewal`` says,
    or None. Raises ``ConfigError`` when renewal is required and the engine
    cannot renew, ``RenewalUnavailableError`` when it cannot be asked."""
    if config.engine.dispatch == "kafka":
        return None  # Kafka-dispatched jobs have no lease
    mode = config.supervisor.lease_renewal
    if mode == "off" or not hasattr(client, "extend_lease"):
        if mode == "required":
            raise ConfigError(
                'supervisor.lease_renewal: "required", but the engine client cannot extend leases'
            )
        warn_long_limits(config, "lease renewal is off")
        return None
    renewer = cast(LeaseRenewer, client)
    support, detail = probe(renewer, config.supervisor.worker_id)
    if support is Support.YES:
        log.info("lease renewal on: the engine extends leases; running jobs are renewed")
        return renewer
    if mode == "required":
        if support is Support.NO:
            raise ConfigError(
                f'supervisor.lease_renewal: "required", but the engine at {config.engine.url} '
                "cannot extend leases (no heartbeat route: a released engine); set "
                'lease_renewal = "auto" to run without renewal'
            )
        raise RenewalUnavailableError(f"cannot ask the engine whether it renews leases: {detail}")
    why = (
        "the engine cannot extend leases"
        if support is Support.NO
        else f"the engine could not be asked ({detail})"
    )
    log.info("lease renewal off: %s", why)
    warn_long_limits(config, why)
    return None


def warn_long_limits(config: SupervisorConfig, why: str) -> None:
    """Say once what a time limit beyond the lease means without renewal."""
    lease = DEFAULT_LEASE_SECONDS
    limits = [config.supervisor.job_timeout] + [config.job_timeout(t) for t in config.job_types]
    if any(limit == 0 or limit > lease for limit in limits):
        log.warning(
            "%s: a job that runs longer than the engine's %g s lease may be handed out "
            "again. This supervisor does not run it twice (re-deliveries are coalesced, "
            "one result is sent), but another supervisor polling the same job type may "
            "run it at the same time (see docs/long-jobs.md)",
            why,
            lease,
        )


__all__ = [
    "LeaseRenewer",
    "RenewalAnswer",
    "RenewalResult",
    "RenewalUnavailableError",
    "Support",
    "plan_renewal",
    "probe",
    "renew",
    "warn_long_limits",
]
