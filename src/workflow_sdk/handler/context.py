"""The dict a handler receives for one job."""

from __future__ import annotations

from typing import Any

#: Keys of the handler context, in the order they are documented.
CONTEXT_KEYS = (
    "id",
    "jobType",
    "instanceId",
    "stepId",
    "stepExecutionId",
    "retriesRemaining",
    "variables",
    "lockExpiresAt",
)


def build_context(job: dict[str, Any]) -> dict[str, Any]:
    """The handler's view of a claimed job (as returned by ``parse_job``).

    ``stepId`` is ``""`` on engines that do not send it (the released one
    does not); ``variables`` is ``{}`` when the engine sent null.
    """
    return {
        "id": job["id"],
        "jobType": job["jobType"],
        "instanceId": job.get("instanceId", ""),
        "stepId": job.get("stepId") or "",
        "stepExecutionId": job.get("stepExecutionId") or "",
        "retriesRemaining": job.get("retriesRemaining", 0),
        "variables": job.get("variables") or {},
        "lockExpiresAt": job.get("lockExpiresAt"),
    }


__all__ = ["CONTEXT_KEYS", "build_context"]
