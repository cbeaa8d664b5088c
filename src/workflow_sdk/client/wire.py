"""What every HTTP transport of the client shares: request bodies and paths,
the reading of answers, and the naming of transport failures.

``RestEngineClient`` (``requests``) and ``LeanJobClient`` (``http.client``)
send differently but must agree on every verdict a caller acts on: which
answers are errors, which errors are ``retryable``, and whether a failed
request may have reached the engine (``request_sent``). So the translation
lives here, once:

- ``read_answer`` turns (status, reason phrase, body bytes) into the decoded
  JSON body or an ``EngineClientError``; only the contract's success status
  is a success (a 3xx, or a 2xx the contract does not name, is not);
- the ``*_error`` functions build the transport exceptions with one wording;
  each transport only decides which of them a failure is.
"""

from __future__ import annotations

import http
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from workflow_sdk.errors import (
    DispatchModeError,
    EngineClientError,
    EngineConnectionError,
    EngineResponseError,
    EngineTimeoutError,
)
from workflow_sdk.sanitize import escape_controls, has_controls

# Reasons of a 500 that will never turn into a success on retry: the engine
# reports unknown jobs, definitions and instances as internal errors.
_PERMANENT_500_MARKERS = ("not found", "no rows in result set")
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
# Path characters that may stay as they are (RFC 3986 pchar); everything else
# is percent-encoded. The engine decodes only definition ids, so ids with
# ':' must not be turned into '%3A'.
_SAFE_PATH_CHARS = ":@!$&'()*+,;="
# Longest raw (non-envelope) error body kept in a message.
_RAW_LIMIT = 500


def segment(value: str) -> str:
    """One path segment from an id, percent-encoded; refuses empty or non-strings."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"an id in a path must be a non-empty string, got {value!r}")
    return quote(value, safe=_SAFE_PATH_CHARS)


def check_headers(fields: Mapping[str, str]) -> None:
    """Refuse, before anything is sent, a header that would split a request.

    The message names the header (the token, for ``Authorization``) and
    never its value: a token with a trailing newline must not be printed.
    """
    for name, value in fields.items():
        if has_controls(name) or ":" in name or not name:
            raise ValueError(f"invalid header name {escape_controls(name)!r}")
        if has_controls(value.replace("\t", " ")):
            what = "the token" if name.lower() == "authorization" else f"header {name!r}"
            raise ValueError(
                f"{what} holds a line break or another control character (the value is not shown)"
            )


def encode_json(body: Any) -> bytes:
    """The request body, refused before anything is sent when it is not JSON.

    ``allow_nan=False``: the engine's JSON decoder rejects NaN and Infinity.
    """
    try:
        return json.dumps(body, allow_nan=False).encode()
    except ValueError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from exc


# -- the three hot calls: one set of checks and bodies for every transport ---

POLL_PATH = "/v1/jobs/poll"


#: Leases a poll may ask for ("Lease extension" in the contract); 0 = the default.
LEASE_RANGE = (5, 3600)


def poll_body(
    worker_id: str, job_types: list[str], max_jobs: int, lease_seconds: int = 0
) -> dict[str, Any]:
    """The poll body, after the checks that must fail before anything is sent.

    ``leaseSeconds`` goes in only when non-zero: engines with lease extension
    grant that lease from the claim on; released engines ignore the field.
    """
    if max_jobs < 1:
        # The engine reads 0 as "10".
        raise ValueError(f"max_jobs must be >= 1, got {max_jobs}")
    if isinstance(job_types, str):
        # list("score") would poll for the job types "s", "c", "o", ...
        raise TypeError(f"job_types must be a list of strings, got the string {job_types!r}")
    if not job_types:
        raise ValueError("job_types must not be empty")
    body: dict[str, Any] = {"workerId": worker_id, "jobTypes": list(job_types), "maxJobs": max_jobs}
    if lease_seconds:
        low, high = LEASE_RANGE
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int):
            raise TypeError(f"lease_seconds must be an integer, got {lease_seconds!r}")
        if not low <= lease_seconds <= high:
            raise ValueError(f"lease_seconds must be 0 or {low}..{high}, got {lease_seconds}")
        body["leaseSeconds"] = lease_seconds
    return body


def complete_path(job_id: str) -> str:
    return f"/v1/jobs/{segment(job_id)}/complete"


def complete_body(worker_id: str, variables: dict[str, Any] | None) -> dict[str, Any]:
    return {"workerId": worker_id, "variables": variables or {}}


def fail_path(job_id: str) -> str:
    return f"/v1/jobs/{segment(job_id)}/fail"


def fail_body(worker_id: str, error_message: str, retryable: bool) -> dict[str, Any]:
    # Always send "retryable": the engine reads a missing one as false.
    return {"workerId": worker_id, "errorMessage": error_message, "retryable": retryable}


def _decode_object(raw: str) -> dict[str, Any] | None:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def error_text(status: int, reason_phrase: str, body: bytes) -> tuple[str, str | None]:
    """(message, error code) of an error answer.

    The message is the engine's ``reason``, else ``message``, else ``hint``,
    else the envelope's code, else the raw body (shortened), else the HTTP
    reason phrase: never empty.
    """
    raw = body.decode("utf-8", "replace").strip()
    envelope = _decode_object(raw)
    code: str | None = None
    if envelope is not None:
        error = envelope.get("error")
        code = error if isinstance(error, str) else None
        for key in ("reason", "message", "hint"):
            text = envelope.get(key)
            if isinstance(text, str) and text:
                return text, code
        if code:
            return code, code
    if raw:
        return (raw[:_RAW_LIMIT] + "...") if len(raw) > _RAW_LIMIT else raw, code
    return reason_phrase or _standard_phrase(status), code


def _standard_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def is_transient(status: int, message: str) -> bool:
    """Whether the same request may succeed later (the ``retryable`` verdict)."""
    if status in _TRANSIENT_STATUSES:
        return True
    if status == 500:
        lowered = message.lower()
        return not any(marker in lowered for marker in _PERMANENT_500_MARKERS)
    return False


def _kafka_mode(status: int, body: bytes) -> str | None:
    """The dispatch mode a 410 names when the engine dispatches through Kafka."""
    if status != 410:
        return None
    envelope = _decode_object(body.decode("utf-8", "replace").strip())
    mode = envelope.get("dispatch_mode") if envelope is not None else None
    # The released engine writes "kafka_outbox"; any Kafka-named mode means
    # the same to a worker: the poll path is closed for good.
    if isinstance(mode, str) and mode.lower().startswith("kafka"):
        return mode
    return None


def error_for(
    status: int, reason_phrase: str, body: bytes, *, method: str, url: str
) -> EngineClientError:
    """The exception for an error answer (status >= 400)."""
    message, code = error_text(status, reason_phrase, body)
    mode = _kafka_mode(status, body)
    if mode is not None:
        return DispatchModeError(
            status,
            f"the engine dispatches jobs through Kafka (dispatch mode {mode!r}) and its "
            f'poll path is closed; set dispatch = "kafka" in the supervisor config to '
            f"consume them (engine: {message})",
            dispatch_mode=mode,
            error_code=code,
            method=method,
            url=url,
        )
    return EngineClientError(
        status,
        message,
        error_code=code,
        retryable=is_transient(status, message),
        method=method,
        url=url,
    )


#: The contract's successes: 200 or 201 with a JSON body (polls, reads,
#: uploads, starts, cancels, heartbeats), 204 without one (complete, fail,
#: signal, user-task completion). ``/healthz`` is the one 200 without a body.
JSON_SUCCESS = frozenset({200, 201})
NO_BODY_SUCCESS = frozenset({204})
HEALTH_SUCCESS = frozenset({200})


def unexpected_answer_error(
    status: int, reason_phrase: str, body: bytes, success: frozenset[int], *, method: str, url: str
) -> EngineClientError:
    """A status below 400 that is not the call's success: a redirect, or a 2xx
    the contract does not name.

    The engine answers none of these: something in between did (a proxy or
    gateway redirecting to a login page or another host; redirects are not
    followed). The request was not delivered to the engine, so nothing may
    count as delivered. ``retryable``: not the engine's verdict on the job,
    so a completion keeps being retried until its deadline (a proxy fixed
    meanwhile lets it land; a Kafka record stays uncommitted) and is then
    lost, not rejected. A fail is still never resent: this is no
    ``EngineConnectionError`` with ``request_sent=False``, since the request
    did reach something that may have forwarded it.
    """
    text, code = error_text(status, reason_phrase, body)
    expected = " or ".join(str(s) for s in sorted(success))
    return EngineClientError(
        status,
        f"unexpected answer {status} (expected {expected}); not delivered to the engine "
        f"(a proxy or gateway redirecting?): {text}",
        error_code=code,
        retryable=True,
        method=method,
        url=url,
    )


def read_answer(
    status: int,
    reason_phrase: str,
    body: bytes,
    *,
    method: str,
    url: str,
    expect_json: bool,
    success: frozenset[int] | None = None,
) -> Any:
    """The decoded JSON body of a success (``None`` when none is expected).

    ``success``: the statuses that are a success; default ``JSON_SUCCESS``
    when a JSON body is expected, else ``NO_BODY_SUCCESS``. Raises
    ``EngineClientError`` for an error status or any other status (see
    ``unexpected_answer_error``) and ``EngineResponseError`` for a success
    whose body is not JSON.
    """
    if status >= 400:
        raise error_for(status, reason_phrase, body, method=method, url=url)
    if success is None:
        success = JSON_SUCCESS if expect_json else NO_BODY_SUCCESS
    if status not in success:
        raise unexpected_answer_error(status, reason_phrase, body, success, method=method, url=url)
    if not expect_json:
        return None
    try:
        return json.loads(body)
    except ValueError as exc:
        text = body.decode("utf-8", "replace").strip()
        raise EngineResponseError(
            status, f"expected a JSON body, got {text[:200]!r}", method=method, url=url
        ) from exc


# -- transport failures: one wording, the transport picks the case -----------


def not_connected_error(exc: BaseException, *, method: str, url: str) -> EngineConnectionError:
    """No connection (refused, unknown host, TLS handshake): nothing was sent."""
    return EngineConnectionError(
        f"engine unreachable: {exc}", request_sent=False, method=method, url=url
    )


def connect_timeout_error(exc: BaseException, *, method: str, url: str) -> EngineConnectionError:
    """The connection was not established in time: nothing was sent."""
    return EngineConnectionError(
        f"could not connect to the engine in time: {exc}",
        request_sent=False,
        method=method,
        url=url,
    )


def answer_timeout_error(
    timeout: float, exc: BaseException, *, method: str, url: str
) -> EngineTimeoutError:
    """The request went out and no answer came in time: it may have been acted on."""
    return EngineTimeoutError(
        f"no answer within {timeout} s: {exc}", request_sent=True, method=method, url=url
    )


def lost_error(
    exc: BaseException, *, request_sent: bool, method: str, url: str
) -> EngineConnectionError:
    """The connection broke (reset, closed, garbage instead of HTTP)."""
    return EngineConnectionError(
        f"engine unreachable: {exc}", request_sent=request_sent, method=method, url=url
    )


def tls_error(
    exc: BaseException, *, request_written: bool, method: str, url: str
) -> EngineConnectionError:
    """A TLS failure. Before the whole request was written (the handshake, a
    refused certificate, the write itself) nothing reached the engine, and a
    fail may be sent again; after it (a garbled or cut answer) the engine may
    have acted on the request, and a fail must not be."""
    when = "after the request was sent" if request_written else "before the request was sent"
    return EngineConnectionError(
        f"TLS failure {when}: {exc}", request_sent=request_written, method=method, url=url
    )


def invalid_url_error(exc: BaseException, *, method: str, url: str) -> EngineClientError:
    return EngineClientError(0, f"invalid engine URL: {exc}", method=method, url=url)


__all__ = [
    "HEALTH_SUCCESS",
    "JSON_SUCCESS",
    "LEASE_RANGE",
    "NO_BODY_SUCCESS",
    "POLL_PATH",
    "answer_timeout_error",
    "check_headers",
    "complete_body",
    "complete_path",
    "connect_timeout_error",
    "encode_json",
    "error_for",
    "error_text",
    "fail_body",
    "fail_path",
    "invalid_url_error",
    "is_transient",
    "lost_error",
    "not_connected_error",
    "poll_body",
    "read_answer",
    "segment",
    "tls_error",
    "unexpected_answer_error",
]
