"""The engine operations the Runner and the supervisor rely on.

``RestEngineClient`` implements it over HTTP; users may pass anything else
with these methods (a gRPC client, a recording fake in their tests).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class WorkerEngineClient(Protocol):
    """The three calls a worker makes: claim, complete, fail."""

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1, *, lease_seconds: int = 0
    ) -> list[dict[str, Any]]:
        """Claim up to ``max_jobs`` jobs; each is a job dict as in the contract.

        ``lease_seconds`` (0 = the engine's default, not sent) asks engines
        with lease extension for that lease; the Runner and the supervisor
        pass it only when renewal is on and a lease length is configured.
        """
        ...

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None: ...

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None: ...


@runtime_checkable
class EngineClient(WorkerEngineClient, Protocol):
    """Every operation of the engine's REST contract."""

    def upload_definition(self, definition: dict[str, Any]) -> dict[str, Any]: ...

    def get_definition(self, definition_id: str) -> dict[str, Any]: ...

    def get_definition_version(self, definition_id: str, version: int) -> dict[str, Any]: ...

    def list_definitions(
        self, keyword: str = "", page: int = 0, page_size: int = 20
    ) -> dict[str, Any]: ...

    def start_instance(
        self,
        definition_id: str,
        variables: dict[str, Any] | None = None,
        definition_version: int | None = None,
        business_key: str | None = None,
    ) -> dict[str, Any]: ...

    def get_instance(self, instance_id: str) -> dict[str, Any]: ...

    def list_instances(
        self,
        definition_id: str | None = None,
        status: str | None = None,
        business_key: str | None = None,
        page: int = 0,
        page_size: int = 20,
    ) -> dict[str, Any]: ...

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]: ...

    def cancel_instance(self, instance_id: str, reason: str = "") -> dict[str, Any]: ...

    def complete_user_task(
        self,
        instance_id: str,
        step_id: str,
        completed_by: str = "",
        result: dict[str, Any] | None = None,
    ) -> None: ...

    def signal(
        self, instance_id: str, wait_step_id: str, variables: dict[str, Any] | None = None
    ) -> None: ...

    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None:
        """Renew a job's lease (newer engines only; see "Lease extension" in
        the contract). ``{"accepted", "lockExpiresAt"}``, or ``None`` when the
        engine cannot extend leases; raises ``LeaseLostError`` on a 409."""
        ...

    def health(self) -> bool: ...

    def close(self) -> None: ...


__all__ = ["EngineClient", "WorkerEngineClient"]
