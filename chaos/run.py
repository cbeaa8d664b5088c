"""One chaos run: set up, drive the workload and the faults, wait for quiet, audit.

``run_mode`` runs one dispatch mode (poll or kafka) end to end and returns
its figures; ``main`` parses the command line, runs the modes asked for and
prints (``report``) what was injected and what was found. Exit status: 0 when
every must-be-zero figure is zero, 1 when one is not, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from chaos import audit, report, schedule, toxiproxy, workload
from chaos.cluster import ROOT, Supervisor, known_keys, sdk_env, wait_until
from chaos.handlers import RETRIES
from chaos.inject import Injector, Target

log = logging.getLogger("chaos")
#: librdkafka's lines of the chaos process's own clients (the engine's
#: publisher, the audit): the broker restarts on purpose; shown with -v only.
KAFKA_LOG = logging.getLogger("chaos.kafka")

QUICK_SEED = 20261203
#: A parent's RSS may grow this much past its first 20 s (the stated bound).
RSS_BOUND = 64 * 1024 * 1024
RSS_WARMUP = 20.0
RSS_MIN_LIFE = 40.0


@dataclass
class Settings:
    seed: int
    jobs: int
    duration: float
    per_kind: int
    dispatch: str
    engine_url: str | None
    sdk_src: Path | None
    workdir: Path
    lease: float
    kafka_config: dict[str, str] = field(default_factory=dict)
    supervisors: int = 2
    workers: int = 3
    network: bool = True


@dataclass
class ModeResult:
    dispatch: str
    seed: int
    jobs: int = 0
    instances: int = 0
    runs: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    injections: list[audit.Injection] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    skipped_kinds: dict[str, str] = field(default_factory=dict)
    classes: list[audit.ClassFigures] = field(default_factory=list)
    marks: dict[str, dict[str, int]] = field(default_factory=dict)
    zero: dict[str, list[str]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _load_kafka_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rochallor_kafka_script", ROOT / "scripts/kafka.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class EngineView:
    """What the audit asks the engine: the local one in process, or a real one over REST."""

    def __init__(self, engine: Any, url: str) -> None:
        from workflow_sdk.client.rest import RestEngineClient  # noqa: PLC0415

        self.local = engine
        self.client = RestEngineClient(url, timeout=30.0, pool_size=4)

    def statuses(self, ids: list[str]) -> dict[str, str]:
        if self.local is not None:
            return {i["id"]: i["status"] for i in self.local.instances()}
        found = {}
        for instance_id in ids:
            try:
                found[instance_id] = self.client.get_instance(instance_id)["status"]
            except Exception:
                continue
        return found

    def job_status(
        self, runs: dict[str, list[audit.Run]]
    ) -> tuple[dict[str, str], dict[str, bool]]:
        """(job -> status, job -> its step ended without it: timer or cancel)."""
        status: dict[str, str] = {}
        elsewhere: dict[str, bool] = {}
        if self.local is not None:
            for job in self.local.jobs():
                status[job["id"]] = job["status"]
                elsewhere[job["id"]] = job["status"] == "CANCELLED"
            for inst in self.local.instances():
                if inst["status"] == "CANCELLED":
                    for job in self.local.jobs(instance_id=inst["id"]):
                        elsewhere[job["id"]] = True
            return status, elsewhere
        histories: dict[str, list[dict[str, Any]]] = {}
        instance_status: dict[str, str] = {}
        for job_id, job_runs in runs.items():
            first = job_runs[0]
            if first.instance_id not in histories:
                histories[first.instance_id] = self.client.get_instance_history(first.instance_id)
                instance_status[first.instance_id] = self.client.get_instance(first.instance_id)[
                    "status"
                ]
            item = next(
                (h for h in histories[first.instance_id] if h.get("id") == first.step_execution),
                None,
            )
            step = (item or {}).get("status", "?")
            reason = (item or {}).get("failureReason") or ""
            status[job_id] = step
            elsewhere[job_id] = (
                instance_status[first.instance_id] == "CANCELLED" or "boundary timer" in reason
            )
        return status, elsewhere

    def close(self) -> None:
        self.client.close()


class Monitor(threading.Thread):
    """Every second: each instance's status (a finished one must not change)
    and each supervisor parent's RSS."""

    def __init__(self, view: EngineView, ids: list[str], sups: list[Supervisor]) -> None:
        super().__init__(name="chaos-monitor", daemon=True)
        self.view = view
        self.ids = ids
        self.sups = sups
        self.final: dict[str, str] = {}
        self.changed: list[str] = []
        self.halt = threading.Event()

    def look(self) -> None:
        for instance_id, status in self.view.statuses(list(self.ids)).items():
            first = self.final.get(instance_id)
            if first is None:
                if status in ("COMPLETED", "FAILED", "CANCELLED"):
                    self.final[instance_id] = status
            elif status != first:
                self.changed.append(f"{instance_id}: {first} then {status}")
                self.final[instance_id] = status
        for sup in list(self.sups):
            sup.keep_running()
            sup.sample_rss()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            try:
                self.look()
            except Exception:
                log.debug("monitor look failed", exc_info=True)


def _supervisor_sections(
    settings: Settings, engine_url: str, dispatch: str, brokers: str | None, name: str
) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "engine": {
            "url": engine_url,
            "timeout": 2.0,
            "dispatch": dispatch,
            # The local engine has no 30 s handler timeout: in poll mode a
            # report's fate is known within its longest injected delay. In
            # Kafka mode the window is also the wait for a retry's dispatch
            # to show (a broker restart delays it): the default.
            "in_flight_window": 6.0 if settings.engine_url is None and dispatch == "poll" else 35.0,
        },
        "supervisor": {
            "handlers": ["chaos.handlers:registry"],
            "workers": settings.workers,
            "poll_interval": 0.1,
            "graceful_timeout": 8.0,
            "job_timeout": 6.0,
            "report_deadline": 600.0,
            "max_jobs_per_child": 40,
            "max_memory_hard_mb": 400.0,
            "memory_check_interval": 0.3,
            "stale_check_interval": 1.0,
            "boot_timeout": 60.0,
        },
        "logging": {"level": "INFO", "format": "text"},
    }
    if brokers is not None:
        sections["kafka"] = {"brokers": [brokers]}
        sections["kafka.config"] = {"client.id": name, **settings.kafka_config}
    return sections


def run_mode(settings: Settings, dispatch: str, proxy: toxiproxy.Toxiproxy | None) -> ModeResult:
    from workflow_sdk.client.rest import RestEngineClient  # noqa: PLC0415
    from workflow_sdk.testing import LocalEngine  # noqa: PLC0415

    began = time.monotonic()
    seed = settings.seed + (0 if dispatch == "poll" else 1)
    result = ModeResult(dispatch, seed)
    workdir = settings.workdir / dispatch
    runlog = workdir / "runlog"
    runlog.mkdir(parents=True)
    rng = random.Random(seed)
    names = [f"s{i + 1}" for i in range(settings.supervisors)]
    kinds, skipped = schedule.kinds_for(
        dispatch, local_engine=settings.engine_url is None, network=proxy is not None
    )
    for kind in skipped:
        why = "local engine only" if kind in schedule.LOCAL_ONLY else toxiproxy.HOW_TO_GET_GO
        result.skipped_kinds[kind] = why
    faults = schedule.draw(
        seed, kinds, settings.per_kind, settings.duration, targets=names, lease=settings.lease
    )
    result.faults = [f.as_json() for f in faults]

    broker = None
    engine = None
    sups: dict[str, Supervisor] = {}
    view: EngineView | None = None
    monitor: Monitor | None = None
    injector: Injector | None = None
    joiners: list[Supervisor] = []
    try:
        brokers_for: dict[str, str] = {}
        broker_proxy: dict[str, str] = {}
        if dispatch == "kafka":
            kafka_script = _load_kafka_script()
            advertised = {f"SUP{n.upper()}": toxiproxy.free_port() for n in names} if proxy else {}
            broker = kafka_script.start(advertised=advertised)
            _create_topics(broker.bootstrap, workload.JOB_TYPES, partitions=4)
            for n in names:
                listener = f"SUP{n.upper()}"
                if proxy is not None:
                    listen_port, advert_port = broker.listeners[listener]
                    proxy.create(f"broker_{dispatch}_{n}", f"127.0.0.1:{listen_port}", advert_port)
                    broker_proxy[n] = f"broker_{dispatch}_{n}"
                    brokers_for[n] = f"127.0.0.1:{advert_port}"
                else:
                    brokers_for[n] = broker.bootstrap
        if settings.engine_url is None:
            engine = LocalEngine(
                lease_seconds=settings.lease,
                dispatch=dispatch,
                brokers=broker.bootstrap if broker is not None else None,
                kafka_config={"logger": KAFKA_LOG} if broker is not None else None,
            ).start()
            engine_url = engine.url
        else:
            engine_url = settings.engine_url
        view = EngineView(engine, engine_url)
        engine_proxy: dict[str, str] = {}
        urls: dict[str, str] = {}
        host_port = engine_url.split("://", 1)[1].rstrip("/")
        for n in names:
            if proxy is not None:
                port = proxy.create(f"engine_{dispatch}_{n}", host_port)
                engine_proxy[n] = f"engine_{dispatch}_{n}"
                urls[n] = f"http://127.0.0.1:{port}"
            else:
                urls[n] = engine_url
        env = sdk_env(settings.sdk_src)
        env["CHAOS_RUNLOG_DIR"] = str(runlog)
        known = known_keys(settings.sdk_src)
        result.info["sdk"] = str(settings.sdk_src or "this checkout")
        for n in names:
            home = workdir / n
            home.mkdir()
            sections = _supervisor_sections(settings, urls[n], dispatch, brokers_for.get(n), n)
            sups[n] = Supervisor(n, home, env, sections, known)
            sups[n].start()

        def start_joiner() -> Supervisor:
            name = f"j{len(joiners) + 1}"
            home = workdir / name
            home.mkdir()
            sections = _supervisor_sections(
                settings, engine_url, dispatch, broker.bootstrap if broker else None, name
            )
            joiner = Supervisor(name, home, env, sections, known)
            joiners.append(joiner)
            joiner.start()
            return joiner

        for sup in sups.values():
            if not wait_until(lambda s=sup: s.workers() or not s.alive, 60.0, 0.1) or not sup.alive:
                raise RuntimeError(
                    f"supervisor {sup.name} did not start:\n{sup.log_text()[-3000:]}"
                )

        if broker is not None:
            # The supervisors' first joins are set-up, not faults: the workload
            # starts once every group has them all (else a job fetched before
            # the second join may run again after it, and no fault explains it).
            _wait_groups_stable(broker.bootstrap, len(sups), 90.0)

        client = RestEngineClient(engine_url, timeout=30.0, pool_size=4)
        for definition in workload.DEFINITIONS:
            client.upload_definition(definition)
        planned = workload.plan(workload.instances_for_jobs(settings.jobs), rng)
        result.instances = len(planned)
        ids: list[str] = []
        monitor = Monitor(view, ids, [*sups.values()])
        monitor.start()

        target = Target(
            supervisors=sups,
            runlog=runlog,
            engine=engine,
            proxy=proxy,
            engine_proxy=engine_proxy,
            broker_proxy=broker_proxy,
            broker=broker,
            start_joiner=start_joiner if dispatch == "kafka" else None,
            graceful=8.0,
        )
        injector = Injector(target, faults, seed)
        t0 = time.monotonic()
        fault_thread = threading.Thread(target=injector.run, args=(t0,), name="chaos-faults")
        fault_thread.start()
        _feed(client, planned, ids, t0, settings.duration * 0.85)
        fault_thread.join()
        injector.join(180.0)
        log.info("%s: workload and faults done; waiting for quiet", dispatch)

        # Quiet: every instance finished, no run for a while, no job claimed.
        def settled() -> bool:
            statuses = view.statuses(ids) if view else {}
            done = all(statuses.get(i) in ("COMPLETED", "FAILED", "CANCELLED") for i in ids)
            return done

        wait_until(settled, 240.0, 0.5)
        wait_until(lambda: _quiet_for(runlog, 3.0), 60.0, 0.5)
        if engine is not None:
            wait_until(lambda: not engine.jobs("LOCKED"), 60.0, 0.2)
        monitor.look()

        if broker is not None:
            wait_until(lambda: not _offsets_behind(broker.bootstrap), 60.0, 1.0)
            result.zero["kafka offsets not at the end"] = _offsets_behind(broker.bootstrap)

        for sup in [*sups.values(), *joiners]:
            sup.stop(30.0)
        monitor.halt.set()
        monitor.look()

        # -- audit -----------------------------------------------------------------
        runs = audit.read_runlog(runlog)
        jobs = audit.by_job(runs)
        result.runs = len(runs)
        result.jobs = len(jobs)
        by_instance = {p.instance_id: p for p in planned}
        planned_runs = {}
        for job_id, job_runs in jobs.items():
            first = job_runs[0]
            plan = by_instance.get(first.instance_id)
            planned_runs[job_id] = (
                workload.planned_runs(plan, first.job_type, first.retries) if plan else 1
            )
        attribution = audit.attribute(
            jobs, planned_runs, injector.injections, tail=2.0 + settings.lease
        )
        result.injections = injector.injections
        result.skipped = injector.skipped
        result.classes = audit.per_class(
            injector.injections, audit.KAFKA_TWICE if dispatch == "kafka" else None
        )
        result.marks = _marks(planned, jobs)

        statuses = view.statuses(ids)
        wrong = []
        first_attempts_done = {
            r.instance_id
            for r in runs
            if r.job_type == "chaos.a" and r.retries >= RETRIES and r.end is not None
        }
        for plan in planned:
            got = statuses.get(plan.instance_id, "?")
            want = plan.expected_status(plan.instance_id in first_attempts_done)
            if got != want:
                wrong.append(
                    f"{plan.instance_id} ({plan.definition}, {plan.mode}): {got}, expected {want}"
                )
        result.zero["instance not in its expected final state"] = wrong
        result.zero["instance changed state after it finished"] = monitor.changed
        job_status, elsewhere = view.job_status(jobs)
        result.zero["completion lost"] = audit.lost_completions(jobs, job_status, elsewhere)
        if engine is not None:
            counters = engine.counters
            result.zero["overlapping completes"] = (
                [f"{counters['overlapping_completes']} at the engine"]
                if counters["overlapping_completes"]
                else []
            )
            result.info["overlapping_fails"] = counters["overlapping_fails"]
            result.info["engine_counters"] = {
                k: counters[k]
                for k in (
                    "jobs_delivered",
                    "complete_calls",
                    "fail_calls",
                    "leases_expired",
                    "errors_injected",
                )
            }
        else:
            result.info["overlapping completes"] = "not counted by a real engine"
        over = [
            f"{c.fault_class}: {c.seen} extra runs, {c.allowed} allowed"
            for c in result.classes
            if c.seen > c.allowed
        ]
        result.zero["job run more often than the faults explain"] = [
            f"job {job_id}: extra run at {time.strftime('%H:%M:%S', time.localtime(t))} "
            "explained by no fault"
            for job_id, t in attribution.unexplained
        ] + over
        result.info["extra_runs"] = sum(attribution.extra.values())
        leftovers = [line for sup in [*sups.values(), *joiners] for line in sup.leftovers]
        result.zero["worker or fork server left running"] = leftovers
        growth = {}
        for sup in sups.values():
            growth.update(audit.rss_growth(sup.rss, RSS_WARMUP, RSS_MIN_LIFE))
        result.zero["parent RSS grown past 64 MiB"] = [
            f"parent {pid}: +{g / 2**20:.1f} MiB" for pid, g in growth.items() if g > RSS_BOUND
        ]
        result.info["rss_growth_mib"] = {str(pid): round(g / 2**20, 1) for pid, g in growth.items()}
        exits = [
            f"{s.name} {line}" for s in [*sups.values(), *joiners] for line in s.unexpected_exits
        ]
        result.info["supervisor exits nobody asked for (restarted as systemd would)"] = exits
        result.info["tracebacks_in_logs"] = sum(
            s.log_text().count("Traceback") for s in [*sups.values(), *joiners]
        )
        client.close()
        return result
    finally:
        if injector is not None:
            injector.stop()
        if monitor is not None:
            monitor.halt.set()
        for sup in [*sups.values(), *joiners]:
            sup.reap_all()
        if view is not None:
            view.close()
        if engine is not None:
            engine.stop()
        if broker is not None:
            broker.stop()
        result.seconds = time.monotonic() - began


def _marks(
    planned: list[workload.PlannedInstance], jobs: dict[str, list[audit.Run]]
) -> dict[str, dict[str, int]]:
    """Per handler mark: instances, runs of the marked jobs."""
    marks: dict[str, dict[str, int]] = {}
    marked_runs: dict[str, int] = {}
    for job_runs in jobs.values():
        first = job_runs[0]
        marked_runs.setdefault(first.instance_id, 0)
        if first.job_type == "chaos.a":
            marked_runs[first.instance_id] += len(job_runs)
    for plan in planned:
        if plan.mode == "ok" and not plan.cancel:
            continue
        name = "cancel" if plan.cancel else plan.mode
        entry = marks.setdefault(name, {"instances": 0, "runs_planned": 0, "runs_seen": 0})
        entry["instances"] += 1
        entry["runs_planned"] += workload.MODES[plan.mode][1]
        entry["runs_seen"] += marked_runs.get(plan.instance_id, 0)
    return marks


def _feed(
    client: Any, planned: list[workload.PlannedInstance], ids: list[str], t0: float, span: float
) -> None:
    """Start the instances evenly over ``span`` seconds; cancel the marked
    ones a second after they start."""
    cancels: list[tuple[float, workload.PlannedInstance]] = []
    step = span / max(1, len(planned))
    for plan in planned:
        due = t0 + plan.index * step
        while cancels and cancels[0][0] <= time.monotonic():
            _cancel(client, cancels.pop(0)[1])
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        summary = client.start_instance(plan.definition, dict(plan.variables))
        plan.instance_id = summary["id"]
        plan.started_at = time.time()
        ids.append(plan.instance_id)
        if plan.cancel:
            cancels.append((time.monotonic() + 1.0, plan))
    for due, plan in cancels:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        _cancel(client, plan)


def _cancel(client: Any, plan: workload.PlannedInstance) -> None:
    try:
        client.cancel_instance(plan.instance_id, "chaos: cancelled mid-job")
        plan.cancelled = True
    except Exception:
        plan.cancelled = False


def _quiet_for(runlog: Path, seconds: float) -> bool:
    newest = max((p.stat().st_mtime for p in runlog.glob("*.log")), default=0.0)
    return time.time() - newest >= seconds


def _create_topics(bootstrap: str, job_types: tuple[str, ...], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

    from workflow_sdk.kafka.dispatch import topic_for  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": KAFKA_LOG})
    topics = [
        NewTopic(topic_for(t), num_partitions=partitions, replication_factor=1) for t in job_types
    ]
    for future in admin.create_topics(topics, operation_timeout=30).values():
        future.result(30)


def _wait_groups_stable(bootstrap: str, members: int, timeout: float) -> None:
    from confluent_kafka import ConsumerGroupState  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from workflow_sdk.kafka.dispatch import group_for  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": KAFKA_LOG})
    groups = [group_for(t) for t in workload.JOB_TYPES]

    def stable() -> bool:
        try:
            for future in admin.describe_consumer_groups(groups).values():
                description = future.result(10)
                if description.state != ConsumerGroupState.STABLE:
                    return False
                if len(description.members) < members:
                    return False
        except Exception:
            return False
        return True

    if not wait_until(stable, timeout, 0.5):
        log.warning(
            "the consumer groups were not stable with %d members in %.0f s", members, timeout
        )


def _offsets_behind(bootstrap: str) -> list[str]:
    """Partitions whose group's committed offset is not the end of the partition."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    from workflow_sdk.kafka.dispatch import group_for, topic_for  # noqa: PLC0415

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": KAFKA_LOG})
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "chaos-probe",
            "enable.auto.commit": False,
            "logger": KAFKA_LOG,
        }
    )
    behind = []
    owners: dict[tuple[str, int], str] = {}
    try:
        groups = [group_for(t) for t in workload.JOB_TYPES]
        for future in admin.describe_consumer_groups(groups).values():
            try:
                description = future.result(20)
            except Exception:
                continue
            for member in description.members:
                for tp in member.assignment.topic_partitions:
                    owners[(tp.topic, tp.partition)] = member.client_id
        for job_type in workload.JOB_TYPES:
            topic = topic_for(job_type)
            meta = probe.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
            request = ConsumerGroupTopicPartitions(group_for(job_type), parts)
            answer = admin.list_consumer_group_offsets([request])[group_for(job_type)].result(20)
            committed = {tp.partition: tp.offset for tp in answer.topic_partitions}
            for tp in parts:
                _, high = probe.get_watermark_offsets(tp, timeout=10)
                got = committed.get(tp.partition, -1)
                if high > 0 and got != high:
                    owner = owners.get((topic, tp.partition), "nobody")
                    behind.append(
                        f"{topic}[{tp.partition}]: committed {got}, end {high}, held by {owner}"
                    )
    finally:
        probe.close()
    return behind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="A seeded, replayable chaos run against real supervisors, a local "
        "(or real) engine, toxiproxy and Kafka; prints what it injected and what it found.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fixed seed, a few hundred jobs, poll mode, < 3 min"
    )
    parser.add_argument("--seed", type=int, help="the run's seed (default: drawn and printed)")
    parser.add_argument(
        "--jobs", type=int, help="jobs per dispatch mode (default 2200 over the modes)"
    )
    parser.add_argument("--duration", type=float, help="seconds of workload and faults per mode")
    parser.add_argument(
        "--dispatch", choices=("poll", "kafka", "both"), help="default: both (--quick: poll)"
    )
    parser.add_argument(
        "--engine-url", help="run against this engine (local-only faults are skipped)"
    )
    parser.add_argument(
        "--lease", type=float, help="the engine's lease in seconds (local default 8, real 30)"
    )
    parser.add_argument(
        "--sdk-src", type=Path, help="the src/ of the SDK the supervisors run (another checkout)"
    )
    parser.add_argument(
        "--json", type=Path, help="where to write the JSON (default chaos-results.json)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, run log)"
    )
    parser.add_argument("--no-network", action="store_true", help="no toxiproxy faults")
    parser.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [kafka.config] setting for the supervisors (repeatable), e.g. "
        "partition.assignment.strategy=range",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if os.environ.get("CHAOS_VERBOSE") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    # A stop from outside (CI's timeout, Ctrl-C) still reaps every process
    # the run started: the finally blocks run on KeyboardInterrupt.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if not os.environ.get("CHAOS_VERBOSE"):
        KAFKA_LOG.setLevel(logging.CRITICAL)
    dispatch = args.dispatch or ("poll" if args.quick else "both")
    modes = ["poll", "kafka"] if dispatch == "both" else [dispatch]
    seed = (
        args.seed
        if args.seed is not None
        else (QUICK_SEED if args.quick else random.SystemRandom().randrange(10**9))
    )
    total_jobs = args.jobs * len(modes) if args.jobs else (300 if args.quick else 2200)
    duration = args.duration or (70.0 if args.quick else 240.0)
    lease = args.lease or (8.0 if args.engine_url is None else 30.0)
    workdir = Path(tempfile.mkdtemp(prefix="rochallor-chaos-"))
    output = args.json or Path("chaos-results.json")
    print(
        f"chaos: seed {seed}, {total_jobs} jobs, dispatch {dispatch}, work dir {workdir}",
        flush=True,
    )
    if args.sdk_src:
        print(f"chaos: supervisors run the SDK in {args.sdk_src}", flush=True)
    proxy = None
    network = not args.no_network
    if network:
        why = toxiproxy.missing()
        if why:
            print(f"chaos: {why}", flush=True)
            network = False
    if "kafka" in modes:
        kafka_script = _load_kafka_script()
        missing = kafka_script.missing_tools()
        if missing:
            print(
                f"chaos: Kafka mode skipped: {', '.join(missing)} not found; "
                f"{kafka_script.HOW_TO_GET_JAVA}"
            )
            modes.remove("kafka")
    if not modes:
        return 2
    results: list[ModeResult] = []
    try:
        if network:
            proxy = toxiproxy.Toxiproxy(workdir / "toxiproxy.log")
        for mode in modes:
            settings = Settings(
                seed=seed,
                jobs=max(50, total_jobs // len(modes)),
                duration=duration,
                per_kind=1 if args.quick else 3,
                dispatch=mode,
                engine_url=args.engine_url,
                sdk_src=args.sdk_src.resolve() if args.sdk_src else None,
                workdir=workdir,
                lease=lease,
                kafka_config=dict(item.split("=", 1) for item in args.kafka_config if "=" in item),
            )
            print(f"chaos: {mode} mode ...", flush=True)
            results.append(run_mode(settings, mode, proxy))
            if proxy is not None:
                proxy.reset()
    except Exception as exc:
        log.exception("chaos run failed")
        print(f"chaos: setup or run error: {exc}; logs in {workdir}", file=sys.stderr)
        return 2
    finally:
        if proxy is not None:
            proxy.stop()
    text, document, failed = report.render(results, seed)
    print(text)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"chaos: JSON in {output}")
    if failed or args.keep:
        print(f"chaos: logs and run log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
