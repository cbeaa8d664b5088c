"""The main loop's wait: one poll selector kept between ticks.

``multiprocessing.connection.wait`` builds a selector and registers every
object on each call; the loop waits two or three times per job, and that
set-up was a tenth of the parent's CPU per job. Here the registrations are
kept and only changed when the set of objects does (a worker started,
stopped or closed its channel).

A poll selector, not epoll: it keeps no state in the kernel, so a file
descriptor number reused by a new worker's pipe or sentinel is simply polled
again, never silently dropped.
"""

from __future__ import annotations

import selectors
from collections.abc import Sequence
from typing import Any

_Selector = getattr(selectors, "PollSelector", selectors.SelectSelector)


class WaitSet:
    def __init__(self) -> None:
        self._selector: selectors.BaseSelector = _Selector()
        self._objects: list[Any] = []

    def wait(self, objects: Sequence[Any], timeout: float) -> list[Any]:
        """The objects of ``objects`` ready to read (or at end of file) within
        ``timeout`` seconds. Each is an int file descriptor or has ``fileno()``."""
        if len(objects) != len(self._objects) or any(
            a is not b for a, b in zip(objects, self._objects, strict=True)
        ):
            self._register(objects)
        return [key.data for key, _ in self._selector.select(max(0.0, timeout))]

    def _register(self, objects: Sequence[Any]) -> None:
        self._selector.close()
        self._selector = _Selector()
        for obj in objects:
            self._selector.register(obj, selectors.EVENT_READ, obj)
        self._objects = list(objects)

    def close(self) -> None:
        self._selector.close()
        self._objects = []


__all__ = ["WaitSet"]
