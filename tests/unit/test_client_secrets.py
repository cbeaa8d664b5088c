"""The clients never print a token or the credentials of a URL (issue 21, items 2 and 6).

Real sockets: a port that refuses (bound, never listening) and a LocalEngine.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError
from workflow_sdk.sanitize import redact_text, redact_url
from workflow_sdk.testing import LocalEngine

SECRET = "s3cr3t-TOKEN"
Make = Callable[..., object]
CLIENTS: list[Make] = [LeanJobClient, RestEngineClient]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound and not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("make", CLIENTS, ids=["lean", "rest"])
@pytest.mark.parametrize("token", [f"{SECRET}\r", f"{SECRET}\n", f"{SECRET}\r\nX-Evil: 1"])
def test_a_token_with_a_line_break_is_refused_without_being_shown(make: Make, token: str) -> None:
    """Sequence: a client is built with a token ending in CR or LF: refused at
    once (before any request), and the message does not hold the token."""
    with pytest.raises(ValueError) as raised:
        make("http://127.0.0.1:1", 5, token=token)
    assert SECRET not in str(raised.value)
    assert "token" in str(raised.value)


@pytest.mark.parametrize("make", CLIENTS, ids=["lean", "rest"])
def test_a_header_with_a_line_break_is_refused_without_its_value(make: Make) -> None:
    with pytest.raises(ValueError) as raised:
        make("http://127.0.0.1:1", 5, headers={"X-Api-Key": f"{SECRET}\n"})
    assert SECRET not in str(raised.value)
    assert "X-Api-Key" in str(raised.value)


def _poll_error(client: object) -> EngineClientError:
    with pytest.raises(EngineClientError) as raised:
        client.poll_jobs("w", ["t"])  # type: ignore[attr-defined]
    return raised.value


@pytest.mark.parametrize("make", CLIENTS, ids=["lean", "rest"])
def test_an_unreachable_engine_error_hides_the_url_credentials(
    make: Make, refused_port: int
) -> None:
    """Sequence: the engine URL carries user:password and the engine refuses
    the connection: the error (its text and its url) names the engine
    without the credentials."""
    client = make(f"http://admin:{SECRET}@127.0.0.1:{refused_port}", 5)
    error = _poll_error(client)
    assert SECRET not in str(error) and "admin" not in str(error)
    assert error.url == f"http://***@127.0.0.1:{refused_port}/v1/jobs/poll"
    assert SECRET not in repr(client)


@pytest.mark.parametrize("make", CLIENTS, ids=["lean", "rest"])
def test_an_error_answer_hides_the_url_credentials(make: Make) -> None:
    with LocalEngine() as engine:
        url = engine.url.replace("http://", f"http://admin:{SECRET}@")
        client = make(url, 5)
        with pytest.raises(EngineClientError) as raised:
            client.complete_job("no-such-job", "w")  # type: ignore[attr-defined]
    assert raised.value.status_code == 500
    assert SECRET not in str(raised.value)


def test_redact_url_and_text() -> None:
    assert redact_url("https://u:p@h:1/x?q=1") == "https://***@h:1/x?q=1"
    assert redact_url("http://h:1/x") == "http://h:1/x"
    assert redact_url("http://token@h") == "http://***@h"
    text = "Invalid URL 'http://u:p@h/v1': no host; see mailto:a@b and http://c/d@e"
    assert redact_text(text) == (
        "Invalid URL 'http://***@h/v1': no host; see mailto:a@b and http://c/d@e"
    )
