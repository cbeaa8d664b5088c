"""systemd's notify protocol, without a dependency: datagrams to $NOTIFY_SOCKET.

Messages: READY=1, STATUS=..., RELOADING=1 (+ MONOTONIC_USEC, as
``Type=notify-reload`` wants), STOPPING=1, WATCHDOG=1. Without
$NOTIFY_SOCKET every call is a no-op, so the supervisor runs the same way
under systemd, in a terminal and in tests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("workflow_sdk.supervisor")

#: Variables that concern this process only: workers must not inherit them,
#: or a worker could ping the watchdog for a wedged parent.
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # A leading '@' names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        #: Seconds between WATCHDOG=1 pings (half the configured period), or None.
        self.watchdog_interval = (
            watchdog_usec / 2e6 if watchdog_usec and watchdog_usec > 0 and self._sock else None
        )

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> SystemdNotifier:
        env = os.environ if environ is None else environ
        own_pid = os.getpid() if pid is None else pid
        watchdog: int | None = None
        raw_pid = env.get("WATCHDOG_PID")
        if raw_pid is None or raw_pid.strip() == str(own_pid):
            try:
                watchdog = int(env.get("WATCHDOG_USEC", "0")) or None
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not a number", env.get("WATCHDOG_USEC"))
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send one message made of ``fields``; never raises (systemd may be gone)."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


__all__ = ["SYSTEMD_ENV", "SystemdNotifier"]
