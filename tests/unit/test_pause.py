"""Pausing intake (POST /pause, SIGUSR2) and the loop's published health.

The intake's and the control's verdicts without a thread; then the real
arbiter of ``unit.fakes.supervisor_rig``, ticked by the test: a pause asked
from another thread (as the metrics server's would) or by a real SIGUSR2
stops its polls while its workers stay up, a poll already out still brings
its jobs, a SIGHUP reload keeps the pause, a resume polls again. Last, the
/healthz verdict the publisher gives the server's threads follows the
loop's ticks, not the caller's.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from unit.fakes import SupervisorRig, idle_slot, intake_with, job, supervisor_rig
from workflow_sdk.errors import EngineConnectionError
from workflow_sdk.supervisor.exposition import remote
from workflow_sdk.supervisor.exposition.announcer import Announcer
from workflow_sdk.supervisor.exposition.health import Verdict
from workflow_sdk.supervisor.exposition.systemd import SystemdNotifier
from workflow_sdk.supervisor.io.source import PollResult
from workflow_sdk.supervisor.loop.control import PAUSE, RESUME, TOGGLE, IntakeControl
from workflow_sdk.supervisor.loop.ledger import JobState
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.publisher import Publisher
from workflow_sdk.supervisor.loop.slots import SlotState

# -- the intake ----------------------------------------------------------------------


def test_a_paused_intake_asks_for_nothing_until_resumed() -> None:
    intake, source = intake_with(idle_slot(1), idle_slot(2))
    assert intake.pause() is True and intake.pause() is False
    assert not intake.may_poll(Phase.RUNNING)
    assert intake.maybe_poll(10.0, Phase.RUNNING, 0) is None
    assert intake.poll_deadline(9.0, Phase.RUNNING) == float("inf"), "no wake-up for a poll"
    assert source.requests == []
    assert intake.resume() is True and intake.resume() is False
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    assert source.requests == [(2, ("a",), 0)]


class ArmedSource:
    """A source whose request waits for report answers (an armed poll)."""

    def __init__(self) -> None:
        self.disarmed = 0

    def disarm(self) -> bool:
        self.disarmed += 1
        return True


def test_a_pause_withdraws_a_poll_that_waits_for_report_answers() -> None:
    intake, _ = intake_with(idle_slot(1))
    armed = ArmedSource()
    intake._source = armed  # type: ignore[assignment]
    intake.pause()
    assert armed.disarmed == 1


def test_the_source_view_follows_failures_and_the_last_good_answer() -> None:
    """Sequence: a good answer, then two failures (the engine went down),
    then a good one: the view shows the failures with the last error and the
    backoff, then none; the last good answer's time throughout."""
    intake, _ = intake_with(idle_slot(1))
    intake.on_result(PollResult(1, 10.0, 0.01, []), 10.0)
    view = intake.source_view("poll", 10.0, 5.0)
    assert (view.open, view.last_ok_at, view.failures, view.last_error) == (True, 10.0, 0, "")
    down = EngineConnectionError(
        "engine unreachable: refused http://u:secret@engine/", request_sent=False
    )
    for now in (11.0, 12.0):
        intake.on_result(PollResult(1, now, 0.01, error=down), now)
    view = intake.source_view("poll", 12.0, 5.0)
    assert view.failures == 2 and view.last_ok_at == 10.0
    assert view.last_error.startswith("EngineConnectionError: ")
    assert "secret" not in view.last_error, "credentials are redacted"
    assert view.next_request_at == intake.next_poll_at > 12.0
    intake.on_result(PollResult(1, 13.0, 0.01, []), 13.0)
    view = intake.source_view("poll", 13.0, 5.0)
    assert (view.failures, view.last_error, view.last_ok_at) == (0, "", 13.0)


def test_the_source_view_shows_a_request_out_and_whether_it_is_wedged() -> None:
    intake, source = intake_with(idle_slot(1))
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    source.sent_at = 10.0
    view = intake.source_view("poll", 11.0, 5.0)
    assert view.in_flight_since == 10.0 and view.responsive
    assert not intake.source_view("poll", 10.0 + 5.0 * 2 + 6, 5.0).responsive


# -- the control -----------------------------------------------------------------------


def control_for() -> tuple[IntakeControl, list[int]]:
    intake, _ = intake_with(idle_slot(1))
    wakes: list[int] = []
    return IntakeControl(intake, lambda: wakes.append(1)), wakes


def test_apply_pauses_resumes_and_toggles() -> None:
    control, _ = control_for()
    assert control.apply(PAUSE, Phase.RUNNING, "test").reason.startswith("paused:")
    assert control.intake.paused
    assert control.apply(PAUSE, Phase.RUNNING, "test").reason.startswith("paused already")
    assert control.apply(TOGGLE, Phase.RELOADING, "test").reason == "resumed: jobs are taken"
    assert not control.intake.paused
    assert control.apply(RESUME, Phase.RUNNING, "test").reason.startswith("not paused")
    assert control.apply(TOGGLE, Phase.RUNNING, "test").ok and control.intake.paused


def test_a_stopping_supervisor_refuses() -> None:
    control, _ = control_for()
    verdict = control.apply(PAUSE, Phase.DRAINING, "test")
    assert verdict == Verdict(False, "the supervisor is stopping: it takes no new jobs", code=409)
    assert not control.intake.paused


def test_a_request_from_another_thread_waits_for_the_loop() -> None:
    """Sequence: a server thread asks; it only queues and wakes the loop;
    the loop's ``take`` acts and the thread gets the loop's verdict."""
    control, wakes = control_for()
    answers: list[Verdict] = []
    asker = threading.Thread(target=lambda: answers.append(control.request(PAUSE, "t")))
    asker.start()
    deadline = time.monotonic() + 10
    while not wakes and time.monotonic() < deadline:
        asker.join(0.01)
    assert wakes and not control.intake.paused, "queued, not acted on by the thread"
    control.take(Phase.RUNNING)
    asker.join(10)
    assert control.intake.paused and answers[0].ok


def test_a_loop_that_does_not_act_in_time_gets_a_503() -> None:
    control, _ = control_for()
    verdict = control.request(PAUSE, "t", timeout=0.01)
    assert not verdict.ok and verdict.http_status == 503
    assert "did not act within" in verdict.reason
    control.take(Phase.RUNNING)  # it still applies once the loop runs
    assert control.intake.paused
    assert control.request("explode", "t").http_status == 404


# -- the arbiter ---------------------------------------------------------------------------


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SupervisorRig]:
    with supervisor_rig(tmp_path, monkeypatch, workers=2) as started:
        yield started


def ask(rig: SupervisorRig, action: str) -> Verdict:
    """Ask as the metrics server's thread does; tick until it is answered."""
    answers: list[Verdict] = []
    asker = threading.Thread(target=lambda: answers.append(rig.sup.control.request(action, "t")))
    asker.start()
    rig.tick_until(lambda: answers, f"the {action} answered")
    asker.join(10)
    return answers[0]


def answer_poll_out(rig: SupervisorRig) -> None:
    """A poll that went out before the pause took effect is answered (empty)."""
    if rig.source.busy:
        rig.source.answer([])
        rig.tick_until(lambda: not rig.source.busy, "the poll's answer taken")


def test_paused_no_poll_goes_out_while_workers_stay_up_and_resume_polls(
    rig: SupervisorRig,
) -> None:
    """Sequence: workers ready, the first poll answered empty; pause; the
    loop keeps ticking (its deadline a second ahead, no poll wake-up) and
    sends no poll though both workers are idle; resume: a poll goes out."""
    rig.ready_all()
    rig.tick_until(lambda: rig.source.busy, "the first poll")
    rig.source.answer([])
    rig.tick_until(lambda: not rig.source.busy, "its answer taken")
    assert ask(rig, PAUSE).ok
    answer_poll_out(rig)
    polls = len(rig.source.requests)
    until = time.monotonic() + 1.5  # more than ten poll intervals (0.1 s)
    while time.monotonic() < until:
        rig.sup.tick()
    assert len(rig.source.requests) == polls, "no poll while paused"
    assert all(s.state is SlotState.IDLE for s in rig.sup.pool.slots.values())
    assert rig.sup.publisher.readiness().reason.startswith("paused")
    assert rig.sup.announcer._title.endswith(" paused")
    assert ask(rig, RESUME).ok
    rig.tick_until(lambda: len(rig.source.requests) > polls, "a poll after the resume")
    assert rig.sup.publisher.readiness().ok


def test_a_poll_out_when_the_pause_comes_still_brings_its_jobs(rig: SupervisorRig) -> None:
    """Sequence: a poll is out; pause; its answer claims a job: the job runs
    (it is claimed: left alone it would wait for its lease) and no next poll
    goes out."""
    rig.ready_all()
    rig.tick_until(lambda: rig.source.busy, "a poll")
    assert ask(rig, PAUSE).ok
    polls = len(rig.source.requests)
    rig.source.answer([job("j1")])
    rig.tick_until(
        lambda: (e := rig.sup.ledger.get("j1")) is not None and e.state is JobState.RUNNING,
        "j1 running",
    )
    slot = next(s for s in rig.sup.pool.slots.values() if s.job is not None)
    rig.worker(slot.number).done("j1")
    rig.tick_until(lambda: rig.client.completed == ["j1"], "j1 reported")
    assert len(rig.source.requests) == polls


def test_sigusr2_toggles_the_pause_and_a_reload_keeps_it(rig: SupervisorRig) -> None:
    """Sequences: a real SIGUSR2 pauses; a SIGHUP reload replaces both
    workers and the pause holds through it and after; SIGUSR2 again resumes."""
    rig.ready_all()
    rig.tick_until(lambda: rig.source.busy, "the first poll")
    rig.source.answer([])
    rig.tick_until(lambda: not rig.source.busy, "its answer taken")
    os.kill(os.getpid(), signal.SIGUSR2)
    rig.tick_until(lambda: rig.sup.intake.paused, "paused by SIGUSR2")
    answer_poll_out(rig)
    os.kill(os.getpid(), signal.SIGHUP)
    rig.tick_until(lambda: len(rig.starter.started) == 3, "the reload's first new worker")
    rig.starter.started[2].ready()
    rig.tick_until(lambda: rig.sup.pool.slots[1].retiring, "an old worker retired")
    rig.worker(1).process.exit(0)
    rig.tick_until(lambda: len(rig.starter.started) == 4, "the second new worker")
    rig.starter.started[3].ready()
    rig.tick_until(lambda: rig.sup.pool.slots[2].retiring, "the other old worker retired")
    rig.worker(2).process.exit(0)
    rig.tick_until(lambda: rig.sup.phase is Phase.RUNNING, "the reload's end")
    assert rig.sup.intake.paused, "the reload kept the pause"
    polls = len(rig.source.requests)
    rig.sup.tick()
    assert len(rig.source.requests) == polls
    os.kill(os.getpid(), signal.SIGUSR2)
    rig.tick_until(lambda: len(rig.source.requests) > polls, "a poll after the second SIGUSR2")
    assert not rig.sup.intake.paused


def test_a_pause_asked_while_draining_is_refused(rig: SupervisorRig) -> None:
    rig.ready_all()
    rig.sup.request_stop()
    rig.tick_until(lambda: rig.sup.phase is Phase.DRAINING, "the drain")
    verdict = ask(rig, PAUSE)
    assert verdict.http_status == 409 and not rig.sup.intake.paused


# -- what the server's threads are told --------------------------------------------------------


def test_healthz_follows_the_loops_ticks_not_the_caller(rig: SupervisorRig) -> None:
    """Sequence: the loop ticks: /healthz's verdict is alive; the loop stops
    ticking (wedged, as far as the server's threads can tell; the test just
    does not tick it) while they keep asking: the verdict turns 503 once the
    limit passes, saying how long ago the loop ran; a tick: alive again."""
    rig.ready_all()
    publisher = rig.sup.publisher
    publisher.stall_limit = 0.3
    rig.sup.tick()
    assert publisher.health().ok
    deadline = time.monotonic() + 10
    while publisher.health().ok and time.monotonic() < deadline:
        time.sleep(0.02)  # the server's thread asking again, the loop wedged
    verdict = publisher.health()
    assert not verdict.ok and verdict.http_status == 503
    assert verdict.reason.startswith("the main loop has not run for ")
    rig.sup.tick()
    assert publisher.health().ok


def test_readyz_follows_the_source_and_status_shows_the_pool(rig: SupervisorRig) -> None:
    """Sequence: no worker ready yet: not ready; ready, first poll out: ready;
    the poll fails (engine down): not ready, healthy; the next one answers:
    ready. /status shows the workers, the source and the verdicts."""
    assert not rig.sup.publisher.readiness().ok
    rig.ready_all()
    rig.tick_until(lambda: rig.source.busy, "a poll")
    rig.tick_until(lambda: rig.sup.publisher.readiness().ok, "ready")
    rig.source.answer(
        [], error=EngineConnectionError("engine unreachable: refused", request_sent=False)
    )
    rig.tick_until(lambda: not rig.sup.publisher.readiness().ok, "not ready")
    assert "the job source is failing: 1 failed" in rig.sup.publisher.readiness().reason
    assert rig.sup.publisher.health().ok, "an engine outage is not a wedged loop"
    document = rig.sup.publisher.status()
    assert [w["state"] for w in document["workers"]] == ["idle", "idle"]
    assert document["source"]["failures"] == 1 and document["ready"]["ok"] is False
    assert document["paused"] is False and document["workers_target"] == 2
    rig.tick_until(lambda: rig.source.busy, "the next poll")
    rig.source.answer([])
    rig.tick_until(lambda: rig.sup.publisher.readiness().ok, "ready again")


def test_before_the_first_publish_status_is_empty_and_the_loop_not_alive_yet() -> None:
    """Sequence: the server answers before the loop's first pass (start-up):
    /status is the same document, empty and "starting"; /healthz 503; after
    the first publish: alive, the worker shown."""
    intake, _ = intake_with(idle_slot(1))
    publisher = Publisher(
        intake.pool,
        intake.ledger,
        intake.stats,
        intake,
        announcer=Announcer(SystemdNotifier(None), "sv.toml"),
        engine_timeout=5.0,
    )
    document = publisher.status()
    assert (document["phase"], document["workers"], document["healthy"]["ok"]) == (
        "starting",
        [],
        False,
    )
    assert remote.render_status(document).startswith("supervisor pid ")
    publisher.publish(time.monotonic(), Phase.RUNNING)
    assert publisher.health().ok
    assert [w["state"] for w in publisher.status()["workers"]] == ["idle"]
