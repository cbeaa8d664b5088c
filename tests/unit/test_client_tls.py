"""TLS failures: both clients tell one before the request was written from one
after it, against a real TLS server (a self-signed certificate made by the
``openssl`` command at test time)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import SSLError as Urllib3SSLError

from workflow_sdk.client import rest, wire
from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineConnectionError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus, deliver

#: What a broken TLS peer sends instead of a TLS record: plain text.
NOT_A_RECORD = b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(certificate, key) for 127.0.0.1, self-signed."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


@dataclass
class BreakingTLSServer:
    """Completes the handshake, reads one whole request, then answers with
    bytes that are not a TLS record and closes: the client's TLS layer fails
    after its request was written."""

    cert: str
    key: str
    requests: list[bytes] = field(default_factory=list)
    handshake_errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, self.key)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self.lock:
                self.handshake_errors.append(exc)
            conn.close()
            return
        with tls:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    body += chunk
            except (ssl.SSLError, OSError):
                return
            with self.lock:
                self.requests.append(head.split(b"\r\n", 1)[0])
            # Past the TLS layer, straight onto the TCP connection.
            os.write(tls.fileno(), NOT_A_RECORD)

    def lines(self) -> list[bytes]:
        with self.lock:
            return list(self.requests)

    def shutdown(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._acceptor.join(10)
        assert not self._acceptor.is_alive()
        for thread in self._threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in self._threads)


@pytest.fixture
def server(certificate: tuple[str, str]) -> Iterator[BreakingTLSServer]:
    running = BreakingTLSServer(*certificate)
    yield running
    running.shutdown()


CLIENTS: dict[str, Callable[[str, bool | str], WorkerEngineClient]] = {
    "lean": lambda url, verify: LeanJobClient(url, timeout=5, verify=verify),
    "rest": lambda url, verify: RestEngineClient(url, timeout=5, verify=verify),
}


@pytest.fixture(params=sorted(CLIENTS))
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[str, bool | str], Any]]:
    made: list[Any] = []

    def build(url: str, verify: bool | str) -> Any:
        client = CLIENTS[request.param](url, verify)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_a_tls_error_after_the_request_was_written_may_have_reached_the_engine(
    server: BreakingTLSServer, make: Callable[[str, bool | str], Any]
) -> None:
    """Pins: RestEngineClient called every TLS error "never sent"; a TLS
    failure on the answer, after the request went out, was resendable."""
    client = make(server.url, server.cert)
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j1", "w", "boom")
    assert info.value.request_sent is True
    assert info.value.retryable is True
    assert "TLS failure after the request was sent" in info.value.message
    assert server.lines() == [b"POST /v1/jobs/j1/fail HTTP/1.1"]


def test_a_fail_is_sent_once_after_a_tls_error_on_its_answer(
    server: BreakingTLSServer, make: Callable[[str, bool | str], Any]
) -> None:
    """Pins: one delivery, two fails: the fail was resent after a TLS error
    that came after the request was written (a fail is not idempotent)."""
    client = make(server.url, server.cert)
    failed = Outcome.failure("j1", "t", "boom", retryable=True)
    assert deliver(client, "w", failed, deadline=5.0) is ReportStatus.LOST
    assert server.lines() == [b"POST /v1/jobs/j1/fail HTTP/1.1"]


def test_a_refused_certificate_was_not_sent(
    server: BreakingTLSServer, make: Callable[[str, bool | str], Any]
) -> None:
    """The other side: a handshake that fails (the self-signed certificate is
    not trusted) sent nothing, so a fail may be sent again."""
    client = make(server.url, True)
    with pytest.raises(EngineConnectionError) as info:
        client.fail_job("j1", "w", "boom")
    assert info.value.request_sent is False
    assert "TLS failure before the request was sent" in info.value.message
    assert server.lines() == []


def test_a_completion_is_retried_after_a_tls_error_on_its_answer(
    server: BreakingTLSServer, make: Callable[[str, bool | str], Any]
) -> None:
    client = make(server.url, server.cert)
    done = Outcome("j1", "t", succeeded=True)
    # It may have been applied: sent again only once its in-flight window
    # passed (a short one here).
    assert deliver(client, "w", done, deadline=1.0, window=0.05) is ReportStatus.LOST
    assert len(server.lines()) >= 2
    assert set(server.lines()) == {b"POST /v1/jobs/j1/complete HTTP/1.1"}


# -- the translation alone, without a server -----------------------------------------


def _requests_ssl_error() -> requests.exceptions.SSLError:
    reason = Urllib3SSLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    return requests.exceptions.SSLError(MaxRetryError(None, "/v1/jobs/j/fail", reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("progress", "sent"),
    [
        (rest._Progress.STARTED, False),
        (rest._Progress.WRITTEN, True),
        # Not recorded (a pool the client did not make): assume it was sent.
        (rest._Progress.UNTRACKED, True),
    ],
)
def test_requests_tls_errors_follow_the_recorded_progress(
    progress: rest._Progress, sent: bool
) -> None:
    err = rest._transport_error(
        _requests_ssl_error(), 5.0, method="POST", url="https://e/v1/jobs/j/fail", progress=progress
    )
    assert isinstance(err, EngineConnectionError)
    assert err.request_sent is sent
    assert err.retryable is True


def test_the_wording_is_shared() -> None:
    before = wire.tls_error(ssl.SSLError("x"), request_written=False, method="POST", url="u")
    after = wire.tls_error(ssl.SSLError("x"), request_written=True, method="POST", url="u")
    assert (before.request_sent, after.request_sent) == (False, True)
    assert "before the request was sent" in before.message
    assert "after the request was sent" in after.message


def test_the_client_tracks_its_own_and_proxy_pools() -> None:
    """The progress records come from the connection classes this client puts
    into its pools, direct and through a proxy (a guard against a urllib3
    change that would bypass them: the TLS tests above would then fail too)."""
    with RestEngineClient("https://engine.test", timeout=5) as client:
        adapter = client._adapter
        for manager in (adapter.poolmanager, adapter.proxy_manager_for("http://proxy.test:3128")):
            for pool_cls in manager.pool_classes_by_scheme.values():
                assert getattr(pool_cls, "_rochallor_tracking", False)
        # Asking again for the same proxy does not wrap twice.
        again = adapter.proxy_manager_for("http://proxy.test:3128")
        assert all(
            pool.__bases__[0].__name__.startswith("HTTP")
            for pool in again.pool_classes_by_scheme.values()
        )


def test_tracking_pools_are_made_once() -> None:
    from urllib3.connectionpool import HTTPSConnectionPool  # noqa: PLC0415

    first = rest._tracking_pool(HTTPSConnectionPool)
    assert rest._tracking_pool(HTTPSConnectionPool) is first
    assert rest._tracking_pool(first) is first
