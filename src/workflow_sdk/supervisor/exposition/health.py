"""The verdicts of /healthz (is the parent's main loop alive?) and /readyz (does it take jobs?).

Liveness is judged from the main loop's own progress: the time of its last
tick, which the loop records (one float, written by the loop, read by the
/metrics server's threads), and the rule that also withholds systemd's
WATCHDOG=1 (the job source's thread answers within its bound). An HTTP
thread that still answers while the loop is wedged therefore says so.

Readiness asks more: workers are up, the job source works (its last
answer was not an error and a request out has not waited too long), and
the supervisor is neither paused nor stopping. An engine outage makes it
not ready; it does not make it unhealthy (restarting would not help).

Each function returns a ``Verdict`` and has unit tests; none reads a clock
or the loop's objects itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflow_sdk.supervisor.exposition.status import PoolSnapshot

#: Seconds without a tick of the main loop after which it is judged wedged.
#: The loop wakes at least once a second (``Supervisor.next_deadline``); a
#: tick that takes longer is doing something wrong. systemd's watchdog has
#: its own period (``WatchdogSec=``, 30 s in the shipped unit).
LOOP_STALL_LIMIT = 10.0
#: Seconds a request to the job source may be out beyond the engine's
#: timeout before the source counts as not answering (its own timeout
#: should have ended it by then).
ANSWER_MARGIN = 5.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    #: one line for the operator (the probe's body)
    reason: str
    #: the HTTP status to answer with (0: 200 when ``ok``, else 503)
    code: int = 0

    @property
    def http_status(self) -> int:
        return self.code or (200 if self.ok else 503)


def judge_liveness(
    now: float,
    last_tick: float,
    *,
    ticked: bool,
    snapshot: PoolSnapshot | None,
    limit: float = LOOP_STALL_LIMIT,
) -> Verdict:
    """Alive when the loop ticked within ``limit`` seconds and the job
    source's thread is not wedged (``SourceView.responsive``).

    Before the loop's first tick (``ticked`` false; ``last_tick`` is when
    start-up began) it is not alive yet: start-up imports and starts the
    fork server (with ``preload_handlers``, the handler modules), which a
    probe must give time (Kubernetes: a startup probe) rather than take for
    a live loop.
    """
    age = now - last_tick
    if not ticked:
        return Verdict(
            False, f"starting: the main loop has not run yet (start-up began {age:.1f} s ago)"
        )
    if age > limit:
        return Verdict(False, f"the main loop has not run for {age:.1f} s (limit {limit:g} s)")
    source = snapshot.source if snapshot is not None else None
    if source is not None and not source.responsive:
        waited = now - source.in_flight_since if source.in_flight_since else 0.0
        return Verdict(
            False, f"the job source's thread has not answered for {waited:.0f} s (wedged)"
        )
    return Verdict(True, f"alive: the main loop ran {age:.1f} s ago")


def judge_readiness(snapshot: PoolSnapshot | None, now: float, *, engine_timeout: float) -> Verdict:
    """Ready when the supervisor takes jobs: running or reloading, not
    paused, a worker ready, its job source open and answering."""
    if snapshot is None:
        return Verdict(False, "starting")
    if snapshot.phase in ("draining", "done"):
        return Verdict(False, "stopping: no new jobs are taken")
    if snapshot.paused:
        return Verdict(False, "paused: no new jobs are taken (rochallor-supervisor resume)")
    ready = snapshot.ready_workers()
    if ready == 0:
        booting = sum(1 for w in snapshot.workers if w.state == "booting")
        return Verdict(False, f"no worker is ready ({booting} booting)")
    source = snapshot.source
    if not source.open:
        return Verdict(False, "the job source is not open yet")
    if source.failures:
        wait = max(0.0, source.next_request_at - now)
        return Verdict(
            False,
            f"the job source is failing: {source.failures} failed request(s) in a row, "
            f"next in {wait:.1f} s: {source.last_error}",
        )
    if source.in_flight_since:
        waited = now - source.in_flight_since
        if waited > engine_timeout + ANSWER_MARGIN:
            return Verdict(False, f"the job source has not answered for {waited:.0f} s")
    return Verdict(
        True, f"ready: {ready} of {snapshot.target} workers ready, the {source.kind} source answers"
    )


__all__ = ["ANSWER_MARGIN", "LOOP_STALL_LIMIT", "Verdict", "judge_liveness", "judge_readiness"]
