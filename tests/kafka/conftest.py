"""Kafka tier: a real single-node broker (scripts/kafka) for the whole test session.

The broker's jars are fetched once into the user's cache (Maven Central's
``kafka_2.13``); each session formats a fresh log dir and starts its own
broker on free loopback ports, and stops and reaps it at the end. Without
Java (or Maven for the first fetch) every test of the tier is skipped with a
message saying how to get them.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

if TYPE_CHECKING:
    from process.conftest import SupervisorProcess

ROOT = Path(__file__).resolve().parents[2]


def _load_broker_script() -> ModuleType:
    # scripts/ is not a package: the one broker recipe lives in scripts/kafka.py
    # (also used by hand, the demo and the bench) and is loaded by path.
    spec = importlib.util.spec_from_file_location(
        "rochallor_kafka_script", ROOT / "scripts/kafka.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kafka_script = _load_broker_script()


def _wait_for_metadata(bootstrap: str, timeout: float) -> None:
    """Poll the broker's metadata until it lists itself (deadline-bound)."""
    # Imported here: without the kafka extra the tier skips instead of erroring.
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            if admin.list_topics(timeout=2.0).brokers:
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker {bootstrap} gives no metadata: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker {bootstrap} lists no broker in its metadata")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a fresh broker for this test session."""
    missing = kafka_script.missing_tools()
    if missing:
        pytest.skip(
            f"Kafka tier skipped: {', '.join(missing)} not found; {kafka_script.HOW_TO_GET_JAVA}"
        )
    pytest.importorskip(
        "confluent_kafka", reason="Kafka tier needs the kafka extra: pip install -e '.[dev]'"
    )
    broker = kafka_script.start()
    try:
        _wait_for_metadata(broker.bootstrap, timeout=60.0)
        print(f"\nKafka broker {broker.bootstrap} started in {broker.started_in:.1f} s")
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_engine(kafka_bootstrap: str) -> Iterator[LocalEngine]:
    """A ``LocalEngine(dispatch="kafka")`` publishing to this session's broker."""
    with LocalEngine(dispatch="kafka", brokers=kafka_bootstrap) as engine:
        yield engine


@pytest.fixture
def client(kafka_engine: LocalEngine) -> Iterator[RestEngineClient]:
    """A REST client of ``kafka_engine``, with room for a runner's threads."""
    with RestEngineClient(kafka_engine.url, timeout=5.0, pool_size=8) as c:
        yield c


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and job type names of one test."""
    return uuid.uuid4().hex[:10]


#: Starts a Kafka-mode supervisor for a job type: ``(job_type, handlers
#: template with {job_type}, module name prefix)``.
StartKafkaSupervisor = Callable[[str, str, str], "SupervisorProcess"]


@pytest.fixture
def start_kafka_supervisor_for(
    tmp_path: Path, kafka_engine: LocalEngine, kafka_bootstrap: str, unique: str
) -> Iterator[StartKafkaSupervisor]:
    """Kafka-mode supervisors (``kafka_support.start_kafka_supervisor``) for
    one test, each running the handler template filled in with its job
    type; every one is reaped at the end."""
    # Here, not at the top: it needs the kafka extra (confluent_kafka).
    from .kafka_support import start_kafka_supervisor  # noqa: PLC0415

    started: list[SupervisorProcess] = []

    def start(job_type: str, handlers: str, prefix: str) -> SupervisorProcess:
        source = handlers.format(job_type=job_type)
        name = f"{prefix}_handlers_{unique}"
        process = start_kafka_supervisor(tmp_path, kafka_engine.url, kafka_bootstrap, name, source)
        started.append(process)
        return process

    yield start
    for process in started:
        process.reap()
