"""Pausing and resuming intake from outside: POST /pause and /resume, and SIGUSR2.

For maintenance windows: while paused the supervisor asks its job source
for nothing (no poll, no Kafka fetch: the feeder keeps every partition
paused), the workers stay up, running jobs finish and are reported, and
/readyz, the process title and systemd's STATUS= say "paused". The state
belongs to the running process: a SIGHUP reload keeps it, a restart
starts unpaused.

The metrics server's threads only queue a request and wake the main loop
(``request``), as a signal handler only records its signal; the loop acts
on it (``take``, or ``apply`` for SIGUSR2, which toggles) and the request's
thread answers with the loop's verdict. What pausing does to the source is
the intake's (``Intake.pause``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue

from workflow_sdk.supervisor.exposition.health import Verdict
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.phase import Phase

log = logging.getLogger("workflow_sdk.supervisor")

PAUSE = "pause"
RESUME = "resume"
#: SIGUSR2: pause if running, resume if paused.
TOGGLE = "toggle"
#: Seconds an HTTP request waits for the main loop to act on it.
CONTROL_WAIT = 5.0


class _Request:
    __slots__ = ("action", "done", "origin", "verdict")

    def __init__(self, action: str, origin: str) -> None:
        self.action = action
        self.origin = origin
        self.done = threading.Event()
        self.verdict = Verdict(False, "not acted on")


class IntakeControl:
    """Pause and resume requests, acted on by the main loop (see the module doc).

    :param wake: makes the main loop's wait return (any thread).
    """

    def __init__(self, intake: Intake, wake: Callable[[], None]) -> None:
        self.intake = intake
        self._wake = wake
        self._queue: SimpleQueue[_Request] = SimpleQueue()

    def request(self, action: str, origin: str, timeout: float = CONTROL_WAIT) -> Verdict:
        """Ask the main loop to ``action`` ("pause" or "resume"); its verdict,
        or a 503 when it did not act within ``timeout`` (then it still will,
        once it runs). Any thread."""
        if action not in (PAUSE, RESUME):
            return Verdict(False, f"unknown action {action!r}", code=404)
        pending = _Request(action, origin)
        self._queue.put(pending)
        self._wake()
        if not pending.done.wait(timeout):
            return Verdict(
                False,
                f"the main loop did not act within {timeout:g} s; the {action} applies "
                "once it runs",
            )
        return pending.verdict

    def take(self, phase: Phase) -> None:
        """Act on the requests queued since the last tick (main loop)."""
        while True:
            try:
                pending = self._queue.get_nowait()
            except Empty:
                return
            pending.verdict = self.apply(pending.action, phase, pending.origin)
            pending.done.set()

    def apply(self, action: str, phase: Phase, origin: str) -> Verdict:
        """Pause, resume or toggle intake now (main loop); logged with ``origin``."""
        if phase in (Phase.DRAINING, Phase.DONE):
            log.info("%s: ignored, the supervisor is stopping", origin)
            return Verdict(False, "the supervisor is stopping: it takes no new jobs", code=409)
        intake = self.intake
        pause = not intake.paused if action == TOGGLE else action == PAUSE
        if pause:
            if not intake.pause():
                return Verdict(True, "paused already: no new jobs are taken")
            log.warning(
                "%s: intake paused: no new jobs are taken until it is resumed; the workers "
                "stay up and running jobs finish",
                origin,
            )
            return Verdict(True, "paused: no new jobs are taken; running jobs finish")
        if not intake.resume():
            return Verdict(True, "not paused: jobs are taken")
        log.warning("%s: intake resumed", origin)
        return Verdict(True, "resumed: jobs are taken")


__all__ = ["CONTROL_WAIT", "PAUSE", "RESUME", "TOGGLE", "IntakeControl"]
