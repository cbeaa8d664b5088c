"""What the supervisor shows the world: its process title and systemd's view.

The main loop calls ``publish`` once per tick with the pool's numbers; this
class decides what is worth sending (a title only when it changed, STATUS=
at most every few seconds, READY=1 once, WATCHDOG=1 at half the period and
only while the loop is healthy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from workflow_sdk.supervisor.exposition import titles
from workflow_sdk.supervisor.exposition.systemd import SystemdNotifier

log = logging.getLogger("workflow_sdk.supervisor")

#: Seconds between STATUS= updates to systemd, at most.
STATUS_INTERVAL = 2.0


@dataclass(frozen=True)
class PoolState:
    workers: int
    busy: int
    jobs_done: int
    jobs_failed: int
    #: "", "draining" or "reloading"
    phase: str
    #: every worker the pool should have has booted
    ready: bool
    #: the main loop and the poller make progress
    healthy: bool
    #: intake paused (no new jobs taken)
    paused: bool = False

    def status(self) -> str:
        paused = "paused (no new jobs taken): " if self.paused else ""
        return (
            f"{paused}{self.workers} workers, {self.busy} busy, "
            f"{self.jobs_done} jobs done, {self.jobs_failed} failed"
        )


class Announcer:
    def __init__(self, notifier: SystemdNotifier, config_name: str) -> None:
        self.notifier = notifier
        self._config_name = config_name
        self._title = ""
        self._status = ""
        self._next_status = 0.0
        self._next_watchdog = 0.0
        self._announced_ready = False
        self._last = PoolState(0, 0, 0, 0, "", False, True)

    def next_deadline(self) -> float | None:
        """When ``publish`` must run again for the watchdog (None: no watchdog)."""
        return self._next_watchdog if self.notifier.watchdog_interval else None

    def publish(self, now: float, state: PoolState) -> None:
        self._last = state
        title = titles.master_title(self._config_name, state.workers, state.busy, state.phase)
        if title != self._title:
            titles.set_title(title)
            self._title = title
        if not self._announced_ready and state.ready and state.phase != "draining":
            self._announced_ready = True
            self.notifier.ready(state.status())
            log.info("all %d workers ready", state.workers)
        if self.notifier.enabled and now >= self._next_status:
            text = state.status()
            if text != self._status:
                self.notifier.status(text)
                self._status = text
            self._next_status = now + STATUS_INTERVAL
        interval = self.notifier.watchdog_interval
        if interval and now >= self._next_watchdog:
            # No ping while the loop is unhealthy: systemd then restarts us.
            if state.healthy:
                self.notifier.watchdog()
            self._next_watchdog = now + interval

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        self.notifier.ready(self._last.status())

    def stopping(self) -> None:
        self.notifier.stopping()

    def close(self) -> None:
        self.notifier.close()


__all__ = ["Announcer", "PoolState"]
