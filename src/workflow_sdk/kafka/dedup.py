"""A time- and memory-bounded set of recently finished dispatch ids (``dedup_id``).

The engine's relay may publish one dispatch again after a crash (same
``dedup_id``), and a consumer group redelivers records whose offsets were not
committed. A record whose ``dedup_id`` finished within the window is dropped
instead of running the job again. The window is a best effort that saves
reruns, not a guarantee: it lives in one process's memory, forgets ids after
``seconds`` and, beyond ``max_entries``, the oldest ones first.

Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_WINDOW_SECONDS = 600.0
DEFAULT_MAX_ENTRIES = 100_000


class DedupWindow:
    """``seen(id)`` is True for an id ``add``-ed less than ``seconds`` ago."""

    def __init__(
        self,
        seconds: float = DEFAULT_WINDOW_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if seconds < 0:
            raise ValueError(f"the dedup window must be >= 0 seconds, got {seconds!r}")
        if max_entries < 1:
            raise ValueError(f"the dedup window needs room for >= 1 id, got {max_entries!r}")
        self.seconds = float(seconds)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # id -> time added; insertion order is time order (re-adds move to the end).
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, dedup_id: str) -> None:
        if not dedup_id or self.seconds == 0:
            return
        with self._lock:
            now = self._clock()
            self._seen[dedup_id] = now
            self._seen.move_to_end(dedup_id)
            self._expire(now)
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)

    def seen(self, dedup_id: str | None) -> bool:
        if not dedup_id:
            return False
        with self._lock:
            self._expire(self._clock())
            return dedup_id in self._seen

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._seen)

    def _expire(self, now: float) -> None:
        # Caller holds the lock. Oldest first: stop at the first live entry.
        cutoff = now - self.seconds
        while self._seen:
            oldest_id, added = next(iter(self._seen.items()))
            if added > cutoff:
                return
            del self._seen[oldest_id]


__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_WINDOW_SECONDS", "DedupWindow"]
