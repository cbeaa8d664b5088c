"""Jobs from the engine's Kafka topics, for the supervisor (``dispatch = "kafka"``).

One thread drives a ``KafkaJobSource`` (librdkafka wants one thread for
fetching, committing and the rebalance callbacks): it fetches as many
records as the main loop asked for and hands them back like a poll answer;
between requests it keeps serving the consumer groups (paused partitions,
heartbeats, rebalances) and commits what is done. The main loop never
blocks on Kafka.

Backpressure is the same as for polls: the main loop asks for no more than
its idle workers and its ledger's room allow, and while it asks for nothing
every partition stays paused, so records wait in Kafka, not in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from workflow_sdk.errors import WorkflowSDKError
from workflow_sdk.kafka.consumer import KafkaJobSource, KafkaSourceError, check_topics
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.config import KafkaConfig
from workflow_sdk.supervisor.source import PollResult, SourceThread

log = logging.getLogger("workflow_sdk.supervisor")

#: Longest one fetch waits for records (an empty answer then comes back).
FETCH_WAIT = 0.5
#: How often the groups are served and offsets committed between requests.
SERVE_EVERY = 0.2
#: Least time between two offset commits while fetching. One commit per
#: fetch would be a broker round trip (and its work in the broker and in
#: librdkafka) for every one or two jobs when jobs are short; a record done
#: meanwhile is committed with the next one (and on close, synchronously).
COMMIT_EVERY = 0.2


class KafkaFeeder(SourceThread):
    """Jobs from Kafka (``dispatch = "kafka"``), answered like polls."""

    # Between requests: serve the groups (partitions stay paused) and commit.
    idle_every = SERVE_EVERY

    def __init__(self, source: KafkaJobSource, wake: Callable[[], None]) -> None:
        self._source = source
        self._next_commit = 0.0  # feeder thread only
        super().__init__("kafka-feeder", wake)

    def settle(self, job: dict[str, Any], done: bool) -> None:
        # Any thread: the source only records; the feeder thread commits.
        if done:
            self._source.mark_done(job)
        else:
            self._source.mark_unfinished(job)

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        # Any thread: the source answers under its own lock.
        return self._source.retry_seen(job)

    def stats(self) -> SourceStats:
        """The source's counters. Any thread: the source hands out a frozen
        snapshot under its own lock, so a scrape never waits on Kafka."""
        return self._source.stats

    def _answer(self, max_jobs: int, job_types: tuple[str, ...]) -> PollResult:
        # The source consumes every job type it was built for; the pool's
        # workers all serve the same handlers, so the types need no filter.
        return self._fetch(max_jobs, time.monotonic())

    def _idle(self) -> None:
        self._fetch(0)

    def _finish(self) -> None:
        try:
            self._source.close()  # commits what is done, leaves the groups
        except Exception:
            log.exception("kafka: closing the consumers failed")

    def _fetch(self, wanted: int, sent_at: float = 0.0) -> PollResult:
        try:
            jobs = self._source.fetch(wanted, timeout=FETCH_WAIT if wanted else 0.0)
            now = time.monotonic()
            if now >= self._next_commit:
                self._source.commit()
                self._next_commit = now + COMMIT_EVERY
            error: WorkflowSDKError | None = None
        except WorkflowSDKError as exc:
            jobs, error = [], exc
        except Exception as exc:  # keep the thread alive whatever librdkafka does
            log.exception("kafka: unexpected error while fetching")
            jobs, error = [], WorkflowSDKError(f"{type(exc).__name__}: {exc}")
        latency = time.monotonic() - sent_at if sent_at else 0.0
        return PollResult(wanted, sent_at, latency, jobs, error, leased=False, waited=error is None)


class KafkaUnavailableError(WorkflowSDKError):
    """The feeder cannot start: ``missing_topics`` (an operator's error), or
    the brokers did not answer."""

    def __init__(self, message: str, missing_topics: list[str]) -> None:
        super().__init__(message)
        self.missing_topics = missing_topics


def open_feeder(
    kafka: KafkaConfig, job_types: Sequence[str], client_id: str, wake: Callable[[], None]
) -> KafkaFeeder:
    """Check the topics, then consume ``job_types`` (one group each)."""
    brokers = ", ".join(kafka.brokers)
    try:
        missing = check_topics(kafka.brokers, job_types, dict(kafka.config))
    except KafkaSourceError as exc:
        raise KafkaUnavailableError(f"kafka: the brokers {brokers} ({exc})", []) from exc
    if missing:
        raise KafkaUnavailableError(
            f"kafka: topic(s) {', '.join(missing)} do not exist on {brokers}; the engine "
            "does not create them: create one per job type",
            missing,
        )
    source = KafkaJobSource(
        kafka.brokers,
        job_types,
        group={t: kafka.group_for(t) for t in job_types},
        dedup_window_seconds=kafka.dedup_window,
        extra_config=dict(kafka.config),
        client_id=client_id,
    )
    log.info(
        "kafka: consuming %s from %s",
        ", ".join(f"workflow.jobs.{t} (group {kafka.group_for(t)})" for t in job_types),
        brokers,
    )
    return KafkaFeeder(source, wake)


__all__ = ["FETCH_WAIT", "KafkaFeeder", "KafkaUnavailableError", "open_feeder"]
