"""Maps job types to handler functions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, overload

#: A handler takes the job context (see ``workflow_sdk.handler.context``) and
#: returns the variables to merge into the instance, or None for none.
Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class HandlerRegistry:
    """Thread-safe map from job type to handler.

    Register directly::

        registry.register("score", score)

    or as a decorator::

        @registry.register("score")
        def score(job): ...
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, job_type: str, handler: Handler) -> Handler: ...

    @overload
    def register(self, job_type: str, handler: None = None) -> Callable[[Handler], Handler]: ...

    def register(
        self, job_type: str, handler: Handler | None = None
    ) -> Handler | Callable[[Handler], Handler]:
        """Register ``handler`` for ``job_type``; without a handler, return a decorator.

        Registering a second handler for the same job type replaces the first.
        """
        if not isinstance(job_type, str) or not job_type.strip():
            raise ValueError(f"job_type must be a non-empty string, got {job_type!r}")
        if handler is None:

            def decorator(func: Handler) -> Handler:
                self._store(job_type, func)
                return func

            return decorator
        self._store(job_type, handler)
        return handler

    def _store(self, job_type: str, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"handler for {job_type!r} is not callable: {handler!r}")
        with self._lock:
            self._handlers[job_type] = handler

    def unregister(self, job_type: str) -> None:
        with self._lock:
            self._handlers.pop(job_type, None)

    def get(self, job_type: str) -> Handler | None:
        with self._lock:
            return self._handlers.get(job_type)

    def job_types(self) -> list[str]:
        """The registered job types, sorted."""
        with self._lock:
            return sorted(self._handlers)

    def __contains__(self, job_type: object) -> bool:
        with self._lock:
            return job_type in self._handlers

    def __len__(self) -> int:
        with self._lock:
            return len(self._handlers)

    def __repr__(self) -> str:
        return f"HandlerRegistry({self.job_types()!r})"

    # A registry is sent to the supervisor's worker processes by pickling;
    # handlers travel by reference (module and name), the lock is rebuilt.
    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {"handlers": dict(self._handlers)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._handlers = dict(state["handlers"])
        self._lock = threading.Lock()


__all__ = ["Handler", "HandlerRegistry"]
