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

Job types: a request fetches only the types it asks for (those its idle
workers serve). The set of groups follows the pool (``follow``: the main
loop's verdict, ``kafka_types``): a type that comes is joined once its topic
exists (checked; while it does not, an ERROR says so and it is checked
again every ``TOPIC_RECHECK`` s); a type that goes is left once none of its
jobs is held here (running or reporting: leaving earlier would let the
group's next member run them again while they run here), after a last
commit of what is done. Its records handed out and not started
(``give_back``) stay uncommitted, so the group's next member runs them.
What the feeder does not decide: which types the pool serves.

``KafkaOpener`` opens one once the first worker is ready (the job source of
``dispatch = "kafka"``); its ``consumer`` may be a subclass of
``KafkaJobSource`` (the benchmarks stamp each record's arrival).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from workflow_sdk.errors import WorkflowSDKError
from workflow_sdk.kafka.consumer import KafkaJobSource, KafkaSourceError, check_topics
from workflow_sdk.kafka.dispatch import topic_for
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.config import KafkaConfig
from workflow_sdk.supervisor.io.source import PollResult, SourceThread, SourceUnavailableError

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
#: Seconds between two checks of a new job type's missing topic.
TOPIC_RECHECK = 30.0


class KafkaFeeder(SourceThread):
    """Jobs from Kafka (``dispatch = "kafka"``), answered like polls."""

    # Between requests: serve the groups (partitions stay paused) and commit.
    idle_every = SERVE_EVERY

    def __init__(
        self,
        source: KafkaJobSource,
        wake: Callable[[], None],
        kafka: KafkaConfig | None = None,
    ) -> None:
        self._source = source
        self._kafka = kafka or KafkaConfig(brokers=(source.brokers,))
        #: The types the pool serves (set by the main loop, read by the thread:
        #: one attribute, replaced whole).
        self._wanted = frozenset(source.job_types)
        # Feeder thread only.
        self._next_commit = 0.0
        #: types to leave once none of their jobs is held here
        self._leaving: set[str] = set()
        #: types not joined yet (topic missing, brokers silent): when to try again
        self._recheck: dict[str, float] = {}
        self._missing_logged: set[str] = set()
        super().__init__("kafka-feeder", wake)

    @property
    def following(self) -> frozenset[str]:
        """The job types last asked for with ``follow`` (the consumers catch up)."""
        return self._wanted

    def follow(self, job_types: frozenset[str]) -> None:
        """Consume ``job_types`` from now on (main loop; the thread applies it)."""
        self._wanted = job_types  # applied within ``SERVE_EVERY``, or at the next request

    def give_back(self, job: dict[str, Any]) -> None:
        """A job fetched that will not start here (no worker serves its type
        any more): its record stays uncommitted for the group. Any thread."""
        self._source.give_back(job)

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
        sent_at = time.monotonic()
        self._follow_types(sent_at)
        # Only what the idle workers asking serve, of the types joined.
        types = {t for t in job_types if t in self._source.job_types and t not in self._leaving}
        if not types:
            # Nothing to fetch for them (a topic is missing): ask again after
            # the poll interval, not at once.
            self._fetch(0)
            return PollResult(max_jobs, sent_at, 0.0, [], None, leased=False, waited=False)
        return self._fetch(max_jobs, sent_at, types)

    def _idle(self) -> None:
        self._follow_types(time.monotonic())
        self._fetch(0)

    def _follow_types(self, now: float) -> None:
        try:
            self._change_types(now)
        except Exception:  # keep the thread alive: requests must be answered
            log.exception("kafka: changing the consumed job types failed")

    def _change_types(self, now: float) -> None:
        """Leave the groups of types no longer wanted (once none of their jobs
        is held), join those newly wanted (once their topics exist)."""
        wanted, source = self._wanted, self._source
        self._leaving |= set(source.job_types) - wanted
        for job_type in sorted(self._leaving):
            held = source.held(job_type)
            if held:
                continue
            left = source.remove_type(job_type)
            self._leaving.discard(job_type)
            log.info(
                "kafka: no worker serves %s any more: left the group %s (%d records of it "
                "left uncommitted: the group's next member gets them)",
                job_type,
                self._kafka.group_for(job_type),
                left,
            )
        new = [t for t in sorted(wanted) if t not in source.job_types and t not in self._leaving]
        due = [t for t in new if now >= self._recheck.get(t, 0.0)]
        if due:
            self._join(due, now)

    def _join(self, job_types: list[str], now: float) -> None:
        kafka = self._kafka
        try:
            missing = set(check_topics(kafka.brokers, job_types, dict(kafka.config), timeout=5.0))
        except KafkaSourceError as exc:
            log.warning("kafka: cannot join %s yet: %s", ", ".join(job_types), exc)
            self._recheck.update(dict.fromkeys(job_types, now + TOPIC_RECHECK))
            return
        for job_type in job_types:
            group = kafka.group_for(job_type)
            if topic_for(job_type) in missing:
                if job_type not in self._missing_logged:
                    self._missing_logged.add(job_type)
                    log.error(
                        "kafka: a worker serves %s but topic %s does not exist on %s; the "
                        "engine does not create topics: create it (checked again every %.0f s, "
                        "its jobs wait in the engine meanwhile)",
                        job_type,
                        topic_for(job_type),
                        ", ".join(kafka.brokers),
                        TOPIC_RECHECK,
                    )
                self._recheck[job_type] = now + TOPIC_RECHECK
                continue
            try:
                self._source.add_type(job_type, group)
            except KafkaSourceError as exc:
                log.error("kafka: cannot consume %s: %s", topic_for(job_type), exc)
                self._recheck[job_type] = now + TOPIC_RECHECK
                continue
            self._recheck.pop(job_type, None)
            self._missing_logged.discard(job_type)
            log.info("kafka: consuming %s (group %s)", topic_for(job_type), group)

    def _finish(self) -> None:
        try:
            self._source.close()  # commits what is done, leaves the groups
        except Exception:
            log.exception("kafka: closing the consumers failed")

    def _fetch(
        self, wanted: int, sent_at: float = 0.0, job_types: set[str] | None = None
    ) -> PollResult:
        try:
            wait = FETCH_WAIT if wanted else 0.0
            jobs = self._source.fetch(wanted, timeout=wait, job_types=job_types)
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


class KafkaUnavailableError(SourceUnavailableError):
    """The feeder cannot start: ``missing_topics`` (an operator's error), or
    the brokers did not answer."""

    def __init__(self, message: str, missing_topics: list[str]) -> None:
        super().__init__(message, config_error=bool(missing_topics))
        self.missing_topics = missing_topics


def open_feeder(
    kafka: KafkaConfig,
    job_types: Sequence[str],
    client_id: str,
    wake: Callable[[], None],
    *,
    consumer: type[KafkaJobSource] = KafkaJobSource,
) -> KafkaFeeder:
    """Check the topics, then consume ``job_types`` (one group each) with a
    ``consumer``."""
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
    source = consumer(
        kafka.brokers,
        job_types,
        group={t: kafka.group_for(t) for t in job_types},
        dedup_window_seconds=kafka.dedup_window,
        extra_config=dict(kafka.config),
        client_id=client_id,
        max_pending_per_partition=kafka.max_pending_offsets,
    )
    log.info(
        "kafka: consuming %s from %s",
        ", ".join(f"workflow.jobs.{t} (group {kafka.group_for(t)})" for t in job_types),
        brokers,
    )
    return KafkaFeeder(source, wake, kafka)


class KafkaOpener:
    """Opens a ``KafkaFeeder`` for the first ready worker's job types (a
    ``source.SourceOpener``): raises ``KafkaUnavailableError`` when a topic
    is missing or the brokers do not answer."""

    def __init__(
        self,
        kafka: KafkaConfig,
        client_id: str,
        *,
        consumer: type[KafkaJobSource] = KafkaJobSource,
    ) -> None:
        self._kafka = kafka
        self._client_id = client_id
        self._consumer = consumer

    def __call__(self, job_types: tuple[str, ...], wake: Callable[[], None]) -> KafkaFeeder:
        return open_feeder(self._kafka, job_types, self._client_id, wake, consumer=self._consumer)


__all__ = [
    "FETCH_WAIT",
    "TOPIC_RECHECK",
    "KafkaFeeder",
    "KafkaOpener",
    "KafkaUnavailableError",
    "open_feeder",
]
