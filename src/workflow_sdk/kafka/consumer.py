"""``KafkaJobSource``: jobs from the engine's Kafka topics, in the polled-job shape.

One consumer per job type
-------------------------
The convention of the engine's other SDKs is one consumer group per job type,
``workflow.workers.<jobType>``, and a Kafka consumer belongs to exactly one
group: so the source runs one ``confluent_kafka.Consumer`` per job type,
subscribed to ``workflow.jobs.<jobType>``. That also keeps job types
independent: a job type's partitions are spread over the hosts that run it,
and pausing one type's partitions does not touch another's. The set can
change while the source runs (``add_type``, ``remove_type``: the
supervisor follows its workers' job types across reloads), and a fetch may
be limited to some of the types (the others stay paused and served).

Threads
-------
``fetch``, ``commit`` and ``close`` are for one thread, the *driver* (a
single-threaded main loop, or a thread of its own): librdkafka runs the
rebalance callbacks inside ``fetch`` on that thread. ``mark_done`` and
``mark_unfinished`` may be called from any thread (workers finishing jobs);
they only record, and the driver's next ``commit()`` commits. ``stats``
may be read from any thread.

Capacity
--------
``fetch(n)`` never returns more than ``n`` jobs. ``fetch(0)`` pauses every
assigned partition and only serves the group (rebalances, liveness:
librdkafka needs a call at least every ``max.poll.interval.ms``); the next
``fetch(n > 0)`` resumes them. The driver should call ``fetch`` with its
free capacity at least every few seconds, also when it is 0.

Commits and duplicates
----------------------
A record's offset is committed only when it and every earlier record of its
partition are done (``offsets.OffsetTracker``): the job's result reached the
engine, or it failed for good, or the record was dropped (malformed, or a
duplicate of a finished dispatch). A record whose ``dedup_id`` finished
within the dedup window is dropped. A job that is running here is not
started twice: a record of the same dispatch (same ``dedup_id``) is held and
becomes done with the running job; another dispatch of the same job id (the
engine's new dispatch after a retryable fail, which can be fetched before
the failed run is marked done) waits and is handed out once it is.

Rebalances: on revoke, what is done is committed and the partition is
forgotten; jobs of it that are still running finish and report, and their
offsets are committed only if the partition comes back (the records are
fetched again and found done or running). Otherwise the new owner runs
them again: the documented at-least-once case.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

# KafkaSourceError and check_topics live with the brokers; imported from here too.
from workflow_sdk.kafka.brokers import (
    LIBRDKAFKA_LOG,
    KafkaSourceError,
    brokers_text,
    check_topics,
)
from workflow_sdk.kafka.dedup import DEFAULT_MAX_ENTRIES, DEFAULT_WINDOW_SECONDS, DedupWindow
from workflow_sdk.kafka.dispatch import MalformedDispatch, decode_dispatch, group_for, topic_for
from workflow_sdk.kafka.offsets import (
    DEFAULT_MAX_PENDING,
    HoldBack,
    OffsetTracker,
    TopicPartitionKey,
)
from workflow_sdk.kafka.stats import SourceStats

log = logging.getLogger("workflow_sdk.kafka")

#: The key of a fetched job dict that says where its record came from:
#: ``{"topic": str, "partition": int, "offset": int}``. JSON-shaped, so the
#: job dict can cross a process boundary; handlers never see it.
RECORD_KEY = "kafkaRecord"

#: Longest a single ``poll`` waits when several consumers share a fetch.
_SLICE = 0.05

#: Consumer group settings that differ from librdkafka's, overridable through
#: ``extra_config`` (the supervisor's ``[kafka.config]``). Cooperative
#: incremental rebalancing: a member joining or leaving moves only the
#: partitions that change hands, the others go on (eager rebalancing stops
#: every member's partitions at each join or leave); the callbacks get only
#: the changed partitions, and the client library assigns them incrementally
#: since ``_on_assign`` and ``_on_revoke`` do not assign themselves. A 10 s
#: session (heartbeat every 3 s) moves the partitions of a member killed
#: with them assigned within about 15 s, not librdkafka's 45 s.
GROUP_DEFAULTS: dict[str, Any] = {
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10000,
    "heartbeat.interval.ms": 3000,
}


@dataclass
class _Running:
    """A job handed out and not finished, with every record it answers for."""

    records: list[tuple[TopicPartitionKey, int]] = field(default_factory=list)
    dedup_ids: set[str] = field(default_factory=set)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "none"


def _record_key(job: Mapping[str, Any]) -> TopicPartitionKey:
    record = job[RECORD_KEY]
    return (str(record["topic"]), int(record["partition"]))


class KafkaJobSource:
    """Consumes ``workflow.jobs.<jobType>`` for ``job_types``; see the module doc.

    :param brokers: ``"host:port,host:port"`` or a list of ``host:port``.
    :param job_types: job types to consume (one consumer each).
    :param group: job type -> consumer group; default ``workflow.workers.<jobType>``.
    :param dedup_window_seconds: how long a finished ``dedup_id`` is remembered.
    :param extra_config: more librdkafka settings for every consumer (security:
        ``security.protocol``, ``sasl.*``, ``ssl.*``...); they win over ours.
    :param client_id: librdkafka ``client.id``; default ``<host name>``.
    """

    def __init__(
        self,
        brokers: str | Sequence[str],
        job_types: Sequence[str],
        *,
        group: Mapping[str, str] | None = None,
        dedup_window_seconds: float = DEFAULT_WINDOW_SECONDS,
        dedup_max_entries: int = DEFAULT_MAX_ENTRIES,
        extra_config: Mapping[str, Any] | None = None,
        client_id: str | None = None,
        max_pending_per_partition: int = DEFAULT_MAX_PENDING,
    ) -> None:
        types = sorted(set(job_types))
        if not types:
            raise ValueError("a KafkaJobSource needs at least one job type")
        for job_type in types:
            if not isinstance(job_type, str) or not job_type:
                raise ValueError(f"job types must be non-empty strings, got {job_type!r}")
        self.brokers = brokers_text(brokers)
        self.job_types = types
        self.groups = {t: (group or {}).get(t) or group_for(t) for t in types}
        self.dedup = DedupWindow(dedup_window_seconds, dedup_max_entries)
        self._lock = threading.Lock()
        # Guarded by ``_lock`` (workers call mark_done while the driver fetches).
        self._tracker = OffsetTracker()
        self._running: dict[str, _Running] = {}  # job id -> its records
        self._running_dedup: dict[str, str] = {}  # dedup id -> job id
        # Other dispatches of a running job (job id -> jobs), and those whose
        # earlier run finished, to hand out first.
        self._deferred: dict[str, list[dict[str, Any]]] = {}
        self._ready: deque[dict[str, Any]] = deque()
        self._stats = SourceStats()
        #: Partitions paused at the pending bound (read by ``stats`` too).
        self._hold_back = HoldBack(max_pending_per_partition)
        # Driver thread only.
        #: Per job type, the partitions its consumer has paused in librdkafka,
        #: assigned or not: librdkafka keeps a partition's pause when the
        #: partition is revoked or lost, and it comes back paused (see ``_forget``).
        self._paused: dict[str, set[TopicPartitionKey]] = {}
        self._missing_logged: set[str] = set()
        self._rotation = 0
        self._closed = False
        #: An error raised part-way through a fetch that had accepted jobs:
        #: those went out, the error is raised by the next fetch.
        self._error: Exception | None = None
        self._config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "client.id": client_id or socket.gethostname(),
            # We commit explicit offsets, in order, after the result is in.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Jobs published before the group's first consumer must run too.
            "auto.offset.reset": "earliest",
            # librdkafka's own lines, through our log format (see brokers.py).
            "logger": LIBRDKAFKA_LOG,
            # The answers to asynchronous commits (see ``_on_commit``).
            "on_commit": self._on_commit,
            **GROUP_DEFAULTS,
        }
        self._extra_config = dict(extra_config or {})
        self._consumers: dict[str, Consumer] = {}
        try:
            for job_type in types:
                self._subscribe(job_type)
        except KafkaSourceError:
            self._close_consumers()
            raise

    # -- public ----------------------------------------------------------------

    @property
    def stats(self) -> SourceStats:
        """The counters and gauges now. Any thread (the supervisor's /metrics
        scrapes read them): a frozen snapshot. The counters are replaced whole
        under ``_lock`` at each change; the gauges are read here, under the
        same lock, so one snapshot is consistent."""
        with self._lock:
            return replace(
                self._stats,
                in_flight=len(self._running),
                offsets_pending=self._tracker.pending(),
                partitions_held_back=len(self._hold_back),
            )

    @property
    def in_flight(self) -> int:
        """Jobs handed out and not yet marked done or unfinished."""
        with self._lock:
            return len(self._running)

    def pending_offsets(self) -> int:
        """Records fetched whose offsets cannot be committed yet."""
        with self._lock:
            return self._tracker.pending()

    def held(self, job_type: str) -> int:
        """Jobs of ``job_type`` handed out and not yet marked or given back. Any thread."""
        topic = topic_for(job_type)
        with self._lock:
            return sum(1 for r in self._running.values() if r.records[0][0][0] == topic)

    def fetch(
        self, max_records: int, timeout: float = 0.0, job_types: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``max_records`` new jobs, waiting up to ``timeout`` s for the first.

        Only of ``job_types`` when given (the other types' partitions stay
        paused, their groups served); an empty selection fetches nothing at
        once. Each job dict has the polled-job keys plus ``dedupId`` and
        ``kafkaRecord`` (see ``RECORD_KEY``). Driver thread only.
        """
        if self._closed:
            raise RuntimeError("the KafkaJobSource is closed")
        selected = {t: c for t, c in self._consumers.items() if job_types is None or t in job_types}
        if max_records <= 0 or not selected:
            self._idle(self._consumers)
            return []
        error, self._error = self._error, None
        if error is not None:
            # Raised part-way through the last fetch, which returned the jobs
            # it had accepted before: reported now.
            raise error
        self._idle({t: c for t, c in self._consumers.items() if t not in selected})
        self._release_held()
        self._resume(selected)
        jobs = self._take_ready(max_records, selected)
        try:
            self._fetch_into(jobs, max_records, timeout, selected)
        except Exception as exc:
            if not jobs:
                raise
            # The jobs accepted before the error are registered as running
            # and their offsets tracked: dropping them would hold their job
            # ids and their partitions' commits for ever. They go out; the
            # error comes with the next fetch.
            self._error = exc
        return jobs

    def _fetch_into(
        self,
        jobs: list[dict[str, Any]],
        max_records: int,
        timeout: float,
        selected: dict[str, Consumer],
    ) -> None:
        """Append up to ``max_records`` jobs in all to ``jobs`` (see ``fetch``)."""
        deadline = time.monotonic() + max(0.0, timeout)
        consumers = self._rotated(selected)
        # With several consumers, a first pass takes what every one of them
        # has already fetched, without waiting: a job type with nothing to do
        # must not delay the others' records by a slice per fetch.
        first_pass = len(consumers) > 1
        while True:
            for job_type, consumer in consumers:
                want = max_records - len(jobs)
                if want <= 0:
                    return
                remaining = deadline - time.monotonic()
                # With one consumer, block on it; with several, take turns.
                wait = max(0.0, remaining if len(consumers) == 1 else min(remaining, _SLICE))
                if jobs or first_pass:
                    wait = 0.0
                messages = self._take(consumer, want, wait)
                for index, message in enumerate(messages):
                    try:
                        job = self._accept(job_type, message)
                    except Exception:
                        # Taken from librdkafka but not handed out: put them
                        # back, or later commits would pass over them.
                        self._rewind(job_type, consumer, messages[index:])
                        raise
                    if job is not None:
                        jobs.append(job)
            first_pass = False
            if jobs or time.monotonic() >= deadline:
                return

    def mark_done(self, job: Mapping[str, Any]) -> None:
        """The job's result reached the engine, or it was dropped or failed for good.

        Its record (and any duplicate held while it ran) becomes committable
        and its ``dedup_id`` enters the dedup window. Any thread.
        """
        with self._lock:
            running = self._pop_running(job)
            for dedup_id in running.dedup_ids:
                self.dedup.add(dedup_id)
            for tp, offset in running.records:
                self._tracker.done(tp, offset)

    def retry_seen(self, job: Mapping[str, Any]) -> bool:
        """Whether a later dispatch of ``job``'s id with fewer retries came in
        while ``job`` was handed out: the engine's retry, the mark of an
        applied retryable fail (``workflow_sdk.fate``). Any thread."""
        retries = job.get("retriesRemaining")
        if not isinstance(retries, int):
            return False
        with self._lock:
            waiting = self._deferred.get(str(job.get("id")), [])
            return any(
                isinstance(other.get("retriesRemaining"), int)
                and other["retriesRemaining"] < retries
                for other in waiting
            )

    def mark_unfinished(self, job: Mapping[str, Any]) -> None:
        """The job's result did not reach the engine (lost report, drain timeout).

        Its offset stays uncommitted, holding back its partition's commit: the
        record is delivered again after a restart or a rebalance. Any thread.
        """
        with self._lock:
            running = self._pop_running(job)
            self._bump(unfinished=1)
        log.warning(
            "job %s: its result did not reach the engine; its record (%s) stays "
            "uncommitted and is delivered again after a restart or rebalance",
            job.get("id"),
            ", ".join(f"{t}[{p}]@{o}" for (t, p), o in running.records) or "no record",
        )

    def give_back(self, job: Mapping[str, Any]) -> None:
        """A job handed out that will not run here after all (no worker serves
        its type any more): neither done nor unfinished. Its records stay
        uncommitted; ``remove_type`` then leaves its group, which delivers
        them to the group's next member. Any thread."""
        with self._lock:
            self._pop_running(job)

    def add_type(self, job_type: str, group: str | None = None) -> None:
        """Consume ``job_type`` too: join ``group`` (default
        ``workflow.workers.<jobType>``). Driver thread.

        :raises KafkaSourceError: the consumer could not be set up.
        """
        if self._closed or job_type in self._consumers:
            return
        self.groups[job_type] = group or group_for(job_type)
        self._subscribe(job_type)
        self.job_types = sorted(self._consumers)

    def remove_type(self, job_type: str) -> int:
        """Stop consuming ``job_type``: commit what is done of it
        (synchronously), then leave its group. Its records not done stay
        uncommitted and the group delivers them to its next member: wait for
        ``held(job_type)`` to be 0 first, or its running jobs may run there
        again. Returns how many of its records were left. Driver thread."""
        consumer = self._consumers.pop(job_type, None)
        if consumer is None:
            return 0
        self.job_types = sorted(self._consumers)
        topic = topic_for(job_type)
        with self._lock:
            ready = self._tracker.committable(in_flight=True)
            keys = {tp for tp in self._tracker.partitions() if tp[0] == topic}
            left = sum(self._tracker.pending(tp) for tp in keys)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items() if t == topic]
        try:
            if offsets:
                self._commit(consumer, offsets, asynchronous=False)
            consumer.close()  # leaves the group
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the Kafka consumer for %s: %s", job_type, exc)
        # Its revoke callback may have forgotten them already.
        with self._lock:
            keys &= set(self._tracker.partitions())
        self._forget(consumer, keys)
        self._paused.pop(job_type, None)
        return left

    def commit(self, *, asynchronous: bool = True) -> int:
        """Commit every partition whose done position moved; returns how many
        (asynchronously: sent; the answers come with a later ``fetch``, and a
        refused one is sent again by the next ``commit``). Driver thread."""
        with self._lock:
            # A synchronous commit does not wait for the answers to earlier
            # asynchronous ones: it commits their positions too.
            ready = self._tracker.committable(in_flight=not asynchronous)
        committed = 0
        for job_type, consumer in self._consumers.items():
            topic = topic_for(job_type)
            offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items() if t == topic]
            if offsets:
                committed += self._commit(consumer, offsets, asynchronous=asynchronous)
        return committed

    def close(self) -> None:
        """Commit what is done (synchronously) and leave the groups. Driver thread.

        Jobs still running are not waited for: drain first (stop fetching,
        let them finish and ``mark_done``), then close.
        """
        if self._closed:
            return
        try:
            self.commit(asynchronous=False)
        finally:
            self._closed = True
            self._close_consumers()

    # -- fetching ----------------------------------------------------------------

    def _rotated(self, selected: dict[str, Consumer]) -> list[tuple[str, Consumer]]:
        # Start each fetch at the next job type so that none starves the others.
        items = list(selected.items())
        self._rotation = (self._rotation + 1) % len(items)
        return items[self._rotation :] + items[: self._rotation]

    def _take(self, consumer: Consumer, want: int, wait: float) -> list[Message]:
        # poll() returns as soon as one record is there; consume(n, 0) then
        # takes what is already queued. consume(n, wait) would wait for all n.
        first = consumer.poll(wait)
        if first is None:
            return []
        if want <= 1:
            return [first]
        try:
            rest = consumer.consume(num_messages=want - 1, timeout=0)
        except Exception as exc:
            # ``first`` is taken: it goes on; the error comes with the next fetch.
            self._error = self._error or exc
            return [first]
        return [first, *rest]

    def _accept(self, job_type: str, message: Message) -> dict[str, Any] | None:
        """A fetched record -> a job to run, or None (dropped, held, an error event)."""
        error = message.error()
        if error is not None:
            self._on_error(job_type, error)
            return None
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return None
        tp = (topic, partition)
        try:
            job = decode_dispatch(message.value(), message.headers())
        except Exception as exc:
            # Not only MalformedDispatch: a payload nested too deep for
            # json.loads raises RecursionError. Whatever the decoder chokes
            # on is a record that can never run; raising here would drop the
            # records fetched with it.
            if not isinstance(exc, MalformedDispatch):
                exc = MalformedDispatch(f"undecodable ({type(exc).__name__}: {exc})")
            log.error(
                "skipping record %s[%d]@%d: %s (it is committed: it can never run)",
                topic,
                partition,
                offset,
                exc,
            )
            with self._lock:
                if self._tracker.track(tp, offset):
                    self._tracker.done(tp, offset)
                self._bump(malformed=1)
            return None
        job[RECORD_KEY] = {"topic": topic, "partition": partition, "offset": offset}
        job_id: str = job["id"]
        dedup_id: str | None = job["dedupId"]
        with self._lock:
            if not self._tracker.track(tp, offset):
                # Already tracked in this assignment: handed out before.
                return None
            if self.dedup.seen(dedup_id):
                self._tracker.done(tp, offset)
                self._bump(duplicates=1)
                log.info(
                    "job %s: dispatch %s finished within the dedup window; record "
                    "%s[%d]@%d skipped",
                    job_id,
                    dedup_id,
                    topic,
                    partition,
                    offset,
                )
                return None
            owner = self._running_dedup.get(dedup_id) if dedup_id else None
            if owner is not None:
                # The same dispatch runs here now (a republish or a redelivery):
                # never twice at once; this record is done when that run is.
                self._running[owner].records.append((tp, offset))
                self._bump(held_while_running=1)
                return None
            if job_id in self._running:
                # Another dispatch of a job that runs here now: the engine's
                # new dispatch after a retryable fail, fetched before the
                # failed run was marked done. It runs once that one is.
                self._deferred.setdefault(job_id, []).append(job)
                self._bump(deferred=1)
                return None
            self._start_running(job, tp, offset)
            held_now = self._hold_back.hold(tp, self._tracker.pending(tp))
        if held_now:
            self._hold(job_type, tp)
        return job

    def _start_running(self, job: dict[str, Any], tp: TopicPartitionKey, offset: int) -> None:
        # Caller holds ``_lock``.
        entry = _Running(records=[(tp, offset)])
        dedup_id = job.get("dedupId")
        if dedup_id:
            entry.dedup_ids.add(dedup_id)
            self._running_dedup[dedup_id] = job["id"]
        self._running[job["id"]] = entry
        self._bump(fetched=1)

    def _take_ready(self, max_records: int, selected: Collection[str]) -> list[dict[str, Any]]:
        """Deferred jobs of ``selected`` types whose earlier run finished, up to ``max_records``."""
        jobs: list[dict[str, Any]] = []
        with self._lock:
            later: deque[dict[str, Any]] = deque()
            while self._ready and len(jobs) < max_records:
                job = self._ready.popleft()
                if job["jobType"] not in selected:
                    later.append(job)
                    continue
                record = job[RECORD_KEY]
                self._start_running(job, (record["topic"], record["partition"]), record["offset"])
                jobs.append(job)
            later.extend(self._ready)
            self._ready = later
        return jobs

    def _pop_running(self, job: Mapping[str, Any]) -> _Running:
        # Caller holds ``_lock``.
        running = self._running.pop(str(job.get("id")), None)
        if running is None:
            # Not handed out by this source (or already marked): its own record only.
            record = job.get(RECORD_KEY)
            running = _Running()
            if isinstance(record, Mapping):
                running.records.append(
                    ((str(record["topic"]), int(record["partition"])), int(record["offset"]))
                )
            dedup_id = job.get("dedupId")
            if isinstance(dedup_id, str) and dedup_id:
                running.dedup_ids.add(dedup_id)
        for dedup_id in running.dedup_ids:
            self._running_dedup.pop(dedup_id, None)
        waiting = self._deferred.get(str(job.get("id")))
        if waiting:
            self._ready.append(waiting.pop(0))
            if not waiting:
                del self._deferred[str(job.get("id"))]
        return running

    def _on_error(self, job_type: str, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            topic = topic_for(job_type)
            if topic not in self._missing_logged:
                self._missing_logged.add(topic)
                log.error(
                    "Kafka topic %s does not exist: the engine does not create topics, "
                    "an operator must (%s)",
                    topic,
                    error.str(),
                )
            return
        log.warning("Kafka consumer for %s: %s", job_type, error.str())

    # -- pausing -------------------------------------------------------------------

    def _idle(self, consumers: dict[str, Consumer]) -> None:
        """No capacity (for these types): pause them, serve the groups, hand nothing out."""
        for job_type, consumer in consumers.items():
            self._pause_assigned(job_type, consumer)
            message = consumer.poll(0)
            if message is not None and message.error() is None:
                # A partition assigned during this very poll is not paused yet:
                # put the record back and pause it.
                self._unread(job_type, consumer, message)
            elif message is not None:
                self._on_error(job_type, message.error())  # type: ignore[arg-type]

    def _pause_assigned(self, job_type: str, consumer: Consumer) -> None:
        paused = self._paused[job_type]
        to_pause = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in paused]
        if to_pause:
            consumer.pause(to_pause)
            paused.update((tp.topic, tp.partition) for tp in to_pause)

    def _unread(self, job_type: str, consumer: Consumer, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = TopicPartition(topic, partition, offset)
        try:
            consumer.seek(tp)
        except KafkaException as exc:
            log.warning("could not put record %s[%d]@%d back: %s", topic, partition, offset, exc)
        consumer.pause([TopicPartition(topic, partition)])
        self._paused[job_type].add((topic, partition))

    def _rewind(self, job_type: str, consumer: Consumer, messages: list[Message]) -> None:
        """Put back records taken and not handed out: each partition's first."""
        first: dict[TopicPartitionKey, Message] = {}
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if message.error() is not None or topic is None or partition is None or offset is None:
                continue
            seen = first.get((topic, partition))
            if seen is None or offset < (seen.offset() or 0):
                first[(topic, partition)] = message
        for message in first.values():
            self._unread(job_type, consumer, message)

    def _resume(self, consumers: dict[str, Consumer]) -> None:
        with self._lock:
            held = self._hold_back.held
        for job_type, consumer in consumers.items():
            paused = self._paused[job_type]
            resumable = [tp for tp in paused if tp not in held]
            if resumable:
                consumer.resume([TopicPartition(t, p) for t, p in resumable])
                paused.difference_update(resumable)

    # -- the pending bound -----------------------------------------------------------

    def _hold(self, job_type: str, tp: TopicPartitionKey) -> None:
        """``tp`` reached the pending bound: pause it (driver thread)."""
        consumer = self._consumers[job_type]
        consumer.pause([TopicPartition(*tp)])
        self._paused[job_type].add(tp)
        with self._lock:
            head = self._tracker.head(tp)
            pending = self._tracker.pending(tp)
            waiting_for = next(
                (
                    job_id
                    for job_id, running in self._running.items()
                    if (tp, head) in running.records
                ),
                None,
            )
        why = (
            f"job {waiting_for} is not finished (running, or its result not yet confirmed "
            "by the engine)"
            if waiting_for is not None
            else "its job was handed back or is not finished"
        )
        log.warning(
            "Kafka partition %s[%d] held back: %d records wait behind offset %s, whose %s; "
            "fetching from it pauses until that record is done (max_pending_offsets = %d)",
            tp[0],
            tp[1],
            pending,
            head,
            why,
            self._hold_back.limit,
        )

    def _release_held(self) -> None:
        """Resume the held partitions whose records moved on (driver thread)."""
        with self._lock:
            if not self._hold_back:
                return
            freed = self._hold_back.release(
                {tp: self._tracker.pending(tp) for tp in self._hold_back.held}
            )
        for topic, partition in freed:
            log.info(
                "Kafka partition %s[%d] no longer held back: fetching from it resumes",
                topic,
                partition,
            )

    # -- commits and rebalances -------------------------------------------------

    def _commit(
        self, consumer: Consumer, offsets: list[TopicPartition], *, asynchronous: bool
    ) -> int:
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            with self._lock:
                self._bump(commit_errors=1)
            log.warning("Kafka offset commit failed (retried with the next commit): %s", exc)
            return 0
        with self._lock:
            for tp in offsets:
                key = (tp.topic, tp.partition)
                if asynchronous:
                    # Sent, not taken: the broker answers later (``_on_commit``)
                    # and may refuse it. Counted as committed here, a refused
                    # commit was never sent again, and a partition with no
                    # record after it kept its old offset for good (found by
                    # the chaos suite: refusals in every rebalance).
                    self._tracker.sending(key, tp.offset)
                elif self._tracker.committed(key, tp.offset):
                    # Counted where the position moves: librdkafka may
                    # also hand this commit's answer to ``_on_commit``.
                    self._bump(commits=1)
        return len(offsets)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's answer to an asynchronous commit (served inside a
        ``poll`` of the consumer that sent it: the driver thread). A refusal
        (``ILLEGAL_GENERATION`` or ``REBALANCE_IN_PROGRESS`` while the group
        rebalances, a coordinator moving or down) leaves the position to
        commit again with the next commit."""
        failed: list[str] = []
        with self._lock:
            for tp in partitions or []:
                key = (tp.topic, tp.partition)
                if error is None and tp.error is None:
                    if self._tracker.committed(key, tp.offset):
                        self._bump(commits=1)
                else:
                    self._tracker.commit_failed(key, tp.offset)
                    failed.append(f"{tp.topic}[{tp.partition}]@{tp.offset}")
            if error is not None and not partitions:
                self._tracker.commits_failed()
            if failed or error is not None:
                self._bump(commit_errors=1)
        if failed or error is not None:
            reasons = {str(e) for e in [error, *(tp.error for tp in partitions or [])] if e}
            log.warning(
                "Kafka offset commit refused for %s (committed again with the next commit): %s",
                ", ".join(failed) or "its partitions",
                "; ".join(sorted(reasons)),
            )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self._bump(assigned=len(partitions))
        log.info("Kafka partitions assigned: %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        with self._lock:
            # Those whose asynchronous commit is unanswered too: the
            # rebalance under way is the likeliest reason for a refusal.
            ready = self._tracker.committable(in_flight=True)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ready.items() if (t, p) in keys]
        if offsets:
            self._commit(consumer, offsets, asynchronous=False)
        log.info("Kafka partitions revoked: %s", _names(partitions))
        self._forget(consumer, keys)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: committing would be refused.
        log.info("Kafka partitions lost (the group moved on without us): %s", _names(partitions))
        self._forget(consumer, {(tp.topic, tp.partition) for tp in partitions})

    def _forget(self, consumer: Consumer, keys: set[TopicPartitionKey]) -> None:
        unfinished = 0
        with self._lock:
            for key in keys:
                unfinished += self._tracker.forget(key)
            self._hold_back.forget(keys)
            self._bump(revoked=len(keys))
            # Waiting dispatches of revoked partitions never started: the new
            # owner runs them.
            self._ready = deque(job for job in self._ready if _record_key(job) not in keys)
            for job_id in list(self._deferred):
                kept = [job for job in self._deferred[job_id] if _record_key(job) not in keys]
                if kept:
                    self._deferred[job_id] = kept
                else:
                    del self._deferred[job_id]
        # Their pauses stay in ``_paused``: librdkafka keeps a partition's
        # pause across its revocation, and a partition assigned again comes
        # back paused. Forgotten here, it was never resumed: its records
        # stayed in Kafka for good while the workers were idle (found by the
        # chaos suite). The next fetch with room for the type resumes it,
        # assigned or not (resuming a partition not assigned only clears
        # the flag).
        if unfinished:
            log.info(
                "Kafka partitions revoked with %d records unfinished: running jobs finish "
                "and report; the new owner may run them again (at least once)",
                unfinished,
            )

    # -- helpers -------------------------------------------------------------------

    def _bump(self, **increments: int) -> None:
        # Caller holds ``_lock``.
        stats = self._stats
        self._stats = replace(
            stats, **{name: getattr(stats, name) + n for name, n in increments.items()}
        )

    def consumer_config(self, job_type: str) -> dict[str, Any]:
        """The librdkafka settings of ``job_type``'s consumer: ours
        (``GROUP_DEFAULTS`` included), then ``extra_config``, which wins."""
        return {**self._config, "group.id": self.groups[job_type], **self._extra_config}

    def _subscribe(self, job_type: str) -> None:
        config = self.consumer_config(job_type)
        consumer: Consumer | None = None
        try:
            consumer = Consumer(config)
            consumer.subscribe(
                [topic_for(job_type)],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except KafkaException as exc:
            if consumer is not None:
                consumer.close()
            raise KafkaSourceError(f"cannot set up a Kafka consumer: {exc}") from exc
        self._consumers[job_type] = consumer
        self._paused[job_type] = set()

    def _close_consumers(self) -> None:
        for job_type, consumer in self._consumers.items():
            try:
                consumer.close()  # leaves the group at once (no session timeout wait)
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the Kafka consumer for %s: %s", job_type, exc)


__all__ = [
    "RECORD_KEY",
    "KafkaJobSource",
    "KafkaSourceError",
    "SourceStats",
    "check_topics",
]
