"""A lean client for the three hot calls (poll, complete, fail) on plain sockets.

``requests`` costs more than twice the CPU of a bare request on a kept-alive
connection; a supervisor that makes two or three calls per job feels it.
``LeanJobClient`` writes each request in one ``sendall`` from a header block
built once, reads the answer with ``workflow_sdk.client.http11`` (status
line, headers, Content-Length or chunked bodies), speaks only the
``WorkerEngineClient`` protocol, checks and translates exactly as
``RestEngineClient`` does (both go through ``workflow_sdk.client.wire`` and
``workflow_sdk.client.models``), and keeps one keep-alive connection per
calling thread, so the poller and the reporter threads never wait for one
another.

A kept-alive connection may have been closed by the engine (its idle timeout
is 120 s) or by anything in between. The client resends a request on a fresh
connection only when that cannot do harm:

- the idle connection is seen closed before the request is written: nothing
  was sent, it simply reconnects;
- writing the request on a reused connection fails (reset, broken pipe): the
  engine cannot have received the whole request, so it cannot have acted;
- the connection is reset or closed before any byte of the answer, after the
  whole request went out: the engine may have acted. Only ``complete`` is
  resent (a second completion of a completed job is a no-op). A poll is not:
  the engine may have claimed jobs for it, and a resend would claim more
  while those wait out their lease. A fail is not: it is not idempotent.
  Both raise ``EngineConnectionError`` with ``request_sent=True``, so
  ``reporting.deliver`` does not resend the fail.

Proxies are not supported here: ``make_worker_client`` hands out
``RestEngineClient`` whenever the environment routes the engine's URL through
one (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` not bypassed by
``NO_PROXY``), as ``requests`` would.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlsplit

import requests.utils

from workflow_sdk import _version
from workflow_sdk.client import http11, models, wire
from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineConnectionError
from workflow_sdk.sanitize import redact_url

# Failures of a kept-alive connection that the peer closed or reset.
_STALE_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def ca_bundle_for(verify: bool | str) -> str | None:
    """The CA file or directory ``requests`` would trust for ``verify``.

    ``None`` means no verification. For ``True``: ``REQUESTS_CA_BUNDLE``,
    then ``CURL_CA_BUNDLE``, then certifi's bundle, as ``requests`` does, so
    both clients trust the same authorities.
    """
    if verify is False:
        return None
    if isinstance(verify, str):
        return verify
    env = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return env or requests.utils.DEFAULT_CA_BUNDLE_PATH


def tls_context(verify: bool | str) -> ssl.SSLContext:
    bundle = ca_bundle_for(verify)
    if bundle is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def _dropped(sock: socket.socket) -> bool:
    """True when an idle kept-alive connection has something to read.

    An idle connection has nothing to say: readable means the peer closed it
    (end of file), reset it, or sent something unasked; none is usable.
    """
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class _Connection:
    """One thread's kept-alive socket (``None`` until the first call)."""

    sock: socket.socket | None = None

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class _ThreadConnection(threading.local):
    conn: _Connection | None = None


class LeanJobClient:
    """``WorkerEngineClient`` over plain sockets; safe to share between threads.

    :param base_url: the engine's REST address, e.g. ``http://engine:8080``.
    :param timeout: seconds for connecting, and for each read and write.
    :param token: bearer token sent as ``Authorization``.
    :param verify: TLS verification: ``True`` (the CA bundle ``requests``
        would use), ``False``, or the path of a CA bundle (file or directory).
    :param headers: extra headers sent with every request.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 30.0,
        *,
        token: str | None = None,
        verify: bool | str = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.base_url)
        if not parts.hostname:
            raise ValueError(f"base_url has no host: {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = quote(parts.path, safe="/%:@!$&'()*+,;=")
        self._tls = tls_context(verify) if self._https else None
        fields: dict[str, str] = {
            "Host": parts.netloc.rpartition("@")[2],
            "User-Agent": f"rochallor-sdk/{_version.VERSION} lean",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        fields.update(headers or {})
        if token:
            fields["Authorization"] = f"Bearer {token}"
        # The header block is written as is: a line break would split a request.
        wire.check_headers(fields)
        # Everything but the request line and Content-Length, encoded once.
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode(
            "latin-1"
        )
        self._local = _ThreadConnection()
        # Every connection made, with its thread, so close() reaches them all
        # and the connections of threads that ended are closed, not leaked.
        self._lock = threading.Lock()
        self._made: list[tuple[threading.Thread, _Connection]] = []

    # -- the WorkerEngineClient protocol ---------------------------------------

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1, *, lease_seconds: int = 0
    ) -> list[dict[str, Any]]:
        """Claim up to ``max_jobs`` jobs (each leased for 30 s by the engine,
        or ``lease_seconds`` on engines with lease extension; 0 = not sent)."""
        body = wire.encode_json(wire.poll_body(worker_id, job_types, max_jobs, lease_seconds))
        answer = self._call(wire.POLL_PATH, body, expect_json=True, resend_after_send=False)
        return models.parse_poll(answer)

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        body = wire.encode_json(wire.complete_body(worker_id, variables))
        self._call(wire.complete_path(job_id), body, expect_json=False, resend_after_send=True)

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        """Fail a job. Not idempotent: never resent once it may have arrived."""
        body = wire.encode_json(wire.fail_body(worker_id, error_message, retryable))
        self._call(wire.fail_path(job_id), body, expect_json=False, resend_after_send=False)

    # -- transport -------------------------------------------------------------

    def _connection(self) -> _Connection:
        conn = self._local.conn
        if conn is None:
            conn = self._local.conn = _Connection()
            with self._lock:
                for thread, old in self._made:
                    if not thread.is_alive():
                        old.close()
                self._made = [(t, c) for t, c in self._made if t.is_alive()]
                self._made.append((threading.current_thread(), conn))
        return conn

    def _open(self, url: str) -> socket.socket:
        """A new connection; a failure here means nothing was sent."""
        try:
            sock = socket.create_connection((self._host, self._port), self.timeout)
        except TimeoutError as exc:
            raise wire.connect_timeout_error(exc, method="POST", url=url) from exc
        except OSError as exc:
            # Refused, unknown host, unreachable network.
            raise wire.not_connected_error(exc, method="POST", url=url) from exc
        try:
            # One write per request; no Nagle wait behind the answer's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
        except TimeoutError as exc:
            sock.close()
            raise wire.connect_timeout_error(exc, method="POST", url=url) from exc
        except ssl.SSLError as exc:
            # The TLS handshake or the certificate failed.
            sock.close()
            raise wire.tls_error(exc, request_written=False, method="POST", url=url) from exc
        except OSError as exc:
            sock.close()
            raise wire.not_connected_error(exc, method="POST", url=url) from exc
        return sock

    def _call(self, path: str, body: bytes, *, expect_json: bool, resend_after_send: bool) -> Any:
        url = self.base_url + path
        request = b"".join(
            (
                f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("ascii"),
                self._head,
                f"Content-Length: {len(body)}\r\n\r\n".encode("ascii"),
                body,
            )
        )
        conn = self._connection()
        # Set when a first attempt may have reached the engine (a resent
        # complete): a failure of the second one must not claim otherwise.
        maybe_sent = False
        for attempt in (1, 2):
            last = attempt == 2
            sock = conn.sock
            if sock is not None and _dropped(sock):
                conn.close()
                sock = None
            reused = sock is not None
            if sock is None:
                try:
                    sock = conn.sock = self._open(url)
                except EngineConnectionError as exc:
                    exc.request_sent = exc.request_sent or maybe_sent
                    raise
            try:
                sock.sendall(request)
            except OSError as exc:
                # The request was not written whole: the engine cannot act on it.
                conn.close()
                if reused and not last and isinstance(exc, _STALE_ERRORS):
                    continue
                if isinstance(exc, ssl.SSLError):
                    raise wire.tls_error(
                        exc, request_written=maybe_sent, method="POST", url=url
                    ) from exc
                raise wire.lost_error(exc, request_sent=maybe_sent, method="POST", url=url) from exc
            try:
                answer = http11.read_answer(sock)
            except TimeoutError as exc:
                conn.close()
                raise wire.answer_timeout_error(self.timeout, exc, method="POST", url=url) from exc
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                # Reset or closed before any byte of an answer (not a cut
                # answer, not garbage), after the whole request went out.
                stale = isinstance(exc, _STALE_ERRORS)
                if stale and reused and not last and resend_after_send:
                    maybe_sent = True
                    continue
                if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
                    raise wire.tls_error(exc, request_written=True, method="POST", url=url) from exc
                raise wire.lost_error(exc, request_sent=True, method="POST", url=url) from exc
            if not answer.keep_alive:
                conn.close()
            return wire.read_answer(
                answer.status,
                answer.reason,
                answer.body,
                method="POST",
                url=url,
                expect_json=expect_json,
            )
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        """Close every thread's connection; a later call opens a new one."""
        with self._lock:
            made = list(self._made)
        for _, conn in made:
            conn.close()

    def __enter__(self) -> LeanJobClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LeanJobClient({redact_url(self.base_url)!r})"


def proxy_for(url: str) -> str | None:
    """The proxy the environment routes ``url`` through, as ``requests`` decides."""
    proxies = requests.utils.get_environ_proxies(url, no_proxy=None)
    return requests.utils.select_proxy(url, proxies)


def make_worker_client(
    url: str,
    timeout: float = 30.0,
    *,
    token: str | None = None,
    verify: bool = True,
    ca_bundle: str | None = None,
) -> WorkerEngineClient:
    """The client for a worker's hot calls: ``LeanJobClient``, or
    ``RestEngineClient`` when the environment sets a proxy for ``url``.

    ``ca_bundle``, when given, is the CA file (or directory) to verify the
    engine's certificate with, and turns verification on whatever ``verify``
    says (as the supervisor's ``ca_bundle`` setting does); ``verify=False``
    without it turns verification off. Both clients raise the same errors
    with the same ``retryable`` and ``request_sent`` verdicts.
    """
    tls: bool | str = ca_bundle or verify
    if proxy_for(url) is not None:
        return RestEngineClient(url, timeout, token=token, verify=tls)
    return LeanJobClient(url, timeout, token=token, verify=tls)


__all__ = ["LeanJobClient", "ca_bundle_for", "make_worker_client", "proxy_for", "tls_context"]
