"""How RestEngineClient turns error answers, transport failures and garbage into SDK errors."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import responses
from urllib3.exceptions import (
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
)

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import (
    EngineClientError,
    EngineConnectionError,
    EngineResponseError,
    EngineTimeoutError,
    WorkflowSDKError,
)

BASE = "http://engine.test:8080"


@pytest.fixture
def client() -> Iterator[RestEngineClient]:
    with RestEngineClient(BASE, timeout=5) as c:
        yield c


def _error_of(call: Callable[[], object]) -> EngineClientError:
    with pytest.raises(EngineClientError) as info:
        call()
    return info.value


# -- error bodies ------------------------------------------------------------


def test_envelope_reason_and_code(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(
        BASE + "/v1/instances/i-9",
        status=404,
        json={"error": "not-found", "reason": "instance i-9 not found"},
    )
    err = _error_of(lambda: client.get_instance("i-9"))
    assert type(err) is EngineClientError
    assert isinstance(err, WorkflowSDKError)
    assert err.status_code == 404
    assert err.message == "instance i-9 not found"
    assert err.error_code == "not-found"
    assert err.retryable is False
    assert err.method == "GET"
    assert err.url == BASE + "/v1/instances/i-9"
    assert "404" in str(err)
    assert "instance i-9 not found" in str(err)


def test_reason_wins_over_message(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.post(
        BASE + "/v1/jobs/poll",
        status=400,
        json={"error": "bad-request", "reason": "jobTypes required", "message": "other"},
    )
    err = _error_of(lambda: client.poll_jobs("w", ["t"]))
    assert err.message == "jobTypes required"
    assert err.error_code == "bad-request"


def test_message_only_body(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(BASE + "/v1/definitions/d", status=400, json={"message": "bad definition id"})
    err = _error_of(lambda: client.get_definition("d"))
    assert err.message == "bad definition id"
    assert err.error_code is None
    assert err.retryable is False


def test_plain_text_404_of_an_unknown_route(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(
        BASE + "/v1/instances/i/history",
        status=404,
        body="404 page not found\n",
        content_type="text/plain; charset=utf-8",
    )
    err = _error_of(lambda: client.get_instance_history("i"))
    assert err.status_code == 404
    assert err.message == "404 page not found"
    assert err.error_code is None
    assert err.retryable is False


@pytest.mark.parametrize("status", [500, 504])
def test_empty_body_is_retryable_with_a_message(
    rsps: responses.RequestsMock, client: RestEngineClient, status: int
) -> None:
    rsps.post(BASE + "/v1/jobs/j/complete", status=status, body="")
    err = _error_of(lambda: client.complete_job("j", "w"))
    assert err.status_code == status
    assert err.message  # the HTTP reason phrase, never an empty string
    assert err.error_code is None
    assert err.retryable is True


def test_empty_405(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.post(BASE + "/v1/jobs/j/fail", status=405, body="")
    err = _error_of(lambda: client.fail_job("j", "w", "x"))
    assert err.status_code == 405
    assert err.message
    assert err.retryable is False


def test_kafka_mode_410(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.post(
        BASE + "/v1/jobs/poll",
        status=410,
        json={
            "error": "poll path disabled",
            "dispatch_mode": "kafka",
            "hint": "consume jobs from Kafka instead",
        },
    )
    err = _error_of(lambda: client.poll_jobs("w", ["t"]))
    assert err.status_code == 410
    assert err.error_code == "poll path disabled"
    assert err.retryable is False
    assert err.message  # something a human can read


def test_long_raw_body_is_shortened(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(BASE + "/v1/instances/i", status=502, body="x" * 5000, content_type="text/html")
    err = _error_of(lambda: client.get_instance("i"))
    assert err.retryable is True
    assert len(err.message) < 600


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (502, None, True),
        (503, None, True),
        (504, None, True),
        (500, {"error": "internal-error", "reason": "context deadline exceeded"}, True),
        (
            500,
            {
                "error": "internal-error",
                "reason": "poll jobs: failed to connect to `host=db`: dial tcp: i/o timeout",
            },
            True,
        ),
        (
            500,
            {"error": "internal-error", "reason": "pq: the database system is shutting down"},
            True,
        ),
        (500, {"error": "internal-error", "reason": 'job "x" not found'}, False),
        (
            500,
            {"error": "internal-error", "reason": "start instance: definition not found"},
            False,
        ),
        (500, {"error": "internal-error", "reason": "cancel: no rows in result set"}, False),
        (400, {"error": "bad-request", "reason": "invalid request body: EOF"}, False),
        (404, {"error": "not-found", "reason": "user task not found"}, False),
        (409, {"error": "conflict", "reason": "instance finished"}, False),
        (415, {"error": "unsupported-format", "reason": "xml is not supported"}, False),
        (410, {"error": "poll path disabled", "dispatch_mode": "kafka", "hint": "h"}, False),
    ],
)
def test_retryable_verdicts(
    rsps: responses.RequestsMock,
    client: RestEngineClient,
    status: int,
    body: dict[str, Any] | None,
    retryable: bool,
) -> None:
    if body is None:
        rsps.post(BASE + "/v1/jobs/j/complete", status=status, body="")
    else:
        rsps.post(BASE + "/v1/jobs/j/complete", status=status, json=body)
    err = _error_of(lambda: client.complete_job("j", "w"))
    assert err.status_code == status
    assert err.retryable is retryable
    assert not isinstance(err, EngineConnectionError)


# -- transport failures (mocked) --------------------------------------------


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/v1/jobs/j/fail", reason))  # type: ignore[arg-type]


def test_refused_connection_was_not_sent(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    cause = _refused()
    rsps.post(BASE + "/v1/jobs/j/fail", body=cause)
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j", "w", "boom")
    err = info.value
    assert not isinstance(err, EngineTimeoutError)
    assert err.request_sent is False
    assert err.retryable is True
    assert err.status_code == 0
    assert err.__cause__ is cause


def test_unresolvable_host_was_not_sent(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    reason = NameResolutionError("engine.test", None, socket.gaierror("no such host"))  # type: ignore[arg-type]
    rsps.post(
        BASE + "/v1/jobs/j/fail",
        body=requests.ConnectionError(MaxRetryError(None, "/", reason)),  # type: ignore[arg-type]
    )
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j", "w", "boom")
    assert info.value.request_sent is False


def test_connect_timeout_was_not_sent(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/j/fail", body=requests.ConnectTimeout("connect timed out"))
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j", "w", "boom")
    assert info.value.request_sent is False
    assert info.value.retryable is True


def test_read_timeout_may_have_been_acted_on(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/j/fail", body=requests.ReadTimeout("read timed out"))
    with pytest.raises(EngineTimeoutError) as info:
        client.fail_job("j", "w", "boom")
    assert info.value.request_sent is True
    assert info.value.retryable is True
    assert isinstance(info.value, EngineConnectionError)


def test_remote_disconnect_may_have_been_acted_on(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    cause = requests.ConnectionError(
        ProtocolError(
            "Connection aborted.",
            http.client.RemoteDisconnected("Remote end closed connection without response"),
        )
    )
    rsps.post(BASE + "/v1/jobs/j/fail", body=cause)
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j", "w", "boom")
    assert not isinstance(info.value, EngineTimeoutError)
    assert info.value.request_sent is True
    assert info.value.retryable is True


def test_reset_after_max_retries_may_have_been_acted_on(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    reason = ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    rsps.post(
        BASE + "/v1/jobs/j/fail",
        body=requests.ConnectionError(MaxRetryError(None, "/", reason)),  # type: ignore[arg-type]
    )
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j", "w", "boom")
    assert info.value.request_sent is True


# -- transport failures (real sockets) --------------------------------------


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_proxy_env")
def test_real_refused_connection_was_not_sent() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with RestEngineClient(f"http://127.0.0.1:{port}", timeout=2) as c:
        with pytest.raises(EngineConnectionError) as info:
            c.fail_job("j", "w", "boom")
        assert info.value.request_sent is False
        assert not isinstance(info.value, EngineTimeoutError)
        assert c.health() is False


@pytest.mark.usefixtures("no_proxy_env")
def test_real_silent_server_times_out_after_the_request_was_sent() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    received = bytearray()
    client_done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                received.extend(chunk)
            # Never answer; hold the connection until the client gave up.
            client_done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            RestEngineClient(f"http://127.0.0.1:{port}", timeout=0.3) as c,
            pytest.raises(EngineTimeoutError) as info,
        ):
            c.complete_job("j-1", "w", {"a": 1})
    finally:
        client_done.set()
        thread.join(10)
        server.close()
    assert not thread.is_alive()
    assert info.value.request_sent is True
    assert info.value.retryable is True
    assert bytes(received).startswith(b"POST /v1/jobs/j-1/complete HTTP/1.1\r\n")


# -- 2xx answers that are not what the contract promises ---------------------

GARBAGE_POLLS: list[Any] = [
    [],
    "jobs",
    {"jobs": "x"},
    {"jobs": {"id": "j"}},
]

#: Sound envelopes, each with one job that is not what the contract promises.
GARBAGE_JOBS: list[Any] = [
    {"jobs": ["not a job"]},
    {"jobs": [{"instanceId": "i", "jobType": "t"}]},
    {"jobs": [{"id": "", "instanceId": "i", "jobType": "t"}]},
    {"jobs": [{"id": 5, "instanceId": "i", "jobType": "t"}]},
    {"jobs": [{"id": "j", "instanceId": "i"}]},
    {"jobs": [{"id": "j", "jobType": "t"}]},
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "retriesRemaining": "3"}]},
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "retriesRemaining": True}]},
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "retriesRemaining": 1.5}]},
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "variables": [1, 2]}]},
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "variables": "a=1"}]},
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "lockExpiresAt": "soon"}]},
    {
        "jobs": [
            {"id": "j", "instanceId": "i", "jobType": "t", "lockExpiresAt": "2024-03-01T12:00:00"}
        ]
    },
    {"jobs": [{"id": "j", "instanceId": "i", "jobType": "t", "lockExpiresAt": 1709290800}]},
]


@pytest.mark.parametrize("body", GARBAGE_POLLS)
def test_garbage_poll_answer_is_a_response_error(
    rsps: responses.RequestsMock, client: RestEngineClient, body: Any
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json=body)
    with pytest.raises(EngineResponseError) as info:
        client.poll_jobs("w", ["t"])
    assert isinstance(info.value, WorkflowSDKError)
    assert info.value.retryable is False


@pytest.mark.parametrize("body", GARBAGE_JOBS)
def test_a_garbage_job_is_left_out_of_the_answer_with_one_error_line(
    rsps: responses.RequestsMock,
    client: RestEngineClient,
    body: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Not refused whole: the engine locked the answer's other jobs.
    rsps.post(BASE + "/v1/jobs/poll", json=body)
    with caplog.at_level(logging.ERROR, logger="workflow_sdk.client"):
        jobs = client.poll_jobs("w", ["t"])
    assert jobs == []
    (problem,) = jobs.malformed
    assert "unexpected engine answer: job" in problem
    assert [r.getMessage() for r in caplog.records] == [problem]


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>502 Bad Gateway</body></html>",
        "",
        '{"jobs": [',
    ],
)
def test_non_json_2xx_is_a_response_error(
    rsps: responses.RequestsMock, client: RestEngineClient, body: str
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", status=200, body=body, content_type="text/html")
    with pytest.raises(EngineResponseError) as info:
        client.poll_jobs("w", ["t"])
    assert info.value.status_code == 200


OBJECT_CALLS: list[tuple[str, str, str, Callable[[RestEngineClient], object]]] = [
    ("upload", "POST", "/v1/definitions", lambda c: c.upload_definition({"id": "d"})),
    ("definition", "GET", "/v1/definitions/d", lambda c: c.get_definition("d")),
    (
        "definition version",
        "GET",
        "/v1/definitions/d/versions/1",
        lambda c: c.get_definition_version("d", 1),
    ),
    ("start", "POST", "/v1/instances", lambda c: c.start_instance("d")),
    ("instance", "GET", "/v1/instances/i", lambda c: c.get_instance("i")),
    ("cancel", "POST", "/v1/instances/i/cancel", lambda c: c.cancel_instance("i")),
    ("heartbeat", "POST", "/v1/jobs/j/heartbeat", lambda c: c.extend_lease("j", "w")),
    ("definitions", "GET", "/v1/definitions", lambda c: c.list_definitions()),
    ("instances", "GET", "/v1/instances", lambda c: c.list_instances()),
    ("history", "GET", "/v1/instances/i/history", lambda c: c.get_instance_history("i")),
]


@pytest.mark.parametrize("body", [[{"id": "x"}], "x", 3, None])
@pytest.mark.parametrize("spec", OBJECT_CALLS, ids=[spec[0] for spec in OBJECT_CALLS])
def test_non_object_answer_is_a_response_error(
    rsps: responses.RequestsMock,
    client: RestEngineClient,
    spec: tuple[str, str, str, Callable[[RestEngineClient], object]],
    body: Any,
) -> None:
    _, method, path, call = spec
    rsps.add(method, BASE + path, json=body)
    with pytest.raises(EngineResponseError):
        call(client)


@pytest.mark.parametrize(
    "body",
    [
        {"items": "x", "total": 1},
        {"items": {"id": "d"}, "total": 1},
        {"items": ["d"], "total": 1},
        {"items": [], "total": "0"},
        {"items": [], "total": None},
    ],
)
def test_garbage_page_is_a_response_error(
    rsps: responses.RequestsMock, client: RestEngineClient, body: Any
) -> None:
    rsps.get(BASE + "/v1/definitions", json=body)
    rsps.get(BASE + "/v1/instances", json=body)
    with pytest.raises(EngineResponseError):
        client.list_definitions()
    with pytest.raises(EngineResponseError):
        client.list_instances()


@pytest.mark.parametrize("body", [{"items": "x"}, {"items": ["step"]}, {"items": [None]}])
def test_garbage_history_is_a_response_error(
    rsps: responses.RequestsMock, client: RestEngineClient, body: Any
) -> None:
    rsps.get(BASE + "/v1/instances/i/history", json=body)
    with pytest.raises(EngineResponseError):
        client.get_instance_history("i")


def test_a_2xx_other_than_204_on_a_call_without_body_is_not_delivered(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    """Pins: complete/fail/signal answer 204; a proxy's 200 page (a login or
    captive portal) counted as delivered although the engine never saw it."""
    rsps.post(BASE + "/v1/jobs/j/complete", status=200, body="<html>ok</html>")
    err = _error_of(lambda: client.complete_job("j", "w"))
    assert type(err) is EngineClientError
    assert err.status_code == 200
    assert err.retryable is True
    assert "expected 204" in err.message and "<html>ok</html>" in err.message
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 304, 307, 308])
def test_a_redirect_is_not_delivered(
    rsps: responses.RequestsMock, client: RestEngineClient, status: int
) -> None:
    """Pins: only >= 400 was an error, so a proxy's redirect of a complete or
    fail (never followed) counted as delivered. Each call's own success only."""
    rsps.post(BASE + "/v1/jobs/j/fail", status=status, headers={"Location": "/login"})
    rsps.post(BASE + "/v1/jobs/poll", status=status, headers={"Location": "/login"})
    rsps.get(BASE + "/v1/instances/i", status=status, headers={"Location": "/login"})
    for call in (
        lambda: client.fail_job("j", "w", "boom"),
        lambda: client.poll_jobs("w", ["t"]),
        lambda: client.get_instance("i"),
    ):
        err = _error_of(call)
        assert type(err) is EngineClientError
        assert err.status_code == status
        assert err.retryable is True
        assert "not delivered" in err.message


def test_health_is_a_200_and_nothing_else(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/healthz", status=200, body="")
    assert client.health() is True
    rsps.replace(responses.GET, BASE + "/healthz", status=302, headers={"Location": "/x"})
    assert client.health() is False
