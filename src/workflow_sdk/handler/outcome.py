"""Runs one handler call and turns whatever happened into an ``Outcome``.

Shared by the threaded Runner and the supervisor's worker processes so that
both apply exactly the same rules:

- a ``dict`` or ``None`` completes the job;
- ``NonRetryableError`` fails it without retries;
- any other exception fails it retryable with ``"<Type>: <message>"``;
- a result that is not a dict/None, or not JSON-serialisable, fails it
  without retries (running it again would return the same thing); numpy
  values are converted where that loses nothing, and a refusal names the
  offending key (``jsonable.make_json_ready``).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from workflow_sdk.errors import NonRetryableError
from workflow_sdk.handler.jsonable import NOT_JSON, make_json_ready
from workflow_sdk.handler.registry import Handler

log = logging.getLogger("workflow_sdk.handler")


@dataclass(frozen=True)
class Outcome:
    """What became of one job: the variables to complete it with, or an error."""

    job_id: str
    job_type: str
    succeeded: bool
    variables: dict[str, Any] = field(default_factory=dict)
    error_message: str = ""
    retryable: bool = True
    duration: float = 0.0
    #: The handler's traceback, when it raised (for the one log line of the
    #: failure, written where the outcome is reported).
    traceback: str = ""
    #: An empty completion that retires a job of a cancelled or finished
    #: instance (``retirement``), not the handler's result.
    retire: bool = False

    @classmethod
    def failure(
        cls, job_id: str, job_type: str, message: str, *, retryable: bool, duration: float = 0.0
    ) -> Outcome:
        return cls(job_id, job_type, False, {}, message, retryable, duration)

    @classmethod
    def retirement(cls, job_id: str, job_type: str) -> Outcome:
        """An empty completion for a job whose instance was cancelled or
        finished while it ran. Nothing of it reaches the instance (the
        contract: such a completion marks only the job and its step), and
        without it the job stays locked and the engine hands it out again
        after every lease, for ever."""
        return cls(job_id, job_type, True, retire=True)


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not escape run_handler
        return ""


def describe_exception(exc: BaseException) -> str:
    text = _safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_result(result: object, *, plain: bool = False) -> tuple[dict[str, Any] | None, str]:
    """Validate a handler's return value.

    Returns ``(variables, "")`` when it can be sent to the engine, else
    ``(None, reason)``. With ``plain``, the variables come back decoded from
    their JSON text: only builtin types, whatever classes the handler used.
    Variables that ``json`` refuses as they are (numpy values, NaN, objects)
    are walked once: converted where lossless, else the reason names the key.
    """
    if result is None:
        return {}, ""
    if not isinstance(result, dict):
        return None, (
            f"handler returned {type(result).__name__} {_short_repr(result)}; "
            "it must return a dict of variables or None"
        )
    try:
        # allow_nan=False: the engine's JSON decoder rejects NaN and Infinity.
        encoded = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        # RecursionError: nesting too deep for the encoder (run_handler must not raise).
        # The slow path, only for results json refused as they are.
        converted, problem = make_json_ready(result)
        if converted is None:
            return None, problem
        try:
            encoded = json.dumps(converted, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            # The walk accepted something json does not: say what json said.
            return None, f"handler returned variables that are {NOT_JSON}: {exc}"
        result = converted
    return (json.loads(encoded) if plain else result), ""


def _short_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break reporting
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 200 else text[:200] + "..."


def run_handler(
    handler: Handler,
    context: dict[str, Any],
    *,
    plain_variables: bool = False,
    log_failures: bool = True,
) -> Outcome:
    """Call ``handler(context)`` and classify the result. Never raises ``Exception``.

    ``plain_variables``: see ``check_result(plain=...)``. ``log_failures=False``
    leaves the logging to whoever reports the outcome (the supervisor's parent
    writes one line per failed job, with ``Outcome.traceback``).
    """
    job_id = context["id"]
    job_type = context["jobType"]
    started = time.perf_counter()
    try:
        result = handler(context)
    except NonRetryableError as exc:
        duration = time.perf_counter() - started
        # The user chose this message for failureReason: keep it as written.
        message = _safe_str(exc) or type(exc).__name__
        if log_failures:
            log.warning("job %s (%s) failed for good: %s", job_id, job_type, message)
        return Outcome.failure(job_id, job_type, message, retryable=False, duration=duration)
    except Exception as exc:
        duration = time.perf_counter() - started
        message = describe_exception(exc)
        if log_failures:
            log.warning("job %s (%s) failed: %s", job_id, job_type, message, exc_info=True)
            return Outcome.failure(job_id, job_type, message, retryable=True, duration=duration)
        return Outcome(
            job_id,
            job_type,
            False,
            {},
            message,
            True,
            duration,
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
    duration = time.perf_counter() - started
    variables, problem = check_result(result, plain=plain_variables)
    if variables is None:
        if log_failures:
            log.error("job %s (%s): %s", job_id, job_type, problem)
        return Outcome.failure(job_id, job_type, problem, retryable=False, duration=duration)
    return Outcome(job_id, job_type, True, variables, "", True, duration)


__all__ = ["Outcome", "check_result", "describe_exception", "run_handler"]
