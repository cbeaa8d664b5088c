"""KafkaJobSource in a consumer group: cooperative rebalancing and a short session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

from workflow_sdk.kafka.consumer import GROUP_DEFAULTS, KafkaJobSource
from workflow_sdk.kafka.dispatch import topic_for

from .kafka_support import create_topics, dispatch, fetch_until

SRC = Path(__file__).resolve().parents[2] / "src"

#: A process holding a KafkaJobSource: prints "ready N" once N partitions are
#: assigned to it, then serves the group until it is killed.
HOLDER = """
import sys, time
from workflow_sdk.kafka.consumer import KafkaJobSource
source = KafkaJobSource(sys.argv[1], [sys.argv[2]])
said = False
while True:
    source.fetch(0, timeout=0.1)
    stats = source.stats
    if not said and stats.assigned - stats.revoked > 0:
        print("ready", stats.assigned - stats.revoked, flush=True)
        said = True
"""


def _held(source: KafkaJobSource) -> int:
    stats = source.stats
    return stats.assigned - stats.revoked


def _serve_until(sources: list[KafkaJobSource], done, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for source in sources:
            source.fetch(0, timeout=0.05)
        if done():
            return True
    return False


def test_the_group_defaults_are_cooperative_with_a_short_session_and_can_be_overridden(
    kafka_bootstrap: str, unique: str
) -> None:
    job_type = f"defaults-{unique}"
    create_topics(kafka_bootstrap, [job_type])
    plain = KafkaJobSource(kafka_bootstrap, [job_type])
    mine = KafkaJobSource(
        kafka_bootstrap,
        [job_type],
        extra_config={"partition.assignment.strategy": "range", "session.timeout.ms": 45000},
    )
    try:
        config = plain.consumer_config(job_type)
        assert config["partition.assignment.strategy"] == "cooperative-sticky"
        assert config["session.timeout.ms"] <= 15000
        assert config["heartbeat.interval.ms"] * 3 <= config["session.timeout.ms"]
        assert {k: config[k] for k in GROUP_DEFAULTS} == GROUP_DEFAULTS
        overridden = mine.consumer_config(job_type)
        assert overridden["partition.assignment.strategy"] == "range"
        assert overridden["session.timeout.ms"] == 45000
    finally:
        plain.close()
        mine.close()


def test_a_member_joining_moves_only_the_partitions_that_change_hands(
    kafka_bootstrap: str, unique: str
) -> None:
    """Eager rebalancing revoked all four partitions of the first member when
    the second joined (every member stops); cooperative revokes only the two
    that move."""
    job_type = f"coop-{unique}"
    create_topics(kafka_bootstrap, [job_type], partitions=4)
    first = KafkaJobSource(kafka_bootstrap, [job_type])
    second: KafkaJobSource | None = None
    try:
        assert _serve_until([first], lambda: _held(first) == 4, 60.0)
        second = KafkaJobSource(kafka_bootstrap, [job_type])
        both = [first, second]
        assert _serve_until(both, lambda: _held(first) == 2 and _held(second) == 2, 60.0), (
            first.stats,
            second.stats,
        )
        assert first.stats.revoked == 2
        assert first.stats.assigned == 4
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_killed_member_s_partitions_move_within_the_session_timeout(
    kafka_bootstrap: str, unique: str
) -> None:
    """A supervisor killed with partitions assigned (no leave) stalled them
    for librdkafka's 45 s session timeout; now about 10 s plus a rebalance.
    The bound asserted (30 s) is the configuration's, not a speed."""
    job_type = f"dead-{unique}"
    create_topics(kafka_bootstrap, [job_type], partitions=2)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, kafka_bootstrap, job_type],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    survivor: KafkaJobSource | None = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().startswith("ready 2")
        survivor = KafkaJobSource(kafka_bootstrap, [job_type])
        # It joins; the holder keeps what it has or gives one up.
        assert _serve_until([survivor], lambda: survivor.stats.assigned >= 0, 1.0) is True
        killed = time.monotonic()
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
        assert _serve_until([survivor], lambda: _held(survivor) == 2, 30.0), survivor.stats
        print(f"partitions of the killed member moved after {time.monotonic() - killed:.1f} s")
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
        if survivor is not None:
            survivor.close()


def _publish_to(bootstrap: str, job_type: str, partition: int, job_ids: list[str]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for job_id in job_ids:
        value, headers = dispatch(job_type, job_id, f"d-{job_id}")
        producer.produce(topic_for(job_type), value=value, headers=headers, partition=partition)
    assert producer.flush(30) == 0


def test_a_partition_revoked_while_paused_is_fetched_again_when_it_comes_back(
    kafka_bootstrap: str, unique: str
) -> None:
    """Pins (found by the full chaos run, Kafka mode): librdkafka keeps a
    partition's pause across its revocation and re-assignment, while the
    source forgot it was paused when it was revoked. A partition paused (no
    capacity), revoked (a member joined), then assigned back (it left) while
    the source fetched with capacity was never resumed: its records stayed in
    Kafka for good, its workers idle (38 instances stuck, six partitions'
    offsets behind). Only a ``fetch(0)`` repaired it, and a supervisor with
    idle workers never makes one."""
    job_type = f"repause-{unique}"
    create_topics(kafka_bootstrap, [job_type], partitions=2)
    first = KafkaJobSource(kafka_bootstrap, [job_type])
    second: KafkaJobSource | None = None
    try:
        # No capacity: both partitions assigned and paused.
        assert _serve_until([first], lambda: _held(first) == 2, 60.0), first.stats
        second = KafkaJobSource(kafka_bootstrap, [job_type])
        assert _serve_until(
            [first, second], lambda: _held(first) == 1 and _held(second) == 1, 60.0
        ), (first.stats, second.stats)
        second.close()
        second = None
        # The partition comes back while ``first`` fetches with capacity (its
        # workers are idle): never a fetch(0) again.
        deadline = time.monotonic() + 60.0
        while _held(first) < 2 and time.monotonic() < deadline:
            assert first.fetch(5, timeout=0.1) == []
        assert _held(first) == 2, first.stats
        for partition in (0, 1):
            _publish_to(
                kafka_bootstrap, job_type, partition, [f"p{partition}-{n}" for n in range(2)]
            )
        jobs = fetch_until(first, 4, timeout=30.0)
        assert sorted(job["id"] for job in jobs) == ["p0-0", "p0-1", "p1-0", "p1-1"]
    finally:
        first.close()
        if second is not None:
            second.close()
