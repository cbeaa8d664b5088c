#!/usr/bin/env python3
"""The worker supervisor on CPU-heavy jobs, end to end, on this machine.

    scripts/demo [--instances N] [--workers W]

Starts a local in-memory engine, uploads ``examples/workflow.json`` (three
CPU-bound steps: a prime sieve, a SHA-256 chain, an image blur and threshold,
then a DECISION), starts N instances, and runs ``rochallor-supervisor`` as a
real process (``python -m workflow_sdk.supervisor run -c <file>``, its own
process group, its log in a temporary directory whose path is printed) with
a configuration derived from ``examples/supervisor.toml``. Shows progress
while it runs (a live bar on a terminal, a line every ~1.5 s otherwise) and a
summary at the end: instances completed and failed, wall time, throughput,
and each worker process's share of the jobs.

Ctrl-C (or SIGTERM) stops the demo cleanly: the supervisor gets SIGTERM and
is waited for (a second Ctrl-C kills it at once), the engine is stopped and a
partial summary printed. Exit status: 0 every instance completed; 1 some
instance failed, or the supervisor or the demo itself broke; 130 interrupted
by SIGINT (143 by SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.config import default_worker_count, parse_config
from workflow_sdk.testing import LocalEngine

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
WORKFLOW_FILE = EXAMPLES / "workflow.json"
CONFIG_TEMPLATE = EXAMPLES / "supervisor.toml"
#: Instance variables naming the pid of the worker that ran each step.
PID_VARIABLES = ("primesWorkerPid", "hashWorkerPid", "imageWorkerPid")
JOBS_PER_INSTANCE = len(PID_VARIABLES)
FINAL = ("COMPLETED", "FAILED", "CANCELLED")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SIGNAL_BASE = 128


# -- signals -----------------------------------------------------------------


class Interrupts:
    """SIGINT/SIGTERM only set a flag; the main loop decides what to do."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        self.event.set()

    @property
    def requested(self) -> bool:
        return self.event.is_set()


# -- configuration -----------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string uses the same escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dump_toml(data: Mapping[str, Any], header: str = "") -> str:
    """TOML for the two-level configuration layout (sections, ``job_types."x"``)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for section, table in data.items():
        plain = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if plain or not nested:
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in plain.items()]
        for name, sub in nested.items():
            lines += ["", f"[{section}.{json.dumps(name)}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in sub.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def metrics_supported() -> bool:
    """Whether this supervisor's configuration has a ``[metrics] port`` key."""
    try:
        parse_config({"supervisor": {"handlers": ["x"]}, "metrics": {"port": 0}}, environ={})
    except ConfigError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path, engine_url: str, workers: int, metrics_port: int | None, metrics_dir: Path
) -> None:
    with CONFIG_TEMPLATE.open("rb") as fh:
        data: dict[str, Any] = tomllib.load(fh)
    data.setdefault("engine", {})["url"] = engine_url
    pool = data.setdefault("supervisor", {})
    pool["workers"] = workers
    pool["poll_interval"] = 0.5
    pool["graceful_timeout"] = 10.0
    if metrics_port is not None:
        data["metrics"] = {"port": metrics_port, "dir": str(metrics_dir)}
    header = f"Written by scripts/demo from {CONFIG_TEMPLATE.relative_to(ROOT)}."
    path.write_text(dump_toml(data, header))


# -- the supervisor process ----------------------------------------------------


class SupervisorProcess:
    """``python -m workflow_sdk.supervisor run -c FILE`` in its own process group."""

    def __init__(self, config: Path, log_path: Path) -> None:
        env = dict(os.environ)
        env.pop("ROCHALLOR_ENGINE_URL", None)  # would override the file
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workflow_sdk.supervisor", "run", "-c", str(config)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches only the demo
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float, interrupts: Interrupts) -> int | None:
        """SIGTERM, wait up to ``timeout`` (less if interrupted again), then SIGKILL
        the whole process group. Returns the exit status, None if it was killed."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        seen = interrupts.count
        deadline = time.monotonic() + timeout
        code: int | None = None
        while time.monotonic() < deadline and interrupts.count <= seen:
            try:
                code = self.proc.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                continue
        self._kill_group()
        if code is None:
            self.proc.wait()
        return code

    def _kill_group(self) -> None:
        # The fork server and the workers are in the same group; after a clean
        # exit there is nobody left and this does nothing.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


# -- progress ----------------------------------------------------------------


@dataclass
class Snapshot:
    jobs_done: int
    busy: int
    instances_final: int


@dataclass
class Progress:
    total_jobs: int
    workers: int
    tty: bool
    started: float = field(default_factory=time.monotonic)
    _window: deque[tuple[float, int]] = field(default_factory=deque)
    _last_line: float = 0.0

    def rate(self, now: float, done: int) -> float:
        """Jobs per second over the last ~3 s."""
        self._window.append((now, done))
        while len(self._window) > 2 and now - self._window[0][0] > 3.0:
            self._window.popleft()
        t0, d0 = self._window[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0

    def show(self, snap: Snapshot, final: bool = False) -> None:
        now = time.monotonic()
        rate = self.rate(now, snap.jobs_done)
        elapsed = now - self.started
        share = snap.jobs_done / self.total_jobs if self.total_jobs else 1.0
        digits = len(str(self.total_jobs))
        figures = (
            f"{snap.jobs_done:>{digits}}/{self.total_jobs} jobs {share:4.0%}  {rate:6.1f} jobs/s  "
            f"busy {min(snap.busy, self.workers)}/{self.workers}  {elapsed:5.1f} s"
        )
        if self.tty:
            columns = shutil.get_terminal_size((80, 20)).columns
            width = max(10, min(40, columns - 2 * digits - 55))
            filled = int(width * share)
            bar = "#" * filled + "." * (width - filled)
            sys.stdout.write(f"\r[{bar}] {figures}\x1b[K")
            sys.stdout.flush()
        elif final or now - self._last_line >= 1.5:
            self._last_line = now
            print(f"progress: {figures}", flush=True)

    def finish(self) -> None:
        if self.tty:
            sys.stdout.write("\n")
            sys.stdout.flush()


def snapshot(engine: LocalEngine) -> Snapshot:
    counters = engine.counters
    busy = len(engine.jobs("LOCKED"))
    final = sum(1 for i in engine.instances() if i["status"] in FINAL)
    return Snapshot(counters.get("jobs_completed", 0), busy, final)


# -- summary -----------------------------------------------------------------


def summarise(
    engine: LocalEngine, instance_ids: list[str], wall: float, interrupted: bool
) -> tuple[str, int, int]:
    """The summary text, instances completed and instances failed."""
    wanted = set(instance_ids)
    instances = [i for i in engine.instances() if i["id"] in wanted]
    statuses = Counter(i["status"] for i in instances)
    completed, failed = statuses.get("COMPLETED", 0), statuses.get("FAILED", 0)
    pids: Counter[int] = Counter()
    for instance in instances:
        variables = instance.get("variables") or {}
        for name in PID_VARIABLES:
            pid = variables.get(name)
            if isinstance(pid, int):
                pids[pid] += 1
    jobs = sum(pids.values())
    bright = sum(
        1
        for i in instances
        if i["status"] == "COMPLETED" and (i.get("variables") or {}).get("brightRatio", 0) >= 0.5
    )
    lines = [
        "",
        "== summary" + (" (interrupted: partial)" if interrupted else ""),
        f"instances: {completed} completed, {failed} failed"
        + (
            f", {len(instances) - completed - failed} not finished"
            if len(instances) > completed + failed
            else ""
        )
        + f" (of {len(instance_ids)} started)",
        f"decision:  {bright} mostly bright, {completed - bright} mostly dark",
        f"wall time: {wall:.1f} s (from starting the supervisor, worker start-up included)",
        f"throughput: {jobs / wall if wall > 0 else 0:.1f} jobs/s, "
        f"{completed / wall if wall > 0 else 0:.1f} instances/s ({jobs} jobs of "
        f"{JOBS_PER_INSTANCE} steps each)",
    ]
    if failed:
        reasons = Counter(
            i.get("failureReason") or "?" for i in instances if i["status"] == "FAILED"
        )
        for reason, count in reasons.most_common(3):
            lines.append(f"  failed x{count}: {reason}")
    lines.append("jobs per worker process:")
    for pid, count in sorted(pids.items(), key=lambda item: (-item[1], item[0])):
        share = count / jobs if jobs else 0.0
        lines.append(f"  pid {pid:>7}: {count:5d} jobs {share:6.1%}  {'#' * round(share * 40)}")
    if not pids:
        lines.append("  (no job finished)")
    return "\n".join(lines), completed, failed


# -- main --------------------------------------------------------------------


def instance_variables(index: int) -> dict[str, Any]:
    """Varied sizes, so jobs take ~10-40 ms each."""
    return {
        "seed": index,
        "primeLimit": 250_000 + (index * 7919) % 300_000,
        "hashRounds": 40_000 + (index * 104_729) % 50_000,
        "imageSize": 96 + index % 48,
    }


def run(args: argparse.Namespace, interrupts: Interrupts) -> int:
    workers = args.workers or default_worker_count()
    workdir = Path(tempfile.mkdtemp(prefix="rochallor-demo-"))
    config_path = workdir / "supervisor.toml"
    log_path = workdir / "supervisor.log"
    tty = sys.stdout.isatty() if args.progress == "auto" else args.progress == "bar"
    engine = LocalEngine()
    supervisor: SupervisorProcess | None = None
    instance_ids: list[str] = []
    started = time.monotonic()
    interrupted = False
    supervisor_code: int | None = None
    broken = ""
    try:
        engine.start()
        print(f"local engine:   {engine.url}")
        with engine.client() as client:
            definition = json.loads(WORKFLOW_FILE.read_text())
            client.upload_definition(definition)
            for index in range(args.instances):
                if interrupts.requested:
                    break
                summary = client.start_instance(definition["id"], instance_variables(index))
                instance_ids.append(summary["id"])
        print(f"workflow:       {definition['id']} ({WORKFLOW_FILE.relative_to(ROOT)})")
        print(f"instances:      {len(instance_ids)} started, {JOBS_PER_INSTANCE} jobs each")

        metrics_port = free_port() if metrics_supported() else None
        write_config(config_path, engine.url, workers, metrics_port, workdir / "metrics")
        print(f"config:         {config_path}")
        print(f"supervisor log: {log_path}")
        if metrics_port is not None:
            print(f"metrics:        http://127.0.0.1:{metrics_port}/metrics")
        if interrupts.requested:
            interrupted = True
            print(summarise(engine, instance_ids, 0.0, interrupted)[0])
            return EXIT_SIGNAL_BASE + (interrupts.signum or signal.SIGINT)

        started = time.monotonic()
        supervisor = SupervisorProcess(config_path, log_path)
        print(f"supervisor:     pid {supervisor.pid}, {workers} workers (Ctrl-C stops the demo)")
        progress = Progress(len(instance_ids) * JOBS_PER_INSTANCE, workers, tty)
        interval = 0.2 if tty else 0.5
        try:
            while True:
                snap = snapshot(engine)
                done = snap.instances_final >= len(instance_ids)
                progress.show(snap, final=done)
                if done:
                    break
                if not supervisor.alive():
                    broken = f"the supervisor exited early (status {supervisor.proc.returncode})"
                    break
                if interrupts.event.wait(interval):
                    interrupted = True
                    break
        finally:
            progress.finish()
        wall = time.monotonic() - started
        if interrupted:
            print("interrupted: stopping the supervisor (Ctrl-C again to kill it)")
        supervisor_code = supervisor.stop(15.0, interrupts)
        text, _completed, failed = summarise(engine, instance_ids, wall, interrupted)
        print(text)
        if broken:
            print(f"\n{broken}; the end of its log:\n{supervisor.log_tail()}", file=sys.stderr)
            return EXIT_FAILED
        if supervisor_code not in (0, None) and not interrupted:
            print(f"\nthe supervisor exited with status {supervisor_code}", file=sys.stderr)
            return EXIT_FAILED
        if interrupted:
            return EXIT_SIGNAL_BASE + (interrupts.signum or signal.SIGINT)
        return EXIT_FAILED if failed else EXIT_OK
    finally:
        if supervisor is not None:
            supervisor.stop(5.0, interrupts)  # no-op when already reaped
        engine.stop()
        print(f"logs kept in {workdir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--instances", type=int, default=300, help="workflow instances to run (default 300)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default: one per CPU)"
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="a live bar (terminal) or plain lines (default: bar on a terminal)",
    )
    args = parser.parse_args(argv)
    if args.instances < 1:
        parser.error("--instances must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 1")
    interrupts = Interrupts()
    interrupts.install()
    return run(args, interrupts)


if __name__ == "__main__":
    sys.exit(main())
