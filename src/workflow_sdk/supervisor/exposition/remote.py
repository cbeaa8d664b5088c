"""Talking to a running supervisor through its metrics port: status, pause, resume.

``rochallor-supervisor status``, ``pause`` and ``resume`` (``cli``) find the port in
the configuration's ``[metrics]`` section (``metrics_url``) or take a URL,
ask ``/status`` or POST ``/pause``/``/resume`` (``exposition.endpoints``
answers them), and print what came back: ``render_status`` turns the
/status document into a table. Everything shown comes from another
process: its control characters are escaped before they reach a terminal.

This module starts no supervisor and reads no metric itself.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from workflow_sdk.sanitize import escape_controls
from workflow_sdk.supervisor.config import MetricsConfig

#: Seconds to wait for the supervisor's answer (a pause waits for its main
#: loop, up to ``loop.control.CONTROL_WAIT``).
REQUEST_TIMEOUT = 10.0


class RemoteError(Exception):
    """The supervisor could not be asked (``unreachable``) or refused."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def metrics_url(settings: MetricsConfig) -> tuple[str | None, str]:
    """The base URL of the metrics port ``settings`` describe, or None and
    why it cannot be reached from here."""
    if settings.port is None:
        return None, "metrics.port is not set: the supervisor serves no metrics port to ask"
    if settings.port == 0:
        return None, (
            "metrics.port is 0 (a free port picked at each start): give the port with --url "
            "(the supervisor logs it: 'metrics on http://...')"
        )
    host = settings.bind
    # A wildcard bind answers on loopback too: ask there.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{settings.port}", ""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


#: No proxy from the environment: the supervisor is on this host (a proxy
#: in between would also make /pause come from elsewhere, and be refused).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, method: str, timeout: float) -> Answer:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise RemoteError(
            f"cannot reach the supervisor at {url}: {reason}", unreachable=True
        ) from None


def _check_scheme(base: str) -> str:
    base = base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise RemoteError(f"{base}: not an http:// or https:// URL", unreachable=False)
    return base


def fetch_status(base: str, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """The supervisor's /status document."""
    url = _check_scheme(base) + "/status"
    answer = _request(url, "GET", timeout)
    if answer.status != 200:
        raise RemoteError(
            f"{url} answered {answer.status}: {escape_controls(answer.body.strip())}",
            unreachable=True,
        )
    try:
        document = json.loads(answer.body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "workers" not in document:
        raise RemoteError(
            f"{url} did not answer a supervisor's status (is this a rochallor-supervisor's "
            "metrics port?)",
            unreachable=True,
        )
    return document


def control(base: str, action: str, timeout: float = REQUEST_TIMEOUT) -> str:
    """POST /pause or /resume; the supervisor's answer, or RemoteError."""
    url = _check_scheme(base) + "/" + action
    answer = _request(url, "POST", timeout)
    text = escape_controls(answer.body.strip())
    if answer.status != 200:
        raise RemoteError(f"{url} answered {answer.status}: {text}", unreachable=False)
    return text


# -- the table ----------------------------------------------------------------------


def _size(value: object) -> str:
    if not isinstance(value, (int, float)) or value <= 0:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"  # pragma: no cover


def _seconds(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _text(value: object) -> str:
    return escape_controls(str(value)) if value not in (None, "") else "-"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render_status(document: dict[str, Any]) -> str:
    """The /status document as a table for a terminal."""
    lines = []
    state = _text(document.get("phase"))
    if document.get("paused"):
        state += ", paused"
    lines.append(
        f"supervisor pid {_text(document.get('pid'))} ({_text(document.get('config'))}): {state}"
    )
    for key in ("healthy", "ready"):
        verdict = document.get(key) or {}
        answer = "yes" if verdict.get("ok") else "NO"
        lines.append(f"  {key + ':':8} {answer}: {_text(verdict.get('reason'))}")
    workers = document.get("workers") or []
    busy = sum(1 for w in workers if w.get("state") == "busy")
    lines.append(
        f"workers: {len(workers)} (target {_text(document.get('workers_target'))}), {busy} busy"
    )
    extra = sorted({k for w in workers for k in w if k.endswith("_bytes") and k != "rss_bytes"})
    header = ["SLOT", "PID", "STATE", "JOB", "TYPE", "FOR", "RSS"]
    header += [k[: -len("_bytes")].upper() for k in extra] + ["DONE"]
    rows = [header]
    for worker in workers:
        job = worker.get("job") or {}
        row = [
            _text(worker.get("slot")),
            _text(worker.get("pid")),
            _text(worker.get("state")),
            _text(job.get("id")),
            _text(job.get("type")),
            _seconds(job.get("running_seconds")) if job else "-",
            _size(worker.get("rss_bytes")),
        ]
        row += [_size(worker.get(k)) for k in extra] + [_text(worker.get("jobs_done"))]
        rows.append(row)
    if workers:
        lines += _table(rows)
    jobs = document.get("jobs") or {}
    lines.append(
        f"jobs held: {_text(jobs.get('held'))} of {_text(jobs.get('held_limit'))}; "
        f"{_text(jobs.get('succeeded'))} succeeded, {_text(jobs.get('failed'))} failed"
    )
    lines.append("job source: " + _source_line(document.get("source") or {}))
    kafka = (document.get("source") or {}).get("kafka")
    if isinstance(kafka, dict):
        lines.append(
            f"kafka: {_text(kafka.get('in_flight'))} in flight, "
            f"{_text(kafka.get('offsets_pending'))} offsets pending, "
            f"{_text(kafka.get('partitions_held_back'))} partitions held back"
        )
    return "\n".join(lines)


def _source_line(source: dict[str, Any]) -> str:
    kind = _text(source.get("kind"))
    if not source.get("open"):
        return f"{kind}, not open yet (it opens with the first ready worker)"
    if source.get("failures"):
        return (
            f"{kind}, FAILING: {_text(source.get('failures'))} failed request(s) in a row, "
            f"next in {_seconds(source.get('retry_in_seconds'))}: {_text(source.get('last_error'))}"
        )
    parts = [kind]
    ago = source.get("last_ok_seconds_ago")
    parts.append(f"last answer ok {_seconds(ago)} ago" if ago is not None else "no answer yet")
    out = source.get("request_out_seconds")
    if out is not None:
        parts.append(f"a request out for {_seconds(out)}")
    elif source.get("waits_for_reports"):
        parts.append("a request waits for report answers")
    return ", ".join(parts)


__all__ = [
    "REQUEST_TIMEOUT",
    "RemoteError",
    "control",
    "fetch_status",
    "metrics_url",
    "render_status",
]
