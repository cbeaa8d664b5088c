"""What the supervisor builds before its first worker (``loop.startup``), and the
one factory of its engine clients (``clients``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from typing import Any

import pytest

from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import ConfigError, EngineConnectionError, LeaseLostError
from workflow_sdk.supervisor.clients import EngineClients, auth_headers, tls_verify
from workflow_sdk.supervisor.config import EngineConfig, parse_config
from workflow_sdk.supervisor.exposition.announcer import Announcer
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.exposition.systemd import SystemdNotifier
from workflow_sdk.supervisor.io.poller import Poller, PollOpener
from workflow_sdk.supervisor.io.renewal import RenewalUnavailableError
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.startup import (
    default_opener,
    fork_server_preload,
    open_rooms,
    plan_checks,
)
from workflow_sdk.supervisor.worker.main import ENV_PRELOAD_MODULES


def config(**supervisor: Any) -> Any:
    return parse_config(
        {"supervisor": {"handlers": ["app.handlers:registry", "other:reg"], **supervisor}},
        environ={},
    )


class Reader:
    """A client that reads instances (stale checks) and, when asked, renews."""

    def __init__(self, renew: Any = None) -> None:
        self.renew = renew

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        return {}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return []

    def extend_lease(self, job_id: str, worker_id: str, lease_seconds: int = 0) -> Any:
        if isinstance(self.renew, Exception):
            raise self.renew
        return self.renew


def no_forks(spec: Any) -> Any:
    raise OSError("no worker is started in these tests")


def test_the_fork_server_preloads_the_worker_and_handlers_only_on_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV_PRELOAD_MODULES, raising=False)
    plain = fork_server_preload(config().supervisor)
    assert plain == [
        "workflow_sdk.supervisor.worker.forkserver_init",
        "workflow_sdk.supervisor.worker.main",
    ]
    assert all(importlib.util.find_spec(name) is not None for name in plain)
    preloading = fork_server_preload(config(preload_handlers=True).supervisor)
    assert preloading[-1] == "workflow_sdk.supervisor.worker.preload"
    assert importlib.util.find_spec(preloading[-1]) is not None
    assert os.environ[ENV_PRELOAD_MODULES] == "app.handlers,other"


def test_a_client_that_reads_instances_is_the_stale_checks_reader() -> None:
    ledger = JobLedger(2, stale_interval=5.0)
    client = Reader(renew=None)  # a released engine: no heartbeat route
    renewer, reader = plan_checks(config(), client, ledger)
    assert (renewer, reader) == (None, client)
    assert ledger.stale_interval == 5.0 and ledger.renew_every is None


def test_a_client_that_cannot_read_instances_turns_the_stale_checks_off() -> None:
    ledger = JobLedger(2, stale_interval=5.0)
    assert plan_checks(config(), object(), ledger) == (None, None)
    assert ledger.stale_interval == 0.0


def test_an_engine_that_renews_puts_the_ledger_on_renewals() -> None:
    ledger = JobLedger(2)
    client = Reader(renew=LeaseLostError(409, "no such job"))  # the route exists
    renewer, _ = plan_checks(config(lease_renewal_interval=4.0), client, ledger)
    assert renewer is client and ledger.renew_every == 4.0


def test_the_default_source_is_a_poller_asking_for_the_lease_only_when_renewing() -> None:
    clients = EngineClients(EngineConfig(url="http://127.0.0.1:9"))
    opener = default_opener(config(lease_seconds=60), clients, renewing=True)
    assert isinstance(opener, PollOpener)
    poller = opener(("a",), lambda: None)
    try:
        assert isinstance(poller, Poller) and poller.following is None
        assert poller._lease_seconds == 60
    finally:
        poller.close(join_timeout=5.0)
    not_renewing = default_opener(config(lease_seconds=60), clients, renewing=False)
    poller = not_renewing(("a",), lambda: None)
    try:
        assert poller._lease_seconds == 0  # type: ignore[attr-defined]
    finally:
        poller.close(join_timeout=5.0)  # type: ignore[attr-defined]


def test_a_start_that_cannot_ask_about_renewal_starts_no_thread_and_closes_what_it_opened() -> None:
    """Pins the order: /metrics and the intake first, then the probe; a
    refused probe leaves no reporter or watch thread behind."""
    conf = parse_config(
        {"supervisor": {"handlers": ["h"], "lease_renewal": "required"}}, environ={}
    )
    down = Reader(renew=EngineConnectionError("refused", request_sent=False))
    before = set(threading.enumerate())
    closing = contextlib.ExitStack()
    with pytest.raises(RenewalUnavailableError):
        open_rooms(
            conf,
            pool=WorkerPool(1),
            ledger=JobLedger(2),
            claim_policy=ClaimPolicy(),
            stats=SupervisorStats(),
            announcer=Announcer(SystemdNotifier(None), "sv.toml"),
            clients=EngineClients(conf.engine, down),  # type: ignore[arg-type]
            wake=lambda: None,
            collect=lambda slot: None,
            closing=closing,
            start_worker=no_forks,
        )
    assert set(threading.enumerate()) == before
    closing.close()


def test_a_start_on_an_engine_that_cannot_renew_when_required_is_a_config_error() -> None:
    conf = parse_config(
        {"supervisor": {"handlers": ["h"], "lease_renewal": "required"}}, environ={}
    )
    with contextlib.ExitStack() as closing, pytest.raises(ConfigError, match="lease_renewal"):
        open_rooms(
            conf,
            pool=WorkerPool(1),
            ledger=JobLedger(2),
            claim_policy=ClaimPolicy(),
            stats=SupervisorStats(),
            announcer=Announcer(SystemdNotifier(None), "sv.toml"),
            clients=EngineClients(conf.engine, Reader(renew=None)),  # type: ignore[arg-type]
            wake=lambda: None,
            collect=lambda slot: None,
            closing=closing,
            start_worker=no_forks,
        )


# -- the engine clients -----------------------------------------------------------


def test_the_hot_calls_get_a_lean_client_each_and_the_rare_ones_the_full_client() -> None:
    clients = EngineClients(EngineConfig(url="http://127.0.0.1:9", token="t0ken"))
    first, second = clients.for_jobs(), clients.for_jobs()
    try:
        assert isinstance(first, LeanJobClient) and first is not second
        full = clients.for_checks()
        assert isinstance(full, RestEngineClient)
        full.close()
    finally:
        first.close()  # type: ignore[attr-defined]
        second.close()  # type: ignore[attr-defined]


def test_a_given_client_replaces_every_one() -> None:
    given = Reader()
    clients = EngineClients(EngineConfig(), given)  # type: ignore[arg-type]
    assert clients.for_jobs() is given and clients.for_checks() is given


def test_check_and_the_clients_agree_on_the_token_and_tls() -> None:
    engine = EngineConfig(url="https://e", token="t0ken", ca_bundle="/etc/ca.pem")
    assert auth_headers(engine) == {"Authorization": "Bearer t0ken"}
    assert tls_verify(engine) == "/etc/ca.pem"
    plain = EngineConfig(url="https://e", verify_tls=False)
    assert (auth_headers(plain), tls_verify(plain)) == ({}, False)
