"""``child_exit``: the one hook of ``[supervisor] hooks`` that runs in the supervisor.

The supervisor never imports handler code; the hooks module is the
workers'. With ``parent_hooks = true`` the operator says the module is safe
to import here too (no handler imports, no heavy libraries, no side effect
at import): it is imported once at start-up, and its ``child_exit(info)``
is called on the main loop after each worker process has ended and was
reaped (``info`` is a ``WorkerExit``). Keep it short: the loop waits for it.
An exception in it is logged with its traceback; the loop goes on. Without
``parent_hooks`` the module is never imported here and ``child_exit`` is
never called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.worker.hooks import import_hooks

log = logging.getLogger("workflow_sdk.supervisor")


@dataclass(frozen=True)
class WorkerExit:
    """What ``child_exit`` is told about a worker that has ended."""

    #: The slot's number (``worker-N``).
    number: int
    pid: int
    #: Its exit status; negative: the signal that ended it.
    exitcode: int | None
    #: ``"exited with status 0"``, ``"killed by SIGKILL"``.
    how: str
    #: Why it left: a ``workflow_supervisor_worker_restarts_total`` reason
    #: (``timeout``, ``memory_kill``, ``recycle_memory``, ``crash``...),
    #: ``shutdown``, ``boot_failed``; "" when no reason was recorded (a
    #: worker stopped at once, on a second SIGTERM).
    reason: str
    #: The type of the job it was running when that was decided ("" when idle).
    job_type: str


class HooksImportError(Exception):
    """The hooks module could not be imported in the supervisor (the message
    says why; the traceback was logged)."""


class ParentHooks:
    """``child_exit`` of the hooks module (or nothing)."""

    def __init__(self, name: str = "", child_exit: Callable[[WorkerExit], Any] | None = None):
        self.name = name
        self._child_exit = child_exit

    @classmethod
    def load(cls, name: str) -> ParentHooks:
        """Import ``name`` here; ``HooksImportError`` when it cannot be."""
        try:
            module = import_hooks(name)
        except ConfigError as exc:
            raise HooksImportError(str(exc)) from None
        except Exception as exc:
            log.error("supervisor.hooks: %s failed to import here", name, exc_info=True)
            raise HooksImportError(
                f"supervisor.hooks: {name} failed to import in the supervisor "
                f"(parent_hooks = true): {exc!r}"
            ) from None
        function = getattr(module, "child_exit", None)
        if not callable(function):
            log.warning(
                "supervisor.parent_hooks: %s defines no child_exit; nothing is called here", name
            )
            return cls(name)
        return cls(name, function)

    def child_exit(self, info: WorkerExit) -> None:
        if self._child_exit is None:
            return
        try:
            self._child_exit(info)
        except Exception:
            log.exception("child_exit hook (%s) failed for worker-%d", self.name, info.number)


__all__ = ["HooksImportError", "ParentHooks", "WorkerExit"]
