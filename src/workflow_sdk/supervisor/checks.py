"""What ``check`` verifies before a run, each as a verdict: ``None`` or a problem.

The same verdicts serve ``run`` where it meets the same situation (a metrics
port in use), so both commands say the same thing about it.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import traceback

import requests

from workflow_sdk.supervisor.clients import auth_headers, tls_verify
from workflow_sdk.supervisor.config import EngineConfig, MetricsConfig
from workflow_sdk.supervisor.exposition import multiproc

#: Frames from these are ours or the import machinery's, not the operator's.
_NOT_THEIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    os.path.dirname(importlib.__file__),
    "<frozen importlib",
)


def listen_problem(bind: str, port: int, exc: OSError) -> str:
    """Why the /metrics server cannot listen on ``bind:port``, naming the key."""
    if exc.errno == errno.EADDRINUSE:
        return f"metrics.port: {bind}:{port} is in use"
    reason = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"metrics.bind: cannot listen on {bind}:{port}: {reason}"
    return f"metrics.port: cannot listen on {bind}:{port}: {reason}"


def metrics_port_problem(metrics: MetricsConfig) -> str | None:
    """Try to bind the configured /metrics address (port 0 or no port: nothing to try)."""
    if not metrics.port:
        return None
    try:
        infos = socket.getaddrinfo(metrics.bind, metrics.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            # As the HTTP server does: a port in TIME_WAIT is not "in use".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return listen_problem(metrics.bind, metrics.port, exc)
    return None


def metrics_dir_problem(metrics: MetricsConfig) -> str | None:
    """A configured ``[metrics] dir`` that is not the service user's alone
    (the same verdict ``run`` acts on when it prepares the directory)."""
    if metrics.port is None or not metrics.dir:
        return None
    problem = multiproc.dir_problem(metrics.dir)
    return f"metrics.dir: {problem}" if problem else None


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error of a requests exception (the socket's, usually)."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        nested = current.__cause__ or current.__context__
        if nested is None:
            for arg in current.args:
                if isinstance(arg, BaseException):
                    nested = arg
                    break
            else:
                reason = getattr(current, "reason", None)
                nested = reason if isinstance(reason, BaseException) else None
        if nested is None:
            break
        current = nested
    return current


def _connection_reason(exc: requests.RequestException) -> str:
    cause = _root_cause(exc)
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror or cause})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[:1].lower() + cause.strerror[1:]
    text = str(cause) or type(cause).__name__
    # urllib3's texts embed object reprs; keep the part after the last colon.
    return text.rsplit(": ", 1)[-1].strip(" ')\"")


def engine_problem(engine: EngineConfig) -> str | None:
    """Why ``GET /healthz`` on the engine did not answer 200, or None."""
    try:
        response = requests.get(
            engine.url.rstrip("/") + "/healthz",
            headers=auth_headers(engine),
            timeout=engine.timeout,
            verify=tls_verify(engine),
            allow_redirects=False,
        )
    except requests.Timeout:
        return f"no answer within {engine.timeout:g} s (engine.timeout)"
    except requests.exceptions.SSLError as exc:
        return f"TLS error: {_connection_reason(exc)}"
    except requests.RequestException as exc:
        return _connection_reason(exc)
    with response:
        if response.status_code != 200:
            return f"/healthz answered {response.status_code} {response.reason or ''}".rstrip()
    return None


def _ours(filename: str) -> bool:
    return filename.startswith(_NOT_THEIRS)


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without the frames of this package and of
    importlib: what is left starts in the operator's own module."""
    details = traceback.TracebackException.from_exception(exc)
    frames = [frame for frame in details.stack if not _ours(frame.filename)]
    details.stack = traceback.StackSummary.from_list(frames)
    return "".join(details.format()).rstrip()


__all__ = [
    "engine_problem",
    "listen_problem",
    "metrics_dir_problem",
    "metrics_port_problem",
    "user_traceback",
]
