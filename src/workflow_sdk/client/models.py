"""Checks and normalises what the engine sends back.

The client hands its users plain dicts, but only after checking that they
have the shape the contract promises, so that a proxy's HTML page or a
truncated body becomes one clear ``EngineResponseError`` instead of a
``KeyError`` deep inside a caller.

One exception: a poll answer whose envelope is sound but one of whose jobs
is not is not refused whole. The engine has already locked every job in
it, so refusing the answer would leave the good ones waiting for their
lease (30-45 s). The malformed job is left out instead, logged at ERROR and
listed in ``PolledJobs.malformed``; nothing is reported for it (without an
id it cannot be), so the engine hands it out again after its lease.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from workflow_sdk.errors import EngineResponseError

log = logging.getLogger("workflow_sdk.client")

# The released engine serialises history items from a Go struct without JSON
# tags, so the keys arrive in PascalCase; the OpenAPI file documents camelCase.
_HISTORY_KEYS = {
    "ID": "id",
    "InstanceID": "instanceId",
    "StepID": "stepId",
    "StepType": "stepType",
    "AttemptNumber": "attemptNumber",
    "Status": "status",
    "StartedAt": "startedAt",
    "EndedAt": "endedAt",
    "InputSnapshot": "inputSnapshot",
    "OutputSnapshot": "outputSnapshot",
    "FailureReason": "failureReason",
}

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})$"
)


def parse_timestamp(value: str) -> datetime:
    """Parse an engine time stamp into an aware ``datetime``.

    The engine writes 0 to 6 fraction digits (trailing zeros dropped) and the
    engine host's zone, which ``datetime.fromisoformat`` on Python 3.10 does
    not accept in every form.
    """
    match = _TIMESTAMP.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not an RFC 3339 time stamp with a zone: {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        tz = timezone(sign * offset)
    return datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz
    )


def _fail(what: str, value: object) -> EngineResponseError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return EngineResponseError(200, f"unexpected engine answer: {what}, got {shown}")


def expect_object(body: object, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _fail(f"{what} should be a JSON object", body)
    return body


def expect_list(body: dict[str, Any], key: str, what: str) -> list[Any]:
    """Read a list field that the engine writes as ``null`` when empty."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(f"{what}.{key} should be a list or null", value)
    return value


def _expect_str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(f"{what}.{key} should be a non-empty string", value)
    return value


class ParsedJob(dict[str, Any]):
    """A job dict as ``parse_job`` returns it: exactly the contract's keys (no
    extra ones), plus the lease length worked out once, at parse time.

    ``lease_length`` is ``lockExpiresAt - lockedAt`` in seconds, or ``None``
    when a stamp is missing or ``lockedAt`` is not a time stamp.
    ``workflow_sdk.lease`` reads it instead of parsing the two stamps again
    for every job. A copy (``dict(job)``) is a plain dict without it; the
    lease module then parses the stamps itself, with the same result.
    """

    lease_length: float | None = None


def lease_length_of(job: dict[str, Any]) -> float | None:
    """``lockExpiresAt - lockedAt`` in seconds, or ``None`` when either is not
    an RFC 3339 time stamp (uses the value ``parse_job`` computed if it can)."""
    if isinstance(job, ParsedJob):
        return job.lease_length
    locked, expires = job.get("lockedAt"), job.get("lockExpiresAt")
    if not isinstance(locked, str) or not isinstance(expires, str):
        return None
    try:
        return (parse_timestamp(expires) - parse_timestamp(locked)).total_seconds()
    except ValueError:
        return None


def parse_job(raw: object) -> dict[str, Any]:
    """Check one job of a poll answer and fill the fields the engine may omit.

    ``stepId`` is absent on the real engine: it becomes ``""``. ``variables``
    may be null: it becomes ``{}``. The result is a ``ParsedJob`` (a dict)
    that carries the lease length, so its time stamps are parsed only here.
    """
    job = ParsedJob(expect_object(raw, "job"))
    for key in ("id", "jobType", "instanceId"):
        _expect_str(job, key, "job")
    retries = job.get("retriesRemaining", 0)
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise _fail("job.retriesRemaining should be an integer", retries)
    job["retriesRemaining"] = retries
    variables = job.get("variables")
    if variables is None:
        job["variables"] = {}
    elif not isinstance(variables, dict):
        raise _fail("job.variables should be an object or null", variables)
    lock = job.get("lockExpiresAt")
    if lock is not None:
        try:
            expires = parse_timestamp(lock)
        except ValueError as exc:
            raise _fail("job.lockExpiresAt should be an RFC 3339 time stamp", lock) from exc
        locked = job.get("lockedAt")
        if isinstance(locked, str):
            try:
                job.lease_length = (expires - parse_timestamp(locked)).total_seconds()
            except ValueError:
                pass  # lockedAt is informative only: the lease falls back to its default
    job.setdefault("stepId", "")
    job.setdefault("stepExecutionId", "")
    return job


class PolledJobs(list[dict[str, Any]]):
    """The usable jobs of a poll answer (a list), and why the others were left out.

    ``malformed`` has one line per job left out. Code that counts them (the
    supervisor's ``workflow_sdk_malformed_jobs_total``) reads it; to everyone
    else this is the plain list ``poll_jobs`` always returned.
    """

    def __init__(self, jobs: list[dict[str, Any]] | None = None) -> None:
        super().__init__(jobs or [])
        self.malformed: list[str] = []


def parse_poll(body: object) -> PolledJobs:
    """A poll answer's jobs. A malformed envelope raises ``EngineResponseError``;
    a malformed job is left out, logged at ERROR (see the module doc)."""
    answer = expect_object(body, "poll answer")
    jobs = PolledJobs()
    for raw in expect_list(answer, "jobs", "poll answer"):
        try:
            jobs.append(parse_job(raw))
        except EngineResponseError as exc:
            problem = _malformed_job(raw, exc.message)
            jobs.malformed.append(problem)
            log.error("%s", problem)
    return jobs


def _malformed_job(raw: object, why: str) -> str:
    """One line on a job left out of a poll answer."""
    job_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(job_id, str) and job_id:
        return (
            f"job {job_id} left out of the poll answer ({why}); nothing is reported for "
            "it: the engine hands it out again after its lease"
        )
    return f"a job without an id left out of the poll answer (it cannot be reported): {why}"


def parse_page(body: object, what: str) -> dict[str, Any]:
    """A ``{"items": [...] | null, "total": n}`` page, with ``items`` as a list."""
    page = dict(expect_object(body, what))
    items = expect_list(page, "items", what)
    page["items"] = [expect_object(item, f"{what} item") for item in items]
    total = page.get("total", len(items))
    if isinstance(total, bool) or not isinstance(total, int):
        raise _fail(f"{what}.total should be an integer", total)
    page["total"] = total
    return page


def normalise_history_item(raw: object) -> dict[str, Any]:
    """Return a history item with the documented camelCase keys only."""
    item = expect_object(raw, "history item")
    out: dict[str, Any] = {}
    for key, value in item.items():
        out[_HISTORY_KEYS.get(key, key)] = value
    for camel in _HISTORY_KEYS.values():
        out.setdefault(camel, None)
    return out


def parse_history(body: object) -> list[dict[str, Any]]:
    answer = expect_object(body, "history answer")
    return [normalise_history_item(item) for item in expect_list(answer, "items", "history")]


__all__ = [
    "ParsedJob",
    "PolledJobs",
    "expect_list",
    "expect_object",
    "lease_length_of",
    "normalise_history_item",
    "parse_history",
    "parse_job",
    "parse_page",
    "parse_poll",
    "parse_timestamp",
]
