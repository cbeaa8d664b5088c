"""The worker hooks of ``[supervisor] hooks = "myapp.hooks"``, as a worker calls them.

The module may define any of these functions (missing ones are skipped):

- ``worker_init(context)``: once per worker, after the fork and the handler
  import, before the first job (``context`` is a ``WorkerContext``). Load a
  model, seed RNGs, open connections. An exception is a boot failure: the
  worker reports it with its traceback and exits with status 3, as a handler
  module that fails to import does.
- ``before_job(job)``: before each job's handler, with the job's context.
  An exception fails the job, retryable, with a message naming the hook; the
  handler does not run.
- ``after_job(job, outcome)``: after each job's handler (``outcome`` is the
  ``workflow_sdk.handler.outcome.Outcome`` about to be reported). An
  exception is logged; the outcome stands.
- ``worker_exit()``: once, when the worker leaves (its channel closed, or
  SIGTERM), if ``worker_init`` succeeded. An exception is logged.
- ``child_exit(info)``: not called here. The supervisor calls it in its own
  process after a worker has exited, only with ``parent_hooks = true``.

Every hook runs in the job's or the worker's time: a job's time limit covers
``before_job``, the handler and ``after_job``; the worker's exit deadline
covers ``worker_exit``.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from workflow_sdk.errors import ConfigError, WorkerShutdown
from workflow_sdk.handler.outcome import Outcome, describe_exception

log = logging.getLogger("workflow_sdk.worker")

#: The hooks a worker calls.
WORKER_HOOKS = ("worker_init", "before_job", "after_job", "worker_exit")


@dataclass(frozen=True)
class WorkerContext:
    """What ``worker_init`` is told about the worker it runs in."""

    #: The slot's number (``worker-N``; reused by its replacement).
    number: int
    pid: int
    #: The job types its handlers serve.
    job_types: tuple[str, ...]
    #: ``threads_per_worker``: size a library's own thread pool (torch's,
    #: onnxruntime's...) to this.
    threads: int
    #: The CPU it is pinned to (``cpu_affinity = true``), or None.
    cpu: int | None


def import_hooks(name: str) -> ModuleType:
    """Import the hooks module; a missing module is a ``ConfigError`` in one
    line, any other import error propagates with its traceback."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise
        raise ConfigError(
            f"supervisor.hooks: no module named {exc.name!r} "
            "(searched the current directory and sys.path, which $PYTHONPATH extends)"
        ) from None


class WorkerHooks:
    """The hooks of one module (or none: every call does nothing)."""

    def __init__(self, module: ModuleType | None = None) -> None:
        self.name = module.__name__ if module is not None else ""
        self._hooks: dict[str, Any] = {}
        for hook in WORKER_HOOKS:
            function = getattr(module, hook, None) if module is not None else None
            if callable(function):
                self._hooks[hook] = function
        #: worker_init ran and succeeded (worker_exit is called only then).
        self.initialised = False

    @classmethod
    def load(cls, name: str) -> WorkerHooks:
        return cls(import_hooks(name)) if name else cls()

    def defined(self) -> tuple[str, ...]:
        return tuple(self._hooks)

    def worker_init(self, context: WorkerContext) -> None:
        """Raises what the hook raised (a boot failure)."""
        hook = self._hooks.get("worker_init")
        if hook is not None:
            hook(context)
        self.initialised = True

    def before_job(self, job: dict[str, Any]) -> Outcome | None:
        """None to go on with the handler, or the job's failure."""
        hook = self._hooks.get("before_job")
        if hook is None:
            return None
        started = time.perf_counter()
        try:
            hook(job)
        except Exception as exc:
            return Outcome(
                str(job["id"]),
                str(job["jobType"]),
                False,
                {},
                f"before_job hook ({self.name}) failed: {describe_exception(exc)}",
                True,
                time.perf_counter() - started,
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            )
        return None

    def after_job(self, job: dict[str, Any], outcome: Outcome) -> None:
        hook = self._hooks.get("after_job")
        if hook is None:
            return
        try:
            hook(job, outcome)
        except Exception:
            log.exception(
                "after_job hook (%s) failed for job %s (%s); its outcome stands",
                self.name,
                job.get("id"),
                job.get("jobType"),
            )

    def worker_exit(self) -> None:
        hook = self._hooks.get("worker_exit")
        if hook is None or not self.initialised:
            return
        self.initialised = False  # once
        try:
            hook()
        except WorkerShutdown:
            # The supervisor's SIGTERM: the worker took too long to exit.
            log.warning("worker_exit hook (%s) interrupted by SIGTERM", self.name)
        except Exception:
            log.exception("worker_exit hook (%s) failed", self.name)


__all__ = ["WORKER_HOOKS", "WorkerContext", "WorkerHooks", "import_hooks"]
