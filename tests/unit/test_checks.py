"""The verdicts ``check`` gives (and ``run`` shares): port, engine, import errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from workflow_sdk.supervisor.checks import (
    engine_problem,
    metrics_port_problem,
    user_traceback,
)
from workflow_sdk.supervisor.config import EngineConfig, MetricsConfig


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_port_in_use_names_the_key_and_the_address(silent_listener: int) -> None:
    problem = metrics_port_problem(MetricsConfig(port=silent_listener))
    assert problem == f"metrics.port: 127.0.0.1:{silent_listener} is in use"


def test_a_free_port_or_any_port_or_no_server_is_fine() -> None:
    assert metrics_port_problem(MetricsConfig(port=free_port())) is None
    assert metrics_port_problem(MetricsConfig(port=0)) is None
    assert metrics_port_problem(MetricsConfig(port=None)) is None


def test_an_address_that_is_not_ours_names_the_bind_key() -> None:
    problem = metrics_port_problem(MetricsConfig(port=free_port(), bind="192.0.2.1"))
    assert problem is not None
    assert problem.startswith("metrics.bind: cannot listen on 192.0.2.1:")


def test_engine_refusing_connections() -> None:
    problem = engine_problem(EngineConfig(url=f"http://127.0.0.1:{free_port()}", timeout=5))
    assert problem == "connection refused"


def test_engine_not_answering_in_time(silent_listener: int) -> None:
    problem = engine_problem(EngineConfig(url=f"http://127.0.0.1:{silent_listener}", timeout=0.2))
    assert problem == "no answer within 0.2 s (engine.timeout)"


def test_engine_host_that_does_not_resolve() -> None:
    problem = engine_problem(EngineConfig(url="http://no-such-host.invalid:8080", timeout=5))
    assert problem is not None
    assert problem.startswith("cannot resolve the host name")


def _import_failing() -> None:
    raise ImportError("the handler module's own error")


def test_user_traceback_keeps_the_error_and_drops_our_frames() -> None:
    try:
        _import_failing()
    except ImportError as exc:
        text = user_traceback(exc)
    assert text.endswith("ImportError: the handler module's own error")
    assert "test_checks.py" in text  # a frame outside the package is kept
    assert "workflow_sdk/supervisor" not in text
