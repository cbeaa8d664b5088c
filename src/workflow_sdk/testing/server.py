"""The HTTP side of the local engine: routing, bodies, answers, connections.

Answers mimic the real engine byte for byte where the contract says how:
``application/json`` bodies ending in a newline, the error envelope, the
plain-text 404 of an unknown route and the empty 405 of a wrong method.

Speed matters (benchmarks drive the local engine): each answer goes out in
one ``sendall``, and ``TCP_NODELAY`` is set too. Either one alone avoids the
Nagle / delayed-ACK stall (~40 ms per keep-alive request on loopback) that a
status line written apart from its body meets; both are kept, and tested.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from workflow_sdk.testing.store import LEASE_REQUEST_RANGE, EngineError, EngineState

_log = logging.getLogger("workflow_sdk.testing")

# A handler gets (state, path parameters, query, body); body is None when the
# request carried none (or only a chunked one, for the endpoints that ignore it).
Handler = Callable[[EngineState, list[str], dict[str, list[str]], "Body"], tuple[int, Any]]


class Body:
    """A request body as read from the socket."""

    def __init__(self, data: bytes, has_length: bool) -> None:
        self.data = data
        self.has_length = has_length  # sent with Content-Length (not chunked)


_decoder = json.JSONDecoder()


def _decode(data: bytes) -> Any:
    """The first JSON value of ``data``, as Go's ``json.Decoder`` reads it."""
    text = data.decode("utf-8", errors="replace").lstrip()
    if not text:
        raise EngineError(400, "invalid request body: EOF")
    try:
        value, _ = _decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise EngineError(400, f"invalid request body: {exc.msg} at offset {exc.pos}") from exc
    return value


def _object(value: Any, what: str = "request body") -> dict[str, Any]:
    if value is None:
        return {}  # JSON null decodes into an empty struct
    if not isinstance(value, dict):
        raise EngineError(400, f"invalid {what}: expected a JSON object")
    return value


def _required_object(body: Body) -> dict[str, Any]:
    return _object(_decode(body.data))


def _optional_object(body: Body) -> dict[str, Any]:
    if not body.data.strip():
        return {}
    return _object(_decode(body.data))


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EngineError(400, f"invalid request body: {key} has the wrong type")
    return value


def _variables(obj: dict[str, Any], key: str = "variables") -> dict[str, Any]:
    value = _field(obj, key, dict, {})
    assert isinstance(value, dict)
    return value


def _int_query(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(query.get(key, [""])[0])
    except ValueError:
        return default


def _str_query(query: dict[str, list[str]], key: str) -> str:
    return query.get(key, [""])[0]


# -- endpoint handlers -----------------------------------------------------------


def _upload_definition(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    return 201, state.upload_definition(_decode(body.data))


def _list_definitions(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    return 200, state.list_definitions(
        _str_query(query, "keyword"),
        _int_query(query, "page", 0),
        _int_query(query, "pageSize", 20),
    )


def _get_definition(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    # Only definition ids are percent-decoded, as on the real engine.
    return 200, state.get_definition(unquote(params[0]))


def _get_definition_version(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    try:
        version = int(params[1])
    except ValueError as exc:
        raise EngineError(400, f"invalid version {params[1]!r}") from exc
    return 200, state.get_definition(unquote(params[0]), version)


def _start_instance(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    request = _required_object(body)
    return 201, state.start_instance(
        _field(request, "definitionId", str, ""),
        _field(request, "definitionVersion", int, None),
        _variables(request),
        _field(request, "businessKey", str, None),
    )


def _list_instances(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    return 200, state.list_instances(
        _str_query(query, "definitionId"),
        _str_query(query, "status"),
        _str_query(query, "businessKey"),
        _int_query(query, "page", 0),
        _int_query(query, "pageSize", 20),
    )


def _get_instance(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    return 200, state.get_instance(params[0])


def _history(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    return 200, state.history(params[0])


def _cancel(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    request = _optional_object(body)
    return 200, state.cancel_instance(params[0], _field(request, "reason", str, ""))


def _complete_user_task(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    # Read only with a Content-Length; the OpenAPI file's "result" and
    # "completedBy" are dropped, as the real engine drops them.
    request = _optional_object(body) if body.has_length else {}
    state.complete_user_task(params[0], params[1], _variables(request))
    return 204, None


def _signal(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    # The body is the variable map itself, read only with a Content-Length.
    variables = _optional_object(body) if body.has_length else {}
    state.signal(params[0], params[1], variables)
    return 204, None


def _poll(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    if state.poll_gone is not None:
        return 410, state.poll_gone  # Kafka dispatch mode: polls are gone for good
    request = _required_object(body)
    worker_id = _field(request, "workerId", str, "")
    job_types = _field(request, "jobTypes", list, [])
    if not worker_id:
        raise EngineError(400, "workerId is required")
    if not job_types or not all(isinstance(t, str) and t for t in job_types):
        raise EngineError(400, "jobTypes must be a non-empty list of job types")
    max_jobs = _field(request, "maxJobs", int, 0)
    # A released engine reads only the three fields above.
    lease = _lease_request(request) if state.heartbeat else 0
    return 200, state.poll(worker_id, job_types, max_jobs, lease)


def _lease_request(request: dict[str, Any]) -> int:
    """``leaseSeconds``: 0 (the engine's default) or within LEASE_REQUEST_RANGE."""
    lease = _field(request, "leaseSeconds", int, 0)
    low, high = LEASE_REQUEST_RANGE
    if lease != 0 and not low <= lease <= high:
        raise EngineError(400, f"leaseSeconds must be 0 or from {low} to {high}, got {lease}")
    assert isinstance(lease, int)
    return lease


def _heartbeat(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    request = _required_object(body)
    worker_id = _field(request, "workerId", str, "")
    if not worker_id:
        raise EngineError(400, "workerId is required")
    return 200, state.heartbeat_job(params[0], worker_id, _lease_request(request))


def _complete_job(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    request = _required_object(body)
    state.complete_job(params[0], _variables(request))
    return 204, None


def _fail_job(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    request = _required_object(body)
    state.fail_job(
        params[0],
        _field(request, "errorMessage", str, ""),
        _field(request, "retryable", bool, False),  # missing means false
    )
    return 204, None


def _healthz(
    state: EngineState, params: list[str], query: dict[str, list[str]], body: Body
) -> tuple[int, Any]:
    return 200, None


_HEARTBEAT = ("v1", "jobs", "*", "heartbeat")

# Path patterns ("*" is one path segment) and their handlers per method.
_ROUTES: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
    (("healthz",), {"GET": _healthz}),
    (("v1", "definitions"), {"POST": _upload_definition, "GET": _list_definitions}),
    (("v1", "definitions", "*"), {"GET": _get_definition}),
    (("v1", "definitions", "*", "versions", "*"), {"GET": _get_definition_version}),
    (("v1", "instances"), {"POST": _start_instance, "GET": _list_instances}),
    (("v1", "instances", "*"), {"GET": _get_instance}),
    (("v1", "instances", "*", "history"), {"GET": _history}),
    (("v1", "instances", "*", "cancel"), {"POST": _cancel}),
    (("v1", "instances", "*", "user-tasks", "*", "complete"), {"POST": _complete_user_task}),
    (("v1", "instances", "*", "signals", "*"), {"POST": _signal}),
    (("v1", "jobs", "poll"), {"POST": _poll}),
    (("v1", "jobs", "*", "complete"), {"POST": _complete_job}),
    (("v1", "jobs", "*", "fail"), {"POST": _fail_job}),
    (_HEARTBEAT, {"POST": _heartbeat}),  # only on engines with lease extension
]


#: Names of the routes ``LocalEngine.fail_next`` can make answer an error.
_ROUTE_NAMES: dict[Handler, str] = {
    _poll: "poll",
    _complete_job: "complete",
    _fail_job: "fail",
    _heartbeat: "heartbeat",
    _get_instance: "instance",
    _history: "history",
    _start_instance: "start",
    _cancel: "cancel",
}
ROUTE_NAMES = frozenset(_ROUTE_NAMES.values())


def route(method: str, path: str, *, heartbeat: bool = False) -> tuple[Handler, list[str]] | int:
    """The handler and path parameters, or 404 / 405. Without ``heartbeat``
    the heartbeat route does not exist (a released engine)."""
    segments = path.split("/")[1:] if path.startswith("/") else []
    found_path = False
    for pattern, methods in _ROUTES:
        if len(pattern) != len(segments) or (pattern is _HEARTBEAT and not heartbeat):
            continue
        params: list[str] = []
        for want, got in zip(pattern, segments, strict=True):
            if want == "*":
                if not got:
                    break
                params.append(got)
            elif want != got:
                break
        else:
            found_path = True
            handler = methods.get(method)
            if handler is not None:
                return handler, params
    return 405 if found_path else 404


_MAX_LINE = 65536
_MAX_HEADERS = 100
_date_cache: list[Any] = [0, ""]


def _http_date() -> str:
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache[0], _date_cache[1] = second, formatdate(second, usegmt=True)
    return str(_date_cache[1])


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # TCP_NODELAY
    server_version = "rochallor-local-engine"
    sys_version = ""
    server: EngineHTTPServer

    request_headers: dict[str, str]
    raw_requestline: bytes

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request."""

    def parse_request(self) -> bool:
        """The request line and headers, without the ``email`` parser that
        ``BaseHTTPRequestHandler`` uses (measured: ~23 us against ~3 us for a
        typical header block, out of ~120 us per keep-alive request).
        Header names are lower-cased into ``request_headers``."""
        self.command = ""
        self.request_version = "HTTP/0.9"
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request line")
            return False
        self.command, self.path, self.request_version = words
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("iso-8859-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.request_headers = headers
        connection = headers.get("connection", "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        if headers.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _read_body(self) -> Body | None:
        """The whole body, or None (and close the connection) when it is unreadable."""
        if "chunked" in self.request_headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return Body(b"".join(chunks), has_length=False)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.request_headers.get("content-length")
        if length is None:
            return Body(b"", has_length=False)
        try:
            size = int(length)
        except ValueError:
            return None
        if size < 0:
            return None
        return Body(self.rfile.read(size) if size else b"", has_length=True)

    def _send(
        self,
        status: int,
        body: bytes | None,
        content_type: str | None = "application/json",
        extra: str = "",
    ) -> None:
        phrase = HTTPStatus(status).phrase
        head = [f"HTTP/1.1 {status} {phrase}\r\nDate: {_http_date()}\r\n"]
        if body is not None and content_type:
            head.append(f"Content-Type: {content_type}\r\n")
        if status != 204:
            head.append(f"Content-Length: {len(body) if body else 0}\r\n")
        allowed = self.server.allowed_origin(self.request_headers.get("origin", ""))
        if allowed:
            head.append(f"Access-Control-Allow-Origin: {allowed}\r\n")
            if allowed != "*":
                head.append("Vary: Origin\r\n")
        if self.close_connection:
            head.append("Connection: close\r\n")
        head.append(extra)
        head.append("\r\n")
        payload = "".join(head).encode("latin-1")
        if body and self.command != "HEAD":
            payload += body
        # One write for the whole answer (see the module docstring).
        self.wfile.write(payload)

    def _dispatch(self, method: str) -> None:
        path, _, query_text = self.path.partition("?")
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._send(400, b'{"error":"bad-request","reason":"unreadable request body"}\n')
            return
        if method == "OPTIONS":
            # CORS preflight, as the real engine's middleware answers it, for
            # the allowed origins only (see EngineHTTPServer.allowed_origin).
            self._send(
                204,
                None,
                extra="Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                "Access-Control-Allow-Headers: Accept, Authorization, Content-Type\r\n",
            )
            return
        found = route(method, path, heartbeat=self.server.state.heartbeat)
        if found == 404:
            self._send(
                404,
                b"404 page not found\n",
                "text/plain; charset=utf-8",
                "X-Content-Type-Options: nosniff\r\n",
            )
            return
        if found == 405:
            self._send(405, b"", None)
            return
        assert not isinstance(found, int)
        handler, params = found
        content_type = self.request_headers.get("content-type", "").lower()
        if handler is _upload_definition and (
            "application/xml" in content_type or "text/xml" in content_type
        ):
            error = EngineError(415, "XML definitions are not supported; send JSON")
            self._send_error(error)
            return
        query = parse_qs(query_text) if query_text else {}
        answered = self._run_handler(handler, params, query, body, method, path)
        if answered is None:
            return
        status, answer = answered
        if status == 204 or (answer is None and path == "/healthz"):
            self._send(status, None)
            return
        self._send(status, _json(answer))

    def _run_handler(  # noqa: PLR0917 (the request's parts, as _dispatch has them)
        self,
        handler: Handler,
        params: list[str],
        query: dict[str, list[str]],
        body: Body,
        method: str,
        path: str,
    ) -> tuple[int, Any] | None:
        """The handler's (status, answer); None when the answer was sent (an
        error) or must not be (the server is stopping)."""
        state = self.server.state
        injected = state.take_injected_error(_ROUTE_NAMES.get(handler, ""))
        if injected is not None and not injected[1]:
            self._send_injected(injected[0])  # as a gateway in front would: nothing applied
            return None
        report = params[0] if handler in (_complete_job, _fail_job) else None
        # From arrival to the change: what may overlap with another report of
        # the job (a fail's held answer comes after its change).
        with state.report_in_progress(report, handler):
            if handler is _complete_job and not state.wait_complete_delay(self.server.closing):
                self.close_connection = True  # the engine is stopping: no answer
                return None
            try:
                status, answer = handler(state, params, query, body)
            except EngineError as exc:
                self._send_error(exc)
                return None
            except Exception:
                # The real engine's panic answer: an empty 500. Say why, once.
                _log.exception("local engine: %s %s failed", method, path)
                self._send(500, b"", None)
                return None
        if handler is _fail_job and not self.server.state.wait_fail_answer_delay(
            self.server.closing
        ):
            self.close_connection = True  # the engine is stopping: no answer
            return None
        if injected is not None:
            self._send_injected(injected[0])  # applied, and the answer says otherwise
            return None
        return status, answer

    def _send_injected(self, status: int) -> None:
        """An injected error answer: the engine's 500 when it runs out of
        time (its envelope, a reason a client may retry), or a gateway's
        empty 502/503/504."""
        if status == 500:
            reason = "injected fault: context deadline exceeded"
            self._send(500, _json({"error": "internal-error", "reason": reason}))
        else:
            self._send(status, b"", None)

    def _send_error(self, exc: EngineError) -> None:
        self._send(exc.status, _json({"error": exc.code, "reason": exc.reason}))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")


def _json(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


class EngineHTTPServer(ThreadingHTTPServer):
    """A thread per connection, every connection tracked so that ``close``
    can end idle keep-alive connections and join their threads."""

    daemon_threads = True
    allow_reuse_address = True  # rebind the same port right after a stop
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], state: EngineState, *, cors_origins: Sequence[str] = ()
    ) -> None:
        self.state = state
        self.cors_origins = frozenset(cors_origins)
        #: Set when the server closes; ends a request's complete_delay early.
        self.closing = threading.Event()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RequestHandler)

    def allowed_origin(self, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for a request from ``origin``
        (None: no header, the browser keeps the answer from the page). The
        real engine allows every origin; this one only those it was given."""
        if not origin:
            return None
        if "*" in self.cors_origins:
            return "*"
        return origin if origin in self.cors_origins else None

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"local-engine-{self.server_address[1]}-conn-{client_address[1]}",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up is normal; anything else is worth a line.
        _log.debug("local engine: connection from %s failed", client_address, exc_info=True)

    def close_connections(self, timeout: float = 5.0) -> None:
        """End every open connection and join its thread."""
        self.closing.set()
        with self._connections_lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
        deadline = time.monotonic() + timeout
        for thread, _ in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


__all__ = ["ROUTE_NAMES", "EngineHTTPServer", "RequestHandler", "route"]
