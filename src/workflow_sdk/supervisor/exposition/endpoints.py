"""The metrics port's other paths: /healthz, /readyz, /status, POST /pause and /resume.

``Endpoints`` is the WSGI application of the metrics server: these paths
are answered here, every other one by prometheus_client's application, as
before (``/metrics``). What each answer says comes from the supervisor's
``Probes`` (called on the server's threads; they read what the main loop
published, never the loop's objects); this module only routes, checks who
may ask, and formats.

- ``GET /healthz``, ``GET /readyz``: 200 or 503 with one line of text
  saying why (``health``'s verdicts).
- ``GET /status``: a JSON document (``status_document``): the workers, the
  held jobs, the job source, paused or not, both verdicts.
- ``POST /pause``, ``POST /resume``: intake paused or resumed by the main
  loop (the request waits for it); only from this host (a loopback
  address, or the address the connection came in on) and never from a web
  page (a request carrying ``Origin``, which browsers send with every
  POST, is refused): a scraper from another machine may read, not act.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client.core import Metric

from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.exposition.health import Verdict
from workflow_sdk.supervisor.exposition.status import PoolSnapshot

#: The WSGI environ key under which the server's handler puts the local
#: address the connection came in on (``exporter._QuietHandler``).
LOCAL_ADDRESS_KEY = "workflow_sdk.local_address"
#: The version of the /status document's layout.
STATUS_VERSION = 1

_MEMORY_GAUGE = re.compile(r"^workflow_supervisor_worker_(\w+_bytes)$")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Probes:
    """What the endpoints ask the supervisor (on the server's threads).

    ``control``: "pause" or "resume", with who asked (for the log); the
    verdict once the main loop has acted (or given up waiting for it).
    """

    health: Callable[[], Verdict]
    ready: Callable[[], Verdict]
    status: Callable[[], dict[str, Any]]
    control: Callable[[str, str], Verdict]


def worker_memory(families: Iterable[Metric]) -> dict[int, dict[str, int]]:
    """Each worker's ``workflow_supervisor_worker_*_bytes`` gauges by slot
    (``{1: {"rss_bytes": ..., "uss_bytes": ...}}``): whichever of them the
    scrape has, so a new one shows in /status without a change here."""
    memory: dict[int, dict[str, int]] = {}
    for family in families:
        match = _MEMORY_GAUGE.match(family.name)
        if match is None or family.type != "gauge":
            continue
        for sample in family.samples:
            slot = sample.labels.get("slot", "")
            if slot.isdigit():
                memory.setdefault(int(slot), {})[match.group(1)] = int(sample.value)
    return memory


def _ago(now: float, then: float) -> float | None:
    return round(now - then, 3) if then else None


def status_document(
    snapshot: PoolSnapshot,
    now: float,
    *,
    pid: int,
    config: str,
    health: Verdict,
    ready: Verdict,
    kafka: SourceStats | None = None,
    memory: Mapping[int, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The /status document: plain JSON types, ages in seconds (not the
    parent's clock), memory in bytes (``memory`` overrides the snapshot's
    last RSS sample with what the scrape reads now)."""
    workers = []
    for view in snapshot.workers:
        job = None
        if view.job_id:
            job = {
                "id": view.job_id,
                "type": view.job_type,
                "running_seconds": _ago(now, view.job_started),
            }
        entry: dict[str, Any] = {
            "slot": view.slot,
            "pid": view.pid,
            "state": view.state,
            "job": job,
            "jobs_done": view.jobs_done,
            "rss_bytes": view.rss_bytes,
        }
        entry.update((memory or {}).get(view.slot, {}))
        workers.append(entry)
    source = snapshot.source
    failing = source.failures > 0
    source_doc: dict[str, Any] = {
        "kind": source.kind,
        "open": source.open,
        "last_ok_seconds_ago": _ago(now, source.last_ok_at),
        "failures": source.failures,
        "last_error": source.last_error if failing else None,
        "retry_in_seconds": round(max(0.0, source.next_request_at - now), 3) if failing else None,
        "request_out_seconds": _ago(now, source.in_flight_since),
        "waits_for_reports": source.armed,
    }
    if kafka is not None:
        source_doc["kafka"] = {
            "in_flight": kafka.in_flight,
            "offsets_pending": kafka.offsets_pending,
            "partitions_held_back": kafka.partitions_held_back,
            "fetched": kafka.fetched,
            "commit_errors": kafka.commit_errors,
        }
    return {
        "version": STATUS_VERSION,
        "pid": pid,
        "config": config,
        "phase": snapshot.phase,
        "paused": snapshot.paused,
        "healthy": {"ok": health.ok, "reason": health.reason},
        "ready": {"ok": ready.ok, "reason": ready.reason},
        "snapshot_age_seconds": round(max(0.0, now - snapshot.taken_at), 3),
        "workers_target": snapshot.target,
        "workers": workers,
        "jobs": {
            "held": snapshot.jobs_held,
            "held_limit": snapshot.held_limit,
            "succeeded": snapshot.jobs_succeeded,
            "failed": snapshot.jobs_failed,
        },
        "source": source_doc,
    }


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.split("%", maxsplit=1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_local_peer(remote: str, local: str) -> bool:
    """Whether a connection from ``remote`` to ``local`` comes from this
    host: a loopback address, or the very address it came in on (a client
    on this host reaching a non-loopback bind address). TCP's handshake
    keeps a remote peer from posing as either."""
    peer = _address(remote)
    if peer is None:
        return False
    return peer.is_loopback or peer == _address(local)


#: Path -> the methods it answers.
_METHODS = {
    "/healthz": ("GET", "HEAD"),
    "/readyz": ("GET", "HEAD"),
    "/status": ("GET", "HEAD"),
    "/pause": ("POST",),
    "/resume": ("POST",),
}


class Endpoints:
    """The metrics server's WSGI application (see the module doc)."""

    def __init__(self, metrics_app: WsgiApp, probes: Probes) -> None:
        self._metrics_app = metrics_app
        self._probes = probes

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        methods = _METHODS.get(path)
        if methods is None:
            return self._metrics_app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in methods:
            allowed = ", ".join(methods)
            text = f"{path} answers {allowed} only\n"
            return _answer(start_response, 405, text, head=False, extra=[("Allow", allowed)])
        head = method == "HEAD"
        if path == "/healthz":
            return _verdict(start_response, self._probes.health(), head)
        if path == "/readyz":
            return _verdict(start_response, self._probes.ready(), head)
        if path == "/status":
            body = json.dumps(self._probes.status(), indent=2) + "\n"
            return _answer(start_response, 200, body, head=head, kind="application/json")
        return self._control(environ, start_response, path[1:])

    def _control(
        self, environ: dict[str, Any], start_response: StartResponse, action: str
    ) -> Iterable[bytes]:
        remote = str(environ.get("REMOTE_ADDR", ""))
        if "HTTP_ORIGIN" in environ:
            text = f"/{action} is refused from a web page (the request carries Origin)\n"
            return _answer(start_response, 403, text)
        if not is_local_peer(remote, str(environ.get(LOCAL_ADDRESS_KEY, ""))):
            text = f"/{action} is only accepted from this host (not from {remote})\n"
            return _answer(start_response, 403, text)
        verdict = self._probes.control(action, f"POST /{action} from {remote}")
        return _verdict(start_response, verdict, head=False)


def _verdict(start_response: StartResponse, verdict: Verdict, head: bool) -> Iterator[bytes]:
    return _answer(start_response, verdict.http_status, verdict.reason + "\n", head=head)


def _answer(
    start_response: StartResponse,
    status: int,
    text: str,
    *,
    head: bool = False,
    kind: str = "text/plain; charset=utf-8",
    extra: list[tuple[str, str]] | None = None,
) -> Iterator[bytes]:
    body = text.encode()
    headers = [
        ("Content-Type", kind),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *(extra or []),
    ]
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return iter([] if head else [body])


__all__ = [
    "LOCAL_ADDRESS_KEY",
    "STATUS_VERSION",
    "Endpoints",
    "Probes",
    "is_local_peer",
    "status_document",
    "worker_memory",
]
