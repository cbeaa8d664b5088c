"""The supervisor in Kafka mode across a SIGHUP that changes its job types.

A real broker, a real LocalEngine, a real supervisor: the consumers follow
the job types the workers serve (a new type's group is joined, a removed
type's group is left once its jobs in flight are done and committed).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from process.conftest import SupervisorProcess, wait_for
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.testing import LocalEngine

from .kafka_support import create_topics, drain_nothing, fetch_until, service_flow

pytestmark = pytest.mark.slow

HANDLERS = """
import os
import time
from pathlib import Path

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()
RUNS = Path(os.environ["KAFKA_TEST_RUNS"])


def work(job):
    # One line when it starts and one when it ends, in a file per process.
    with (RUNS / f"{{os.getpid()}}.txt").open("a") as out:
        out.write("start:" + job["id"] + "\\n")
    time.sleep(float(job["variables"].get("seconds", 0.005)))
    with (RUNS / f"{{os.getpid()}}.txt").open("a") as out:
        out.write("end:" + job["id"] + "\\n")
    return {{"done": True}}


for job_type in {types!r}:
    registry.register(job_type, work)
"""


def runs(runs_dir: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in runs_dir.glob("*.txt"):
        counts.update(path.read_text().split())
    return counts


def group_members(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group], request_timeout=10).values()
    return len(future.result(15).members)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[list[SupervisorProcess]]:
    started: list[SupervisorProcess] = []
    yield started
    for process in started:
        process.reap()


def test_a_sighup_that_changes_the_job_types_joins_the_new_and_leaves_the_removed(
    kafka_engine: LocalEngine,
    client: RestEngineClient,
    supervisor: list[SupervisorProcess],
    tmp_path: Path,
    *,
    kafka_bootstrap: str,
    unique: str,
) -> None:
    """Pins: the handlers serve {keep, old}; a job of ``old`` runs for a
    while; the configuration switches to handlers serving {keep, new} and
    SIGHUP replaces the workers. Before the fix the consumers stayed those
    of the first worker's types: the job of ``new`` was never consumed (and
    a record of ``old`` would have been claimed with no worker to take it).
    Now ``new``'s group is joined and its job runs; ``old``'s group is left
    once its running job's result is in and committed (it is not run again
    by the group's next member), and a later ``old`` record goes to that
    next member, untouched by this supervisor."""
    keep, old, new = f"keep-{unique}", f"old-{unique}", f"new-{unique}"
    create_topics(kafka_bootstrap, [keep, old, new])
    for job_type in (keep, old, new):
        client.upload_definition(service_flow(f"f-{job_type}", job_type))
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (tmp_path / f"types_v1_{unique}.py").write_text(HANDLERS.format(types=[keep, old]))
    (tmp_path / f"types_v2_{unique}.py").write_text(HANDLERS.format(types=[keep, new]))
    config = tmp_path / "supervisor.toml"

    def write_config(module: str) -> None:
        config.write_text(
            f'[engine]\nurl = "{kafka_engine.url}"\ntimeout = 5\ndispatch = "kafka"\n'
            f'[supervisor]\nhandlers = ["{module}_{unique}:registry"]\n'
            f"workers = 2\npoll_interval = 0.1\ngraceful_timeout = 20\n"
            f'[kafka]\nbrokers = ["{kafka_bootstrap}"]\ngroup = "sv-{unique}.{{job_type}}"\n'
        )

    write_config("types_v1")
    env = dict(os.environ, KAFKA_TEST_RUNS=str(runs_dir))
    env.pop("ROCHALLOR_ENGINE_URL", None)
    sv = SupervisorProcess(config, tmp_path, env)
    supervisor.append(sv)

    long_old = client.start_instance(f"f-{old}", {"seconds": 4})["id"]
    (long_job,) = [j["id"] for j in kafka_engine.jobs(instance_id=long_old)]
    wait_for(lambda: runs(runs_dir)[f"start:{long_job}"], 60, "the long job of the old type")

    write_config("types_v2")
    sv.signal(signal.SIGHUP)
    fresh = client.start_instance(f"f-{new}", {"seconds": 0.01})["id"]
    kept = client.start_instance(f"f-{keep}", {"seconds": 0.01})["id"]
    kafka_engine.wait_for_instances([fresh, kept], "COMPLETED", timeout=60)
    kafka_engine.wait_for_instance(long_old, "COMPLETED", timeout=60)

    old_group = f"sv-{unique}.{old}"
    wait_for(lambda: group_members(kafka_bootstrap, old_group) == 0, 30, "old's group left")
    assert group_members(kafka_bootstrap, f"sv-{unique}.{new}") == 1
    later_old = client.start_instance(f"f-{old}", {"seconds": 0.01})["id"]
    (later_job,) = [j["id"] for j in kafka_engine.jobs(instance_id=later_old)]
    # The group's next member: the later record, not the long job (committed).
    member = KafkaJobSource(kafka_bootstrap, [old], group={old: old_group})
    try:
        assert [job["id"] for job in fetch_until(member, 1)] == [later_job]
        assert drain_nothing(member, 2.0) == []
    finally:
        member.close()

    sv.signal(signal.SIGTERM)
    assert sv.wait(40) == 0
    counts = runs(runs_dir)
    assert counts[f"start:{long_job}"] == counts[f"end:{long_job}"] == 1
    assert f"start:{later_job}" not in counts
    log = sv.log()
    assert f"workflow.jobs.{new}" in log
    assert f"left the group {old_group}" in log
