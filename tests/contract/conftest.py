"""Fixtures of the contract suite.

By default every test talks to a ``LocalEngine`` (one per session, plus
short-lease ones made on demand). With ``ROCHALLOR_TEST_ENGINE_URL`` set, the
same tests talk to that engine instead; the few that need a short lease or
the local engine's inspection are skipped there. Tests only ever use
``RestEngineClient`` against the engine, and ids carry a random suffix so
that reruns on a shared engine do not collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

ENGINE_URL = os.environ.get("ROCHALLOR_TEST_ENGINE_URL", "").strip()


@pytest.fixture(scope="session")
def _session_engine() -> Iterator[LocalEngine | None]:
    if ENGINE_URL:
        yield None
        return
    # Timers checked every 0.1 s (the real engine: 5 s) keep timer tests quick.
    with LocalEngine(timer_interval=0.1) as engine:
        yield engine


@pytest.fixture
def engine_url(_session_engine: LocalEngine | None) -> str:
    return ENGINE_URL or (_session_engine.url if _session_engine else "")


@pytest.fixture
def local(_session_engine: LocalEngine | None) -> LocalEngine:
    """The local engine, for tests of the local engine itself (skipped on a real one)."""
    if _session_engine is None:
        pytest.skip("tests the local engine itself (ROCHALLOR_TEST_ENGINE_URL is set)")
    return _session_engine


@pytest.fixture
def short_lease(local_engine_factory: Callable[..., LocalEngine]) -> LocalEngine:
    """A fresh local engine whose leases last 1 s (skipped on a real engine)."""
    if ENGINE_URL:
        pytest.skip("needs a 1 s lease; a real engine leases jobs for 30 s")
    return local_engine_factory(lease_seconds=1.0)


@pytest.fixture
def client(engine_url: str) -> Iterator[RestEngineClient]:
    with RestEngineClient(engine_url, timeout=10.0) as rest:
        yield rest


@pytest.fixture
def uid() -> str:
    """A suffix that makes definition ids and job types unique to this test run."""
    return uuid.uuid4().hex[:10]
