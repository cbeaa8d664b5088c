"""pytest plugin shipped with the SDK (fixtures for users' tests).

Registered as the ``rochallor_local_engine`` pytest11 entry point, so the
fixtures exist wherever the SDK is installed:

``local_engine``
    a ``LocalEngine`` started for one test and stopped after it.
``local_engine_factory``
    a function ``factory(**kwargs) -> LocalEngine`` taking ``LocalEngine``'s
    arguments (``lease_seconds=1.0`` for lease-expiry tests, say); every
    engine it made is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from workflow_sdk.testing.engine import LocalEngine


@pytest.fixture
def local_engine() -> Iterator[LocalEngine]:
    """A running local engine (30 s leases, a free port) for one test."""
    engine = LocalEngine().start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def local_engine_factory() -> Iterator[Callable[..., LocalEngine]]:
    """Make started local engines with custom arguments; all stopped afterwards."""
    engines: list[LocalEngine] = []

    def factory(**kwargs: Any) -> LocalEngine:
        engine = LocalEngine(**kwargs).start()
        engines.append(engine)
        return engine

    try:
        yield factory
    finally:
        for engine in engines:
            engine.stop()
