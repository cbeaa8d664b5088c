"""Engine calls the main loop wants made, on a thread of their own.

The main loop must never wait for HTTP: it watches the workers. Calls whose
answer it needs later (is this job stale? renew this lease) go to a
``CallThread``, which runs them one at a time and hands back
``(key, result)`` pairs through ``take()`` after a wake-up. The key is the
caller's: it says what the result is for (the watch uses the job's claim,
so that a result never acts on a later attempt of the same job).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Generic, TypeVar

log = logging.getLogger("workflow_sdk.supervisor")

Key = TypeVar("Key")
Request = TypeVar("Request")
Result = TypeVar("Result")


class CallThread(Generic[Key, Request, Result]):
    """Runs ``work(request)`` for each ``ask(key, request)``, in order, on one thread.

    ``work`` must not raise; if it does anyway, ``on_error(exc)`` gives the
    result, so the main loop always hears back about every key it asked.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[Request], Result],
        on_error: Callable[[Exception], Result],
        wake: Callable[[], None],
        join_timeout: float = 30.0,
    ) -> None:
        self._work = work
        self._on_error = on_error
        self._wake = wake
        self._join_timeout = join_timeout
        self._requests: queue.Queue[tuple[Key, Request] | None] = queue.Queue()
        self._results: SimpleQueue[tuple[Key, Result]] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def ask(self, key: Key, request: Request) -> None:
        self._requests.put((key, request))

    def take(self) -> list[tuple[Key, Result]]:
        """Results that arrived since the last call (main loop only)."""
        results = []
        while not self._results.empty():
            results.append(self._results.get())
        return results

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=self._join_timeout)

    def _serve(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            key, request = item
            try:
                result = self._work(request)
            except Exception as exc:  # keep the thread alive whatever the client does
                log.exception("%s: unexpected error for %s", self._thread.name, key)
                result = self._on_error(exc)
            self._results.put((key, result))
            self._wake()


__all__ = ["CallThread"]
