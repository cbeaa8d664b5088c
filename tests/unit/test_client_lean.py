"""LeanJobClient: against a real LocalEngine, and against a scripted socket
server for what a real engine rarely does (closing, resetting, garbage)."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from workflow_sdk.client import lean
from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import LeanJobClient, make_worker_client
from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import (
    DispatchModeError,
    EngineClientError,
    EngineConnectionError,
    EngineResponseError,
    EngineTimeoutError,
)
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus, deliver
from workflow_sdk.testing import LocalEngine

DEFINITION = {
    "id": "lean",
    "name": "lean",
    "steps": [
        {"id": "s", "name": "s", "type": "SERVICE_TASK", "jobType": "lean", "nextStep": "end"},
        {"id": "end", "name": "End", "type": "END"},
    ],
}

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
EMPTY_POLL = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"jobs":null}'
)


def _json_answer(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


# -- against the local engine --------------------------------------------------


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with LocalEngine() as running:
        with running.client() as setup:
            setup.upload_definition(DEFINITION)
        yield running


def test_is_a_worker_engine_client() -> None:
    with LeanJobClient("http://127.0.0.1:1") as client:
        assert isinstance(client, WorkerEngineClient)


def test_poll_complete_and_fail_against_the_local_engine(engine: LocalEngine) -> None:
    with engine.client() as rest, LeanJobClient(engine.url, timeout=5) as client:
        done = rest.start_instance("lean")["id"]
        failed = rest.start_instance("lean")["id"]
        jobs = client.poll_jobs("w-lean", ["lean"], 5)
        assert sorted(job["instanceId"] for job in jobs) == sorted([done, failed])
        by_instance = {job["instanceId"]: job for job in jobs}
        # Parsed as RestEngineClient parses: stepId filled, variables a dict.
        assert by_instance[done]["stepId"] == ""
        assert by_instance[done]["variables"] == {}
        assert by_instance[done]["workerId"] == "w-lean"
        client.complete_job(by_instance[done]["id"], "w-lean", {"answer": 42})
        client.fail_job(by_instance[failed]["id"], "w-lean", "broken", retryable=False)
        assert client.poll_jobs("w-lean", ["lean"], 5) == []
        assert rest.get_instance(done)["status"] == "COMPLETED"
        assert rest.get_instance(done)["variables"] == {"answer": 42}
        assert rest.get_instance(failed)["status"] == "FAILED"
        assert rest.get_instance(failed)["failureReason"] == "broken"


def test_unknown_job_is_a_permanent_500(engine: LocalEngine) -> None:
    with LeanJobClient(engine.url, timeout=5) as client:
        with pytest.raises(EngineClientError) as info:
            client.complete_job("no-such-job", "w")
        assert info.value.status_code == 500
        assert "not found" in info.value.message
        assert info.value.retryable is False
        # The connection stays open and in use after an error answer.
        conn = client._local.conn
        assert conn is not None
        sock = conn.sock
        assert sock is not None
        assert client.poll_jobs("w", ["lean"]) == []
        assert conn.sock is sock


def test_one_connection_per_thread_and_close_ends_them(engine: LocalEngine) -> None:
    with engine.client() as rest:
        for _ in range(8):
            rest.start_instance("lean")
    client = LeanJobClient(engine.url, timeout=5)
    seen: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    # Every thread stays alive until all have worked: the client closes the
    # connections of threads that ended when a new one connects.
    all_worked = threading.Barrier(4, timeout=10)

    def work() -> None:
        try:
            for _ in range(2):
                (job,) = client.poll_jobs("w", ["lean"], 1)
                client.complete_job(job["id"], "w")
                conn = client._local.conn
                assert conn is not None and conn.sock is not None
                with lock:
                    seen.append(id(conn))
            all_worked.wait()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert len(seen) == 8
    assert len(set(seen)) == 4  # each thread kept its own connection for both cycles
    made = [conn for _, conn in client._made]
    assert len(made) == 4
    client.close()
    assert all(conn.sock is None for conn in made)


def test_connection_of_an_ended_thread_is_closed(engine: LocalEngine) -> None:
    client = LeanJobClient(engine.url, timeout=5)
    try:
        thread = threading.Thread(target=lambda: client.poll_jobs("w", ["lean"]))
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
        ((_, theirs),) = client._made
        assert theirs.sock is not None
        client.poll_jobs("w", ["lean"])
        assert [conn for _, conn in client._made] == [client._local.conn]
        assert theirs.sock is None
    finally:
        client.close()


def test_idle_check_sees_a_closed_or_talking_peer() -> None:
    ours, theirs = socket.socketpair()
    try:
        assert lean._dropped(ours) is False
        theirs.sendall(b"x")
        assert lean._dropped(ours) is True
        ours.recv(1)
        theirs.close()
        assert lean._dropped(ours) is True
    finally:
        ours.close()
        theirs.close()


def test_checks_before_sending(engine: LocalEngine) -> None:
    with LeanJobClient(engine.url) as client:
        with pytest.raises(ValueError):
            client.poll_jobs("w", ["lean"], 0)
        with pytest.raises(TypeError):
            client.poll_jobs("w", "lean")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.poll_jobs("w", [])
        with pytest.raises(ValueError):
            client.complete_job("", "w")
        with pytest.raises(ValueError):
            client.complete_job("j", "w", {"x": float("nan")})
        assert client._local.conn is None  # nothing was ever sent


@pytest.mark.parametrize("url", ["engine:8080", "ftp://engine", "http://"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ValueError):
        LeanJobClient(url)


def test_bad_timeout() -> None:
    with pytest.raises(ValueError):
        LeanJobClient("http://engine", timeout=0)


# -- a scripted server -----------------------------------------------------------


@dataclass
class Request:
    connection: int
    head: bytes
    body: bytes

    @property
    def line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()

    def header(self, name: str) -> str | None:
        for raw in self.head.split(b"\r\n")[1:]:
            key, _, value = raw.decode().partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


#: What the server does with one request: send bytes (and keep the
#: connection), "close" after answering, drop the connection without an
#: answer ("drop": FIN; "reset": RST), or "silent" (never answer).
@dataclass
class Act:
    answer: bytes = b""
    then: str = "keep"  # keep | close | drop | reset | silent


@dataclass
class ScriptedServer:
    script: Callable[[Request], Act]
    requests: list[Request] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, self.connections))
            thread.daemon = True
            self._threads.append(thread)
            thread.start()

    def _read(self, conn: socket.socket, number: int) -> Request | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request = Request(number, head, body)
        length = int(request.header("Content-Length") or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        request.body = body
        return request

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            while True:
                request = self._read(conn, number)
                if request is None:
                    return
                self.requests.append(request)
                act = self.script(request)
                if act.answer:
                    conn.sendall(act.answer)
                if act.then == "keep":
                    continue
                if act.then == "silent":
                    self.stop.wait(10)
                    return
                if act.then == "reset":
                    # Linger 0: close() sends RST instead of FIN.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
        except OSError:
            return
        finally:
            conn.close()
            self.closed.set()

    def paths(self) -> list[str]:
        return [request.line for request in self.requests]

    def shutdown(self) -> None:
        self.stop.set()
        # close() alone does not wake a thread blocked in accept(); shutdown does.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(10)
        assert not self._acceptor.is_alive()
        for thread in self._threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self._threads)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Request], Act]], ScriptedServer]]:
    started: list[ScriptedServer] = []

    def start(script: Callable[[Request], Act]) -> ScriptedServer:
        server = ScriptedServer(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()


Serve = Callable[[Callable[[Request], Act]], ScriptedServer]


def _nth(acts: list[Act]) -> Callable[[Request], Act]:
    """Answer the n-th request with the n-th act (the last one repeats)."""
    count = [0]

    def script(_: Request) -> Act:
        count[0] += 1
        return acts[min(count[0], len(acts)) - 1]

    return script


# -- connections the server ends --------------------------------------------------


def test_server_closed_the_idle_connection_next_complete_succeeds(serve: Serve) -> None:
    server = serve(_nth([Act(NO_CONTENT, "close"), Act(NO_CONTENT)]))
    with LeanJobClient(server.url, timeout=5) as client:
        client.complete_job("j-1", "w")
        assert server.closed.wait(5)
        client.complete_job("j-2", "w")
    assert server.paths() == [
        "POST /v1/jobs/j-1/complete HTTP/1.1",
        "POST /v1/jobs/j-2/complete HTTP/1.1",
    ]
    assert server.connections == 2


def test_connection_close_header_is_honoured(serve: Serve) -> None:
    closing = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    server = serve(_nth([Act(closing, "close"), Act(NO_CONTENT)]))
    with LeanJobClient(server.url, timeout=5) as client:
        client.fail_job("j-1", "w", "x")
        client.fail_job("j-2", "w", "x")
    assert len(server.requests) == 2
    assert server.connections == 2


def test_kept_alive_connection_is_reused(serve: Serve) -> None:
    server = serve(_nth([Act(EMPTY_POLL)]))
    with LeanJobClient(server.url, timeout=5) as client:
        for _ in range(3):
            assert client.poll_jobs("w", ["t"]) == []
    assert server.connections == 1
    assert len(server.requests) == 3


@pytest.mark.parametrize("how", ["drop", "reset"])
def test_complete_is_resent_once_when_a_reused_connection_dies_unanswered(
    serve: Serve, how: str
) -> None:
    server = serve(_nth([Act(NO_CONTENT), Act(then=how), Act(NO_CONTENT)]))
    with LeanJobClient(server.url, timeout=5) as client:
        client.complete_job("j-1", "w")
        client.complete_job("j-2", "w")
    assert server.paths()[1:] == ["POST /v1/jobs/j-2/complete HTTP/1.1"] * 2
    assert server.connections == 2


def test_complete_is_not_resent_twice(serve: Serve) -> None:
    server = serve(_nth([Act(NO_CONTENT), Act(then="drop")]))
    with LeanJobClient(server.url, timeout=5) as client:
        client.complete_job("j-1", "w")
        with pytest.raises(EngineConnectionError) as info:
            client.complete_job("j-2", "w")
    assert info.value.request_sent is True
    assert info.value.retryable is True
    assert len(server.requests) == 3  # the first, then j-2 on the reused and on a new connection


def test_resent_complete_that_cannot_reconnect_may_have_been_sent(serve: Serve) -> None:
    servers: list[ScriptedServer] = []

    def script(request: Request) -> Act:
        if "j-2" not in request.line:
            return Act(NO_CONTENT)
        # The engine goes away with the second complete unanswered.
        servers[0].listener.shutdown(socket.SHUT_RDWR)
        servers[0].listener.close()
        return Act(then="drop")

    servers.append(serve(script))
    with LeanJobClient(servers[0].url, timeout=5) as client:
        client.complete_job("j-1", "w")
        with pytest.raises(EngineConnectionError) as info:
            client.complete_job("j-2", "w")
    # The reconnect was refused, but the first copy may have been acted on.
    assert "refused" in info.value.message.lower()
    assert info.value.request_sent is True
    assert len(servers[0].requests) == 2


@pytest.mark.parametrize("how", ["drop", "reset"])
def test_fail_reset_after_it_was_sent_is_not_resent(serve: Serve, how: str) -> None:
    server = serve(_nth([Act(NO_CONTENT), Act(then=how)]))
    with LeanJobClient(server.url, timeout=5) as client:
        client.fail_job("j-1", "w", "x")
        with pytest.raises(EngineConnectionError) as info:
            client.fail_job("j-2", "w", "boom", retryable=False)
    err = info.value
    assert not isinstance(err, EngineTimeoutError)
    assert err.request_sent is True  # reporting.deliver must not resend it
    assert err.retryable is True
    assert server.paths().count("POST /v1/jobs/j-2/fail HTTP/1.1") == 1


def test_fail_reset_on_a_fresh_connection_was_sent(serve: Serve) -> None:
    server = serve(_nth([Act(then="reset")]))
    with (
        LeanJobClient(server.url, timeout=5) as client,
        pytest.raises(EngineConnectionError) as info,
    ):
        client.fail_job("j-1", "w", "boom")
    assert info.value.request_sent is True
    assert len(server.requests) == 1


def test_a_malformed_job_is_left_out_and_the_good_ones_kept(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: one job without an id and one with variables of the wrong type
    beside two good jobs: the good ones come back, each bad one is logged."""
    good = {"id": "j-1", "jobType": "t", "instanceId": "i", "variables": {}}
    answer = {"jobs": [good, {"jobType": "t"}, dict(good, id="j-bad", variables=[1]),
                       dict(good, id="j-2")]}  # fmt: skip
    server = serve(_nth([Act(_json_answer("200 OK", json.dumps(answer).encode()))]))
    with (
        caplog.at_level(logging.ERROR, logger="workflow_sdk.client"),
        LeanJobClient(server.url, timeout=5) as client,
    ):
        jobs = client.poll_jobs("w", ["t"], 4)
    assert [job["id"] for job in jobs] == ["j-1", "j-2"]
    assert len(jobs.malformed) == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
    assert "job j-bad" in caplog.text


def test_poll_dropped_after_it_was_sent_is_not_resent(serve: Serve) -> None:
    server = serve(_nth([Act(EMPTY_POLL), Act(then="drop")]))
    with LeanJobClient(server.url, timeout=5) as client:
        assert client.poll_jobs("w", ["t"]) == []
        with pytest.raises(EngineConnectionError) as info:
            client.poll_jobs("w", ["t"])
    assert info.value.request_sent is True
    assert len(server.requests) == 2  # a resend could claim more jobs


def test_fail_on_a_connection_reset_while_idle_is_resent_when_the_write_fails(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reset lands between the idle check and the write (forced here by
    # skipping the check): the write fails, so the engine cannot have the
    # fail, and it goes out again on a new connection.
    server = serve(_nth([Act(NO_CONTENT, "reset"), Act(NO_CONTENT)]))
    monkeypatch.setattr(lean, "_dropped", lambda sock: False)
    with LeanJobClient(server.url, timeout=5) as client:
        client.fail_job("j-1", "w", "x")
        assert server.closed.wait(5)
        client.fail_job("j-2", "w", "y")
    assert server.paths() == ["POST /v1/jobs/j-1/fail HTTP/1.1", "POST /v1/jobs/j-2/fail HTTP/1.1"]
    assert server.connections == 2


def test_refused_connection_was_not_sent() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with (
        LeanJobClient(f"http://127.0.0.1:{port}", timeout=2) as client,
        pytest.raises(EngineConnectionError) as info,
    ):
        client.fail_job("j", "w", "boom")
    assert info.value.request_sent is False
    assert info.value.retryable is True
    assert not isinstance(info.value, EngineTimeoutError)
    assert info.value.url == f"http://127.0.0.1:{port}/v1/jobs/j/fail"


def test_silent_server_times_out_after_the_request_was_sent(serve: Serve) -> None:
    server = serve(_nth([Act(then="silent")]))
    with (
        LeanJobClient(server.url, timeout=0.3) as client,
        pytest.raises(EngineTimeoutError) as info,
    ):
        client.complete_job("j-1", "w", {"a": 1})
    assert info.value.request_sent is True
    assert info.value.retryable is True
    assert len(server.requests) == 1  # a timeout is not a stale connection: no resend


def test_answer_cut_short_was_sent(serve: Serve) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"jobs": ['
    server = serve(_nth([Act(cut, "drop")]))
    with (
        LeanJobClient(server.url, timeout=5) as client,
        pytest.raises(EngineConnectionError) as info,
    ):
        client.poll_jobs("w", ["t"])
    assert info.value.request_sent is True
    assert len(server.requests) == 1


# -- what the request looks like --------------------------------------------------


def test_request_headers_and_body(serve: Serve) -> None:
    server = serve(_nth([Act(NO_CONTENT)]))
    with LeanJobClient(server.url + "/engine/", timeout=5, token="s3cret") as client:
        client.fail_job("a:b c", "w", "boom", retryable=False)
    (request,) = server.requests
    # ':' stays as it is (as in RestEngineClient); the base URL's path is kept.
    assert request.line == "POST /engine/v1/jobs/a:b%20c/fail HTTP/1.1"
    assert request.header("Authorization") == "Bearer s3cret"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Content-Length") == str(len(request.body))
    assert request.body == b'{"workerId": "w", "errorMessage": "boom", "retryable": false}'


def test_poll_body_carries_lease_seconds_only_when_asked(serve: Serve) -> None:
    server = serve(_nth([Act(EMPTY_POLL), Act(EMPTY_POLL)]))
    with LeanJobClient(server.url, timeout=5) as client:
        assert client.poll_jobs("w", ["t"], 3, lease_seconds=90) == []
        assert client.poll_jobs("w", ["t"], 3) == []
        with pytest.raises(ValueError, match="lease_seconds"):
            client.poll_jobs("w", ["t"], lease_seconds=3601)
    first, second = server.requests
    assert json.loads(first.body) == {
        "workerId": "w",
        "jobTypes": ["t"],
        "maxJobs": 3,
        "leaseSeconds": 90,
    }
    assert json.loads(second.body) == {"workerId": "w", "jobTypes": ["t"], "maxJobs": 3}


def test_poll_lease_is_granted_by_an_engine_with_lease_extension() -> None:
    with LocalEngine(heartbeat=True) as engine, engine.client() as rest:
        rest.upload_definition(DEFINITION)
        rest.start_instance("lean")
        with LeanJobClient(engine.url, timeout=5) as client:
            (job,) = client.poll_jobs("w", ["lean"], 1, lease_seconds=120)
        view = engine.job(job["id"])
        granted = parse_timestamp(view["lockExpiresAt"]) - parse_timestamp(view["lockedAt"])
        assert granted.total_seconds() == pytest.approx(120, abs=1)


def test_header_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        LeanJobClient("http://engine.test", token="abc\r\nX-Injected: 1")
    with pytest.raises(ValueError):
        LeanJobClient("http://engine.test", headers={"X-A": "1\nX-B: 2"})


def test_chunked_answer_is_read_and_the_connection_kept(serve: Serve) -> None:
    job = (
        b'{"jobs":[{"id":"j-1","instanceId":"i-1","jobType":"t","retriesRemaining":2,'
        b'"variables":{"big":"' + b"x" * 5000 + b'"}}]}\n'
    )
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (job[:4000], job[4000:]))
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    server = serve(_nth([Act(answer), Act(NO_CONTENT)]))
    with LeanJobClient(server.url, timeout=5) as client:
        (polled,) = client.poll_jobs("w", ["t"])
        client.complete_job("j-1", "w")
    assert polled["variables"] == {"big": "x" * 5000}
    assert polled["retriesRemaining"] == 2
    assert server.connections == 1


def test_no_authorization_without_token(serve: Serve) -> None:
    server = serve(_nth([Act(EMPTY_POLL)]))
    with LeanJobClient(server.url, timeout=5) as client:
        client.poll_jobs("w", ["t"], 3)
    (request,) = server.requests
    assert request.header("Authorization") is None
    assert request.body == b'{"workerId": "w", "jobTypes": ["t"], "maxJobs": 3}'


# -- answers: both clients translate them alike -----------------------------------

CLIENTS: list[Callable[[str], WorkerEngineClient]] = [
    lambda url: LeanJobClient(url, timeout=5),
    lambda url: RestEngineClient(url, timeout=5),
]


@pytest.fixture(params=CLIENTS, ids=["lean", "rest"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[str], WorkerEngineClient]]:
    made: list[Any] = []

    def build(url: str) -> WorkerEngineClient:
        client = request.param(url)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def test_html_answer_to_a_poll_is_a_response_error(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    html = b"<html><body>Welcome to the proxy</body></html>"
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(html)
    server = serve(_nth([Act(answer + html)]))
    with pytest.raises(EngineResponseError) as info:
        make(server.url).poll_jobs("w", ["t"])
    assert info.value.status_code == 200
    assert info.value.retryable is False
    assert "Welcome to the proxy" in info.value.message


def test_not_http_at_all_is_a_connection_error_after_sending(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    server = serve(_nth([Act(b"SSH-2.0-OpenSSH_9.6\r\n", "close")]))
    with pytest.raises(EngineConnectionError) as info:
        make(server.url).complete_job("j", "w")
    assert info.value.request_sent is True
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("reason", "retryable"),
    [
        ("context deadline exceeded", True),
        ('job "j" not found', False),
    ],
)
def test_500_with_reason(
    serve: Serve, make: Callable[[str], WorkerEngineClient], reason: str, retryable: bool
) -> None:
    body = json.dumps({"error": "internal-error", "reason": reason}).encode() + b"\n"
    server = serve(_nth([Act(_json_answer("500 Internal Server Error", body))]))
    with pytest.raises(EngineClientError) as info:
        make(server.url).complete_job("j", "w")
    err = info.value
    assert not isinstance(err, EngineConnectionError)
    assert err.status_code == 500
    assert err.message == reason
    assert err.error_code == "internal-error"
    assert err.retryable is retryable


def test_empty_500_is_retryable_with_a_message(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    server = serve(_nth([Act(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")]))
    with pytest.raises(EngineClientError) as info:
        make(server.url).fail_job("j", "w", "x")
    assert info.value.status_code == 500
    assert info.value.message == "Internal Server Error"
    assert info.value.retryable is True


def _redirect(status: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nLocation: https://login.example/\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"])
def test_a_redirect_of_a_report_is_not_delivered(
    serve: Serve, make: Callable[[str], WorkerEngineClient], status: str
) -> None:
    """Pins: a 3xx answer to complete or fail counted as delivered (only >= 400
    was an error; redirects are not followed), so the engine never saw the
    report. Both clients: an error, retryable (not the engine's verdict),
    never a connection error that would let a fail be resent."""
    server = serve(_nth([Act(_redirect(status))]))
    client = make(server.url)
    for call in (lambda: client.complete_job("j", "w"), lambda: client.fail_job("j", "w", "x")):
        with pytest.raises(EngineClientError) as info:
            call()
        err = info.value
        assert type(err) is EngineClientError
        assert err.status_code == int(status[:3])
        assert err.retryable is True
        assert "expected 204" in err.message


def test_a_200_to_a_report_is_not_delivered(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    """Pins: complete/fail answer 204; a proxy's own 200 page is not the engine's."""
    page = b"<html>please log in</html>"
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(page)
    server = serve(_nth([Act(answer + page)]))
    with pytest.raises(EngineClientError) as info:
        make(server.url).complete_job("j", "w")
    assert info.value.status_code == 200
    assert "please log in" in info.value.message


def test_redirected_reports_are_lost_not_delivered_and_a_fail_is_sent_once(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    """Pins the delivery verdicts behind a redirecting proxy: a completion is
    retried until its deadline, then LOST (a Kafka record stays uncommitted);
    a fail is sent once and LOST (it reached something: never resent)."""
    server = serve(_nth([Act(_redirect("302 Found"))]))
    client = make(server.url)
    done = Outcome("j1", "t", succeeded=True)
    assert deliver(client, "w", done, deadline=1.0) is ReportStatus.LOST
    completes = len(server.requests)
    assert completes >= 2  # retried
    failed = Outcome.failure("j2", "t", "boom", retryable=True)
    assert deliver(client, "w", failed, deadline=5.0) is ReportStatus.LOST
    fails = [r for r in server.requests if "/v1/jobs/j2/fail" in r.line]
    assert len(fails) == 1


KAFKA_410 = _json_answer(
    "410 Gone",
    b'{"error":"poll path disabled","dispatch_mode":"kafka_outbox",'
    b'"hint":"consume directly from Kafka topic workflow.jobs.<jobType>"}\n',
)


def test_kafka_mode_410_is_a_dispatch_mode_error(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    server = serve(_nth([Act(KAFKA_410)]))
    with pytest.raises(DispatchModeError) as info:
        make(server.url).poll_jobs("w", ["t"])
    err = info.value
    assert isinstance(err, EngineClientError)
    assert err.status_code == 410
    assert err.retryable is False
    assert err.dispatch_mode == "kafka_outbox"
    assert err.error_code == "poll path disabled"
    assert 'dispatch = "kafka"' in err.message
    assert "workflow.jobs.<jobType>" in err.message  # the engine's hint is kept


def test_other_410_is_a_plain_client_error(
    serve: Serve, make: Callable[[str], WorkerEngineClient]
) -> None:
    server = serve(_nth([Act(_json_answer("410 Gone", b'{"error":"gone","reason":"gone"}'))]))
    with pytest.raises(EngineClientError) as info:
        make(server.url).poll_jobs("w", ["t"])
    assert type(info.value) is EngineClientError
    assert info.value.retryable is False


# -- the factory -----------------------------------------------------------------


def test_factory_picks_the_lean_client_without_a_proxy() -> None:
    client = make_worker_client("http://engine.test:8080", 5.0, token="t")
    try:
        assert isinstance(client, LeanJobClient)
        assert client.timeout == 5.0
    finally:
        client.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_factory_picks_requests_when_a_proxy_is_set(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = make_worker_client("http://engine.test:8080", 5.0)
    try:
        assert isinstance(client, RestEngineClient)
    finally:
        client.close()  # type: ignore[attr-defined]


def test_factory_honours_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "engine.test")
    client = make_worker_client("http://engine.test:8080", 5.0)
    try:
        assert isinstance(client, LeanJobClient)
    finally:
        client.close()  # type: ignore[attr-defined]


def test_tls_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert lean.ca_bundle_for(False) is None
    assert lean.ca_bundle_for("/etc/my-ca.pem") == "/etc/my-ca.pem"
    # The same authorities requests trusts.
    assert lean.ca_bundle_for(True) == requests.utils.DEFAULT_CA_BUNDLE_PATH
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/env/ca.pem")
    assert lean.ca_bundle_for(True) == "/env/ca.pem"
    unverified = lean.tls_context(False)
    assert unverified.check_hostname is False
    verified = lean.tls_context(requests.utils.DEFAULT_CA_BUNDLE_PATH)
    assert verified.check_hostname is True
    assert verified.cert_store_stats()["x509_ca"] > 0
    # ca_bundle turns verification on, as in the supervisor's settings.
    client = make_worker_client("https://engine.test", 5.0, verify=False, ca_bundle=str(tmp_path))
    try:
        assert isinstance(client, LeanJobClient)
        assert client._tls is not None
        assert client._tls.check_hostname is True
    finally:
        client.close()  # type: ignore[attr-defined]


def test_tls_handshake_failure_was_not_sent() -> None:
    # A plain-HTTP server behind an https:// URL: the handshake fails on its
    # answer before any request byte is written.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def answer_plain_http() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer_plain_http, daemon=True)
    thread.start()
    try:
        with (
            LeanJobClient(f"https://127.0.0.1:{port}", timeout=5) as client,
            pytest.raises(EngineConnectionError) as info,
        ):
            client.fail_job("j", "w", "x")
    finally:
        thread.join(10)
        listener.close()
    assert not thread.is_alive()
    assert info.value.request_sent is False
    assert not isinstance(info.value, EngineTimeoutError)
