"""The local engine answers no web page by default (issue 21 item 10).

The real engine's CORS allows any origin (ENGINE_CONTRACT.md, "General");
the local engine runs on developers' machines, where any page a browser
opens could otherwise read and change its workflows. It allows the origins
it is given (``cors_origins``, ``--cors-origin``), ``*`` included.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable

import pytest

from workflow_sdk.testing import LocalEngine
from workflow_sdk.testing.__main__ import engine_from_args, exposure_warning

Factory = Callable[..., LocalEngine]
PREFLIGHT = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}


def send(engine: LocalEngine, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        response.read()
        return {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_by_default_no_origin_is_allowed(local_engine: LocalEngine) -> None:
    """Sequence: a page of another origin asks (preflight, then a GET): no
    Access-Control-Allow-Origin in either answer (before: "*" in both)."""
    preflight = send(local_engine, "OPTIONS", "/v1/jobs/poll", PREFLIGHT)
    assert "access-control-allow-origin" not in preflight
    answer = send(local_engine, "GET", "/v1/definitions", {"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in answer


def test_a_listed_origin_is_echoed_and_no_other(local_engine_factory: Factory) -> None:
    engine = local_engine_factory(cors_origins=["http://localhost:3000"])
    ui = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    preflight = send(engine, "OPTIONS", "/v1/jobs/poll", ui)
    assert preflight["access-control-allow-origin"] == "http://localhost:3000"
    assert "Authorization" in preflight["access-control-allow-headers"]
    assert preflight["vary"] == "Origin"
    answer = send(engine, "GET", "/v1/definitions", {"Origin": "http://localhost:3000"})
    assert answer["access-control-allow-origin"] == "http://localhost:3000"
    other = send(engine, "GET", "/v1/definitions", {"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other


def test_the_wildcard_must_be_asked_for(local_engine_factory: Factory) -> None:
    engine = local_engine_factory(cors_origins=["*"])
    preflight = send(engine, "OPTIONS", "/v1/jobs/poll", PREFLIGHT)
    assert preflight["access-control-allow-origin"] == "*"


def test_the_command_line_takes_origins_and_listens_on_loopback_by_default() -> None:
    engine = engine_from_args(["--cors-origin", "http://a", "--cors-origin", "http://b"])
    assert engine.cors_origins == ("http://a", "http://b")
    assert engine.host == "127.0.0.1"
    assert engine_from_args([]).cors_origins == ()


@pytest.mark.parametrize(
    ("host", "warned"),
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True), ("", True)],
)
def test_a_host_other_than_loopback_is_warned_about(host: str, warned: bool) -> None:
    warning = exposure_warning(host)
    assert (warning is not None) is warned
    if warning:
        assert "no authentication" in warning
