"""What the supervisor tells systemd, and when."""

from __future__ import annotations

from workflow_sdk.supervisor.exposition.announcer import STATUS_INTERVAL, Announcer, PoolState
from workflow_sdk.supervisor.exposition.systemd import SystemdNotifier


class RecordingNotifier(SystemdNotifier):
    def __init__(self, watchdog_usec: int | None = None) -> None:
        super().__init__(None)
        self.sent: list[str] = []
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None

    @property
    def enabled(self) -> bool:
        return True

    def notify(self, *fields: str) -> bool:
        self.sent.append("\n".join(fields))
        return True


def state(**changes: object) -> PoolState:
    base = {
        "workers": 2,
        "busy": 0,
        "jobs_done": 0,
        "jobs_failed": 0,
        "phase": "",
        "ready": True,
        "healthy": True,
    }
    base.update(changes)
    return PoolState(**base)  # type: ignore[arg-type]


def test_ready_once_and_not_while_draining() -> None:
    notifier = RecordingNotifier()
    announcer = Announcer(notifier, "x.toml")
    announcer.publish(0.0, state(ready=False))
    assert not any("READY=1" in m for m in notifier.sent)
    announcer.publish(1.0, state(phase="draining"))
    assert not any("READY=1" in m for m in notifier.sent)
    announcer.publish(2.0, state())
    announcer.publish(3.0, state())
    assert sum("READY=1" in m for m in notifier.sent) == 1


def test_status_is_throttled_and_sent_only_when_it_changes() -> None:
    notifier = RecordingNotifier()
    announcer = Announcer(notifier, "x.toml")
    announcer.publish(0.0, state(ready=False))
    announcer.publish(0.1, state(ready=False, busy=1))  # within the interval: not sent
    announcer.publish(STATUS_INTERVAL + 0.2, state(ready=False, busy=1))
    announcer.publish(2 * STATUS_INTERVAL + 0.3, state(ready=False, busy=1))  # unchanged
    statuses = [m for m in notifier.sent if m.startswith("STATUS=")]
    assert statuses == [
        "STATUS=2 workers, 0 busy, 0 jobs done, 0 failed",
        "STATUS=2 workers, 1 busy, 0 jobs done, 0 failed",
    ]


def test_watchdog_at_half_the_period_and_only_while_healthy() -> None:
    notifier = RecordingNotifier(watchdog_usec=2_000_000)  # ping every second
    announcer = Announcer(notifier, "x.toml")
    for tick in range(6):
        announcer.publish(tick * 0.5, state(healthy=tick < 4))
        assert announcer.next_deadline() is not None
    pings = notifier.sent.count("WATCHDOG=1")
    assert pings == 2  # at 0.0 and 1.0; at 2.0 the loop was unhealthy
    assert Announcer(RecordingNotifier(), "x").next_deadline() is None
