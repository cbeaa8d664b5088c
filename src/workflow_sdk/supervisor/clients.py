"""The supervisor's engine clients, made in one place from ``[engine]``.

The hot calls (poll, complete, fail) go through the lean keep-alive client
(a quarter of ``requests``' CPU per call; ``requests`` when a proxy is set),
one per thread that makes them (the poller, the reporters); the rare calls
(stale checks, lease renewal) through ``RestEngineClient``. ``check`` asks
the engine's ``/healthz`` with the same token and TLS settings
(``tls_verify``, ``auth_headers``).

A client given to the ``Supervisor`` replaces both kinds. A subclass of
``EngineClients`` may make other ones (the benchmarks stamp poll answers).
Nothing here sends a request.
"""

from __future__ import annotations

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import make_worker_client
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.supervisor.config import EngineConfig


def tls_verify(engine: EngineConfig) -> bool | str:
    """What to verify the engine's certificate with: its CA bundle, or
    whether to verify at all (``verify_tls``)."""
    return engine.ca_bundle or engine.verify_tls


def auth_headers(engine: EngineConfig) -> dict[str, str]:
    """The headers that carry ``[engine]``'s token, if one is set."""
    return {"Authorization": f"Bearer {engine.token}"} if engine.token else {}


class EngineClients:
    """Makes the supervisor's engine clients (see the module doc).

    :param given: one client for every call instead (its threads share it; a
        client without ``get_instance``/``get_instance_history`` disables the
        stale-job checks, one without ``extend_lease`` lease renewal).
    """

    def __init__(self, engine: EngineConfig, given: WorkerEngineClient | None = None) -> None:
        self.engine = engine
        self.given = given

    def for_jobs(self) -> WorkerEngineClient:
        """A new client for one thread's hot calls (poll, complete, fail)."""
        if self.given is not None:
            return self.given
        engine = self.engine
        return make_worker_client(
            engine.url,
            engine.timeout,
            token=engine.token,
            verify=engine.verify_tls,
            ca_bundle=engine.ca_bundle,
        )

    def for_checks(self) -> object:
        """The client for the rare calls: stale checks and lease renewals
        (which of them it can make is looked up on it)."""
        if self.given is not None:
            return self.given
        engine = self.engine
        return RestEngineClient(
            engine.url, engine.timeout, token=engine.token, verify=tls_verify(engine)
        )


__all__ = ["EngineClients", "auth_headers", "tls_verify"]
