"""The supervisor's poller and reporter threads, with a scripted client."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from workflow_sdk.errors import EngineConnectionError, EngineResponseError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.supervisor.io.poller import Poller
from workflow_sdk.supervisor.io.reporter import Reporter


class ScriptedClient:
    """Answers polls from a list; records completions; can block or fail."""

    timeout = 1.0

    def __init__(self) -> None:
        self.polls: list[tuple[str, list[str], int]] = []
        self.answers: list[Any] = []
        self.completed: list[str] = []
        self.failed: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.complete_errors: list[Exception] = []

    def poll_jobs(self, worker_id: str, job_types: list[str], max_jobs: int = 1) -> Any:
        self.polls.append((worker_id, job_types, max_jobs))
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def complete_job(self, job_id: str, worker_id: str, variables: Any = None) -> None:
        assert self.release.wait(5)
        if self.complete_errors:
            raise self.complete_errors.pop(0)
        self.completed.append(job_id)

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        self.failed.append(job_id)


def done(job_id: str) -> Outcome:
    return Outcome(job_id, "t", True, {"x": 1})


def test_poller_asks_for_exactly_what_it_is_told_and_wakes_the_loop() -> None:
    client = ScriptedClient()
    client.answers = [[{"id": "j1"}]]
    woken = threading.Event()
    poller = Poller(client, "w", woken.set)
    try:
        assert poller.take() is None and not poller.busy
        poller.request(3, ["a", "b"])
        assert poller.busy
        with pytest.raises(RuntimeError):
            poller.request(1, ["a"])  # one poll in flight at a time
        assert woken.wait(5)
        result = poller.take()
        assert result is not None and result.jobs == [{"id": "j1"}] and result.error is None
        assert result.asked == 3 and result.latency >= 0
        assert client.polls == [("w", ["a", "b"], 3)]
        assert not poller.busy
    finally:
        poller.close()


def test_an_armed_poll_goes_out_once_the_report_answers_it_waits_for_have_come() -> None:
    client = ScriptedClient()
    client.answers = [[{"id": "j1"}, {"id": "j2"}]]
    woken = threading.Event()
    poller = Poller(client, "w", woken.set)
    try:
        poller.answered(3)  # answers counted before the request
        poller.request(2, ["a"], after=5)
        assert poller.busy and poller.armed
        poller.answered(4)
        assert poller.armed and not woken.is_set()
        poller.answered(3)  # a reporter thread late with an older count changes nothing
        assert poller.armed
        poller.answered(5)
        assert woken.wait(5)
        result = poller.take()
        assert result is not None and [job["id"] for job in result.jobs] == ["j1", "j2"]
        assert client.polls == [("w", ["a"], 2)]
        assert not poller.armed and not poller.busy
        assert poller.sent_at > 0
        # Answers already counted: the next armed request goes out at once.
        woken.clear()
        poller.request(1, ["a"], after=5)
        assert woken.wait(5)
        assert poller.take() is not None and len(client.polls) == 2
    finally:
        poller.close()


def test_an_armed_poll_can_be_withdrawn_until_it_goes_out() -> None:
    client = ScriptedClient()
    woken = threading.Event()
    poller = Poller(client, "w", woken.set)
    try:
        poller.request(1, ["a"], after=1)
        assert poller.disarm()
        assert not poller.busy and not poller.armed
        poller.answered(1)
        poller.request(1, ["a"])  # free for a new request; the old one never went out
        assert woken.wait(5)
        assert poller.take() is not None
        assert len(client.polls) == 1
        assert not poller.disarm()  # nothing waiting
    finally:
        poller.close()


def test_a_poller_closed_while_armed_ends_its_thread() -> None:
    poller = Poller(ScriptedClient(), "w", lambda: None)
    poller.request(1, ["a"], after=10)
    poller.close(join_timeout=5)
    assert not poller._thread.is_alive()


@pytest.mark.parametrize(
    "error",
    [
        EngineConnectionError("refused", request_sent=False),
        EngineResponseError(200, "garbage"),
        KeyError("a bug in a custom client"),
    ],
)
def test_poller_turns_every_failure_into_a_result(error: Exception) -> None:
    client = ScriptedClient()
    client.answers = [error]
    woken = threading.Event()
    poller = Poller(client, "w", woken.set)
    try:
        poller.request(1, ["a"])
        assert woken.wait(5)
        result = poller.take()
        assert result is not None and result.jobs == [] and result.error is not None
        woken.clear()
        poller.request(1, ["a"])  # the thread survived
        assert woken.wait(5)
    finally:
        poller.close()


def test_reporter_delivers_and_reports_status() -> None:
    client = ScriptedClient()
    statuses: list[tuple[str, ReportStatus]] = []
    lock = threading.Lock()

    def on_status(outcome: Outcome, status: ReportStatus) -> None:
        with lock:
            statuses.append((outcome.job_id, status))

    reporter = Reporter(client, "w", deadline=5, threads=2, on_status=on_status)
    try:
        client.release.clear()
        for i in range(5):
            reporter.submit(done(f"j{i}"))
        assert reporter.pending() == 5
        assert not reporter.wait_idle(0.05)
        client.release.set()
        assert reporter.wait_idle(5)
        assert reporter.pending() == 0
        assert sorted(client.completed) == [f"j{i}" for i in range(5)]
        assert sorted(statuses) == [(f"j{i}", ReportStatus.DELIVERED) for i in range(5)]
    finally:
        reporter.stop(give_up=True)


def test_reporter_retries_a_completion_and_counts_the_retry() -> None:
    client = ScriptedClient()
    client.complete_errors = [EngineConnectionError("refused", request_sent=False)]
    retries: list[str] = []
    reporter = Reporter(
        client, "w", deadline=5, threads=1, on_retry=lambda o, e: retries.append(o.job_id)
    )
    try:
        reporter.submit(done("j1"))
        assert reporter.wait_idle(5)
        assert client.completed == ["j1"] and retries == ["j1"]
    finally:
        reporter.stop(give_up=True)


def test_reporter_stop_with_give_up_abandons_waiting_retries() -> None:
    client = ScriptedClient()
    client.complete_errors = [EngineConnectionError("refused", request_sent=False)] * 100
    statuses: list[ReportStatus] = []
    reporter = Reporter(
        client, "w", deadline=600, threads=1, on_status=lambda o, s: statuses.append(s)
    )
    reporter.submit(done("j1"))
    reporter.stop(give_up=True)
    assert statuses == [ReportStatus.LOST]
    assert client.completed == []
