"""What became of a report whose answer never came? Ask the engine.

A complete or a fail can end without a usable answer while the engine may
have acted on it, or may still be acting on it: the client timed out after
the request went out, the connection broke after it was written, a gateway
answered 502, 503 or 504. Sending it again at once could put two completes
of one job in flight together (the contract: both can advance the instance)
or fail a job twice (a fail is not idempotent). So ``reporting.deliver``
never resends such a report blindly:

1. It waits until the first request can no longer be acted on. The engine
   gives up on a request after its 30 s handler timeout (the contract's
   "General" section), so ``IN_FLIGHT_WINDOW`` seconds after a request was
   sent it is finished, applied or not. (The contract does not state this
   window; it is derived from the handler timeout it does state, plus time
   for the request to get there.)
2. Meanwhile and after, it asks the engine (``FateCheck.look``): the
   instance, and the history item of the job's ``stepExecutionId``
   (``judge`` turns the answers into a ``Finding``).

What the history can tell:

- a complete leaves its trace: the job's step execution becomes COMPLETED
  (also for a cancelled or finished instance: the contract's "When a job
  goes stale"). RUNNING means not applied (yet).
- a fail that fails the step (not retryable, or no retries left) leaves its
  trace: the step execution becomes FAILED.
- a retryable fail with retries left leaves **no trace** (the contract's
  "Instances" section): the history cannot tell. In Kafka mode the engine
  publishes the retry's dispatch, which this process may see
  (``retry_seen``); in poll mode the engine hands the retry out, or the
  lease's expiry hands the same attempt out again, so not knowing is safe.

Nothing here sends a report: ``judge`` is pure, and ``FateCheck`` only
reads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workflow_sdk.errors import EngineClientError, WorkflowSDKError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.staleness import FINISHED_STATUSES, InstanceReader

#: Seconds after a request was sent during which the engine may still act on
#: it: its 30 s handler timeout plus the request's way there.
IN_FLIGHT_WINDOW = 35.0


class Fate(enum.Enum):
    #: the engine applied the report
    APPLIED = "applied"
    #: the report no longer matters: the job's step ended otherwise, or its
    #: instance finished (a fail would then fail it: never send one)
    SETTLED = "settled"
    #: the report has not been applied (it would have left a trace)
    NOT_APPLIED = "not_applied"
    #: the engine answered but its history cannot tell (a retryable fail with
    #: retries left leaves no trace; a step execution missing from the history)
    NO_TRACE = "no_trace"
    #: the engine could not be asked
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Finding:
    fate: Fate
    #: one line for the log: what the engine said
    detail: str = ""
    #: metric label of a SETTLED finding (``step_failed``, ``instance_cancelled``...)
    reason: str = ""


def leaves_trace(outcome: Outcome, retries_remaining: object) -> bool:
    """Whether the report, once applied, shows in the job's history item."""
    if outcome.succeeded or not outcome.retryable:
        return True
    return not (
        isinstance(retries_remaining, int)
        and not isinstance(retries_remaining, bool)
        and retries_remaining > 0
    )


def judge(
    outcome: Outcome,
    retries_remaining: object,
    instance_status: str | None,
    item_status: str | None,
) -> Finding:
    """The fate of ``outcome``'s report from what the engine shows.

    :param instance_status: the instance's status; None when the engine
        answered that the instance does not exist.
    :param item_status: the status of the history item of the job's step
        execution; None when the history has no such item.
    """
    if instance_status is None:
        return Finding(Fate.SETTLED, "instance not found", "instance_gone")
    item = item_status or ""
    trace = leaves_trace(outcome, retries_remaining)
    if outcome.succeeded:
        if item == "COMPLETED":
            return Finding(Fate.APPLIED, "step execution COMPLETED")
        if item == "FAILED":
            return Finding(Fate.SETTLED, "step execution FAILED", "step_failed")
        return Finding(Fate.NOT_APPLIED if item == "RUNNING" else Fate.NO_TRACE, _seen(item))
    if item == "FAILED":
        if trace:
            return Finding(Fate.APPLIED, "step execution FAILED")
        return Finding(Fate.SETTLED, "step execution FAILED", "step_failed")
    if item == "COMPLETED":
        return Finding(Fate.SETTLED, "step execution COMPLETED", "step_completed")
    if instance_status in FINISHED_STATUSES:
        # A fail now would fail (or re-fail) the instance.
        return Finding(
            Fate.SETTLED, f"instance {instance_status}", f"instance_{instance_status.lower()}"
        )
    if item == "RUNNING" and trace:
        return Finding(Fate.NOT_APPLIED, "step execution RUNNING")
    return Finding(Fate.NO_TRACE, _seen(item))


def _seen(item: str) -> str:
    return f"step execution {item}" if item else "step execution not in the history"


class FateCheck:
    """Reads what the engine shows of one job, to judge a report's fate.

    :param reader: the instance and history reads (``RestEngineClient``).
    :param job: the job (or its handler context): ``instanceId``,
        ``stepExecutionId``, ``retriesRemaining``.
    :param retry_seen: in Kafka mode, whether this process has seen the
        engine's new dispatch of the job with fewer retries (the mark a
        retryable fail leaves); called from the reporting thread.
    """

    def __init__(
        self,
        reader: InstanceReader,
        job: Mapping[str, Any],
        retry_seen: Callable[[], bool] | None = None,
    ) -> None:
        self._reader = reader
        self._job = job
        self._retry_seen = retry_seen
        #: the last finding (its ``reason`` labels a SETTLED report's metric)
        self.last: Finding | None = None

    def look(self, outcome: Outcome) -> Finding:
        """What became of ``outcome``'s report, as far as the engine shows."""
        self.last = self._look(outcome)
        return self.last

    def _look(self, outcome: Outcome) -> Finding:
        retries = self._job.get("retriesRemaining")
        if (
            not outcome.succeeded
            and not leaves_trace(outcome, retries)
            and self._retry_seen is not None
            and self._retry_seen()
        ):
            return Finding(Fate.APPLIED, "the engine dispatched the job's retry")
        instance_id = str(self._job.get("instanceId") or "")
        step_execution_id = str(self._job.get("stepExecutionId") or "")
        if not instance_id or not step_execution_id:
            return Finding(Fate.NO_TRACE, "the job names no instance or step execution")
        try:
            instance = self._reader.get_instance(instance_id)
        except EngineClientError as exc:
            if exc.status_code == 404 and exc.error_code == "not-found":
                return judge(outcome, retries, None, None)
            return Finding(Fate.UNKNOWN, f"instance read failed: {exc}")
        except WorkflowSDKError as exc:
            return Finding(Fate.UNKNOWN, f"instance read failed: {exc}")
        try:
            history = self._reader.get_instance_history(instance_id)
        except WorkflowSDKError as exc:
            return Finding(Fate.UNKNOWN, f"history read failed: {exc}")
        item_status = None
        for item in history:
            if item.get("id") == step_execution_id:
                item_status = str(item.get("status") or "")
                break
        return judge(outcome, retries, str(instance.get("status") or ""), item_status)


__all__ = ["IN_FLIGHT_WINDOW", "Fate", "FateCheck", "Finding", "judge", "leaves_trace"]
