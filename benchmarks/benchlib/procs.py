"""The processes a benchmark run starts, and how they are watched and reaped.

Every process is started in a session of its own (so a Ctrl-C in the
terminal reaches only the benchmark, which then stops them in order) and is
killed with its whole process group on the way out, whatever happened.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

#: benchmarks/: holds benchlib (put on PYTHONPATH) and the bench scripts.
BENCHMARKS = Path(__file__).resolve().parent.parent
ROOT = BENCHMARKS.parent
#: scripts/: the repository's entry points (kafka.py starts a broker).
SCRIPTS = ROOT / "scripts"


def child_env() -> dict[str, str]:
    """The environment of every child: ``benchlib`` importable, no URL override."""
    env = dict(os.environ)
    env.pop("ROCHALLOR_ENGINE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCHMARKS), env.get("PYTHONPATH")) if p)
    return env


class Child:
    """A child process in its own process group, its output in ``log_path``."""

    def __init__(self, argv: list[str], log_path: Path, *, capture_first_line: bool = False):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=BENCHMARKS,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_first_line else self._log,
            stderr=self._log,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.ps = psutil.Process(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the process group.

        Returns the exit status, or None when it had to be killed.
        """
        code: int | None = None
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGTERM)
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        else:
            code = self.proc.returncode
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers: fork server, workers
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


class EngineProcess(Child):
    """``python -m workflow_sdk.testing --port 0``: a LocalEngine in its own process."""

    def __init__(self, log_path: Path, lease_seconds: float = 30.0) -> None:
        argv = [sys.executable, "-m", "workflow_sdk.testing", "--port", "0"]
        argv += ["--lease-seconds", str(lease_seconds)]
        super().__init__(argv, log_path, capture_first_line=True)
        self.lease_seconds = lease_seconds
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the local engine did not start: {line!r}\n{self.log_tail()}")
        self.url = line


class SupervisorProcess(Child):
    """The supervisor, as users run it (``cli``) or under ``benchlib.sv_host``."""

    def __init__(self, config: Path, log_path: Path, *, stamping: bool = False) -> None:
        module = "benchlib.sv_host" if stamping else "workflow_sdk.supervisor"
        super().__init__([sys.executable, "-m", module, "run", "-c", str(config)], log_path)

    def processes(self) -> dict[str, list[psutil.Process]]:
        """``{"workers": [...], "fork_server": [...], "other": [...]}`` (live children)."""
        found: dict[str, list[psutil.Process]] = {"workers": [], "fork_server": [], "other": []}
        try:
            children = self.ps.children(recursive=True)
        except psutil.Error:
            return found
        for child in children:
            try:
                cmdline = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if cmdline.startswith("worker-"):
                found["workers"].append(child)
            elif "forkserver" in cmdline:
                found["fork_server"].append(child)
            else:
                found["other"].append(child)
        return found

    def wait_ready(self, workers: int, timeout: float = 60.0) -> None:
        """Until ``workers`` worker processes have finished booting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the supervisor exited early:\n{self.log_tail()}")
            ready = 0
            for worker in self.processes()["workers"]:
                try:
                    if "booting" not in " ".join(worker.cmdline()):
                        ready += 1
                except psutil.Error:
                    continue
            if ready >= workers:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{workers} workers not ready in {timeout} s:\n{self.log_tail()}")


class RunnerProcess(Child):
    """``benchlib.runner_host``: the threaded Runner in a process of its own."""

    def __init__(self, url: str, parallelism: int, log_path: Path) -> None:
        argv = [sys.executable, "-m", "benchlib.runner_host", "--url", url]
        argv += ["--parallelism", str(parallelism)]
        super().__init__(argv, log_path)


def process_cpu(process: psutil.Process) -> Callable[[], float]:
    """CPU seconds (user + system, every thread) used so far by ``process``."""

    def read() -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    return read


def threads_cpu(process: psutil.Process) -> Callable[[], float]:
    """CPU seconds used so far by the threads of ``process``, to the nanosecond.

    For processes whose threads live as long as they do (the supervisor's
    parent, the Runner): read from each thread's
    ``/proc/PID/task/TID/schedstat`` (time on a CPU, in nanoseconds), because
    ``cpu_times()`` counts clock ticks of 10 ms and a short batch (a smoke
    run's few ms of parent CPU) then reads 0. A thread keeps the last value
    read after it ends, so the sum never goes backwards, but the time it ran
    since that read is missed. Where the kernel has no schedstat,
    ``process_cpu``.
    """
    if not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/schedstat"):
        return process_cpu(process)
    tasks = f"/proc/{process.pid}/task"
    last: dict[str, float] = {}

    def read() -> float:
        try:
            entries = os.listdir(tasks)
        except FileNotFoundError:
            raise psutil.NoSuchProcess(process.pid) from None
        for tid in entries:
            try:
                with open(f"{tasks}/{tid}/schedstat") as fh:
                    last[tid] = int(fh.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                continue  # the thread ended between the listing and the read
        return sum(last.values())

    return read


def tree_cpu(root: psutil.Process) -> Callable[[], float]:
    """CPU seconds used by ``root`` and its descendants (fork server, workers).

    Children are remembered: one that has exited still counts with the last
    value read, so the sum never goes backwards.
    """
    known: dict[int, psutil.Process] = {}
    last: dict[int, float] = {}

    def read() -> float:
        try:
            for child in root.children(recursive=True):
                known.setdefault(child.pid, child)
        except psutil.Error:
            pass
        for pid, process in [(root.pid, root), *known.items()]:
            try:
                times = process.cpu_times()
                last[pid] = float(times.user + times.system)
            except psutil.Error:
                continue
        return sum(last.values())

    return read


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (every CPU, not idle or iowait)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times) - idle)


def wait_for_quiet(max_pct: float, timeout: float, window: float = 1.0) -> float:
    """Wait (up to ``timeout``) for a ``window`` in which the machine's CPU use,
    this process's excepted, stays under ``max_pct`` % of one core.

    Returns the last measured figure (other engineers' test runs share the
    machine; a batch measured under their load would say little).
    """
    me = process_cpu(psutil.Process())
    deadline = time.monotonic() + timeout
    while True:
        m0, s0, t0 = machine_cpu(), me(), time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        busy = 100.0 * ((machine_cpu() - m0) - (me() - s0)) / elapsed
        if busy <= max_pct or time.monotonic() >= deadline:
            return busy


class CpuSampler:
    """Samples cumulative CPU seconds (``reader()``) on a thread, every ``interval``.

    ``cpu_between(t0, t1)`` interpolates between samples, where ``t0`` and
    ``t1`` are ``time.time()`` values (the engine's completion stamps are on
    the same wall clock).
    """

    def __init__(self, readers: Mapping[str, Callable[[], float]], interval: float = 0.1):
        self._readers = dict(readers)
        self._interval = interval
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in readers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._take()
        self._thread.start()

    def _take(self) -> None:
        now = time.time()
        for name, read in self._readers.items():
            try:
                self.samples[name].append((now, read()))
            except psutil.Error:
                continue

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._take()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._take()

    @staticmethod
    def _at(samples: list[tuple[float, float]], when: float) -> float:
        if when <= samples[0][0]:
            return samples[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t0 <= when <= t1:
                return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0.0)
        return samples[-1][1]

    def cpu_between(self, name: str, start: float, end: float) -> float:
        """Percent of one core ``name`` used between two wall-clock times."""
        samples = self.samples[name]
        if end <= start or len(samples) < 2:
            return float("nan")
        return 100.0 * (self._at(samples, end) - self._at(samples, start)) / (end - start)


def memory_of(process: psutil.Process) -> dict[str, Any]:
    """RSS, USS and PSS in MiB (``memory_full_info`` reads /proc/PID/smaps)."""
    info = process.memory_full_info()
    mib = float(2**20)
    return {
        "pid": process.pid,
        "rss_mib": info.rss / mib,
        "uss_mib": info.uss / mib,
        "pss_mib": getattr(info, "pss", 0) / mib,
    }
