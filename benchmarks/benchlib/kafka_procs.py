"""The Kafka comparison's broker, engine and supervisor processes (``kafka_bench``).

A broker from ``scripts/kafka.py`` for the whole run, with the topics of the
benchmark's job types; per batch, a local engine process (publishing its
jobs to the broker in Kafka mode) and the supervisor under
``benchlib.kafka_host``. Every process is stopped and reaped on the way out.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from benchlib.handlers import CPU_JOB, NOOP_JOB
from benchlib.procs import SCRIPTS, Child, SupervisorProcess


def broker_script() -> ModuleType:
    """``scripts/kafka.py`` (not a package: loaded by path, as the Kafka tests do)."""
    name = "rochallor_kafka_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / "kafka.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def unavailable() -> str | None:
    """Why the comparison cannot run on this machine, or None."""
    script = broker_script()
    missing = script.missing_tools()
    if missing:
        return f"{', '.join(missing)} not found; {script.HOW_TO_GET_JAVA}"
    try:
        import confluent_kafka  # noqa: F401, PLC0415
    except ImportError:
        return "confluent-kafka is not installed: pip install -e '.[kafka]' (or '.[dev]')"
    return None


@dataclass
class BrokerSession:
    bootstrap: str
    pid: int
    started_in: float
    partitions: int


def _create_topics(bootstrap: str, partitions: int) -> None:
    # A function of its own: the admin client is gone when it returns (it
    # would otherwise log its lost connection when the broker stops).
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

    from workflow_sdk.kafka.dispatch import topic_for  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 60.0
    while not admin.list_topics(timeout=5.0).brokers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker {bootstrap} gives no metadata")
        time.sleep(0.2)
    topics = [
        NewTopic(topic_for(t), num_partitions=partitions, replication_factor=1)
        for t in (NOOP_JOB, CPU_JOB)
    ]
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result(30)


@contextmanager
def broker_session(partitions: int) -> Iterator[BrokerSession]:
    """A fresh broker with the benchmark's topics; stopped and reaped on the way out."""
    broker = broker_script().start()
    try:
        _create_topics(broker.bootstrap, partitions)
        yield BrokerSession(broker.bootstrap, broker.process.pid, broker.started_in, partitions)
    finally:
        broker.stop()


def start_group_at_end(bootstrap: str, group: str, job_type: str) -> None:
    """Commit the end of every partition of ``job_type``'s topic for ``group``.

    Each batch has a group of its own, and an engine of its own: the records
    earlier batches left in the topic belong to engines that are gone. The
    supervisor's consumers (``auto.offset.reset = earliest``) then start at
    this batch's first record.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition  # noqa: PLC0415

    from workflow_sdk.kafka.dispatch import topic_for  # noqa: PLC0415

    topic = topic_for(job_type)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                partitions = consumer.list_topics(topic, timeout=10.0).topics[topic].partitions
                ends = []
                for partition in partitions:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10.0)
                    ends.append(TopicPartition(topic, partition, high))
                consumer.commit(offsets=ends, asynchronous=False)
                return
            except KafkaException as exc:
                # Right after the topics were created their partitions may
                # have no leader yet ("Not leader for partition").
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot position group {group}: {exc}") from exc
                time.sleep(0.2)
    finally:
        consumer.close()


# -- processes -------------------------------------------------------------------


class EngineProcess(Child):
    """A local engine process; in Kafka mode it publishes every job to the broker."""

    def __init__(self, log_path: Path, brokers: str | None) -> None:
        argv = [sys.executable, "-m", "workflow_sdk.testing", "--port", "0"]
        if brokers:
            argv += ["--dispatch", "kafka", "--brokers", brokers]
        super().__init__(argv, log_path, capture_first_line=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the local engine did not start: {line!r}\n{self.log_tail()}")
        self.url = line


class StampedSupervisor(SupervisorProcess):
    """The supervisor under ``benchlib.kafka_host`` (both dispatch modes)."""

    def __init__(self, config: Path, log_path: Path) -> None:
        argv = [sys.executable, "-m", "benchlib.kafka_host", "run", "-c", str(config)]
        Child.__init__(self, argv, log_path)

    def wait_assigned(self, timeout: float = 60.0) -> None:
        """Until the Kafka consumer logged its partition assignment."""
        deadline = time.monotonic() + timeout
        while "Kafka partitions assigned" not in self.log_path.read_text(errors="replace"):
            if not self.alive():
                raise RuntimeError(f"the supervisor exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Kafka partitions assigned in {timeout} s")
            time.sleep(0.05)


def supervisor_config(
    path: Path, url: str, workers: int, broker: BrokerSession | None, group: str
) -> Path:
    """Defaults everywhere except what a benchmark must set."""
    text = f'[engine]\nurl = "{url}"\ntimeout = 10.0\n'
    if broker is not None:
        text += 'dispatch = "kafka"\n'
        text += f'[kafka]\nbrokers = ["{broker.bootstrap}"]\ngroup = "{group}"\n'
    text += (
        "[supervisor]\n"
        'handlers = ["benchlib.handlers:registry"]\n'
        f"workers = {workers}\n"
        "[logging]\n"
        'level = "INFO"\n'
    )
    path.write_text(text)
    return path
