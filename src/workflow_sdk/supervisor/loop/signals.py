"""Signals for the main loop: recorded by the handler, acted on by the loop.

A signal handler must not touch locks, metrics or workers: it appends the
signal number and writes a byte to a wake-up pipe, which the main loop
waits on beside the workers' channels. Threads wake the loop the same way.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

#: The signals whose meaning belongs to the supervisor's parent.
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR2,
    # Means nothing here; recorded so that it is logged and ignored instead
    # of killing the supervisor (its default action): gunicorn's operators,
    # and logrotate recipes written for it, send it to reopen log files.
    signal.SIGUSR1,
)


class SignalInbox:
    def __init__(self) -> None:
        self.read_fd = -1
        self._write_fd = -1
        self._pending: list[int] = []

    def install(self) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self.record)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

    def record(self, signum: int, frame: FrameType | None = None) -> None:
        # Only record: the main loop acts. set_wakeup_fd wakes the loop for
        # real signals; a stop requested from a thread needs the explicit wake.
        self._pending.append(signum)
        self.wake()

    def wake(self) -> None:
        """Make the main loop's wait return (safe from any thread)."""
        if self._write_fd < 0:
            return
        try:
            os.write(self._write_fd, b"\0")
        except OSError:
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def drain(self) -> None:
        """Empty the wake-up pipe (the loop is awake now)."""
        # A short read emptied the pipe: no second read just to see EAGAIN.
        try:
            while len(os.read(self.read_fd, 4096)) == 4096:
                pass
        except BlockingIOError:
            pass

    def take(self) -> list[int]:
        """Signals recorded since the last call, in order."""
        taken, self._pending = self._pending, []
        return taken

    def close(self) -> None:
        if self.read_fd < 0:
            return
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.close(self.read_fd)
        os.close(self._write_fd)
        self.read_fd = self._write_fd = -1


__all__ = ["HANDLED_SIGNALS", "SignalInbox"]
