"""The processes of a chaos run: supervisors under test, and what they need.

A ``Supervisor`` is a real ``python -m workflow_sdk.supervisor run -c FILE``
in its own process group (so that what is left of it can be found and
reaped), with its own engine proxy and, in Kafka mode, its own broker
listener proxy. ``restart`` starts it again as systemd would. The SDK it runs
is the one first on its ``PYTHONPATH`` (``--sdk-src``): an older checkout
gets only the configuration keys it knows (``known_keys``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]

_KNOWN_KEYS = """
import json
from workflow_sdk.supervisor import config
out = {}
for section, name in (("engine", "_ENGINE"), ("supervisor", "_POOL"), ("kafka", "_KAFKA")):
    out[section] = sorted(getattr(config, name, {}))
print(json.dumps(out))
"""


def sdk_env(sdk_src: Path | None) -> dict[str, str]:
    """The environment of a process that runs the SDK under test (and this package)."""
    env = dict(os.environ)
    paths = [str(ROOT)]
    if sdk_src is not None:
        paths.insert(0, str(sdk_src))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("ROCHALLOR_ENGINE_URL", None)
    env.pop("ROCHALLOR_LOG_LEVEL", None)
    # A fork while multi-threaded shows in the log (scripts/test does the same).
    env.setdefault("PYTHONWARNINGS", "always:This process:DeprecationWarning")
    return env


def known_keys(sdk_src: Path | None) -> dict[str, set[str]]:
    """The configuration keys the SDK under test knows, per section."""
    result = subprocess.run(
        [sys.executable, "-c", _KNOWN_KEYS],
        env=sdk_env(sdk_src),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    try:
        return {k: set(v) for k, v in json.loads(result.stdout).items()}
    except (ValueError, AttributeError):
        return {}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def render_config(sections: dict[str, dict[str, Any]], known: dict[str, set[str]]) -> str:
    """A TOML file of ``sections``; a key the SDK under test does not know
    is left out (tables such as ``kafka.config`` are passed whole)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        allowed = known.get(section)
        for key, value in values.items():
            if allowed is not None and "." not in section and key not in allowed:
                continue
            name = key if key.replace("_", "").isalnum() else json.dumps(key)
            lines.append(f"{name} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


@dataclass
class Supervisor:
    """One supervisor under test; ``config`` is rewritten by reloads."""

    name: str
    workdir: Path
    env: dict[str, str]
    sections: dict[str, dict[str, Any]]
    known: dict[str, set[str]]
    proc: subprocess.Popen[bytes] | None = None
    #: Every parent pid it had (restarts), oldest first.
    pids: list[int] = field(default_factory=list)
    #: parent pid -> [(time, rss bytes)]
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    started_at: dict[int, float] = field(default_factory=dict)
    #: Processes of a stopped group still alive after its parent exited.
    leftovers: list[str] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    #: Whether it should be running: a parent that exits while it should is
    #: restarted by ``keep_running``, as systemd's Restart=on-failure would.
    wanted: bool = False
    #: Exits nobody asked for (each restarted): "pid: last log line".
    unexpected_exits: list[str] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    closed: bool = False

    @property
    def config_path(self) -> Path:
        return self.workdir / "supervisor.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "supervisor.log"

    def write_config(self) -> None:
        self.config_path.write_text(render_config(self.sections, self.known))
        self.config_path.chmod(0o600)

    def start(self) -> None:
        with self.lock:
            if self.closed:
                return  # the run is over: a fault thread still at work starts nothing
            self.wanted = True
            if self.alive:
                return  # never two parents of one supervisor (the old one would be lost)
            self._start()

    def _start(self) -> None:
        self.write_config()
        env = {**self.env, "CHAOS_SUPERVISOR": self.name}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "workflow_sdk.supervisor",
                    "run",
                    "-c",
                    str(self.config_path),
                ],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pids.append(self.proc.pid)
        self.started_at[self.proc.pid] = time.time()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def group(self) -> list[psutil.Process]:
        """Live (not zombie) processes of the current process group."""
        if self.proc is None:
            return []
        return group_members(self.proc.pid)

    def workers(self) -> list[psutil.Process]:
        found = []
        for child in self.group():
            try:
                title = child.cmdline()[:1]
            except psutil.Error:
                continue
            if title and title[0].startswith("worker-"):
                found.append(child)
        return found

    def sample_rss(self) -> None:
        if not self.alive:
            return
        try:
            rss = psutil.Process(self.pid).memory_info().rss
        except psutil.Error:
            return
        self.rss.setdefault(self.pid, []).append((time.time(), rss))

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait; note what of the group outlives the parent; reap it."""
        with self.lock:
            return self._stop(timeout)

    def _stop(self, timeout: float) -> int | None:
        self.wanted = False
        if self.proc is None:
            return None
        pgid = self.proc.pid
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.leftovers.append(
                f"{self.name}: parent {pgid} still running {timeout:g} s after SIGTERM"
            )
            os.killpg(pgid, signal.SIGKILL)
            code = self.proc.wait(10)
        self.exit_codes.append(code)
        # The parent reaps its workers before it exits: anything of its group
        # still here a moment later was left behind.
        late = wait_until(lambda: not group_members(pgid), 2.0)
        if not late:
            for p in group_members(pgid):
                self.leftovers.append(f"{self.name}: {describe(p)} outlived its supervisor {pgid}")
        self.reap(pgid)
        return code

    def keep_running(self) -> None:
        """Restart the parent if it exited while it should run (systemd's
        Restart=on-failure); the exit is noted."""
        if not self.lock.acquire(blocking=False):
            return  # a fault or the end of the run is at it
        try:
            if not self.wanted or self.proc is None or self.proc.poll() is None:
                return
            lines = self.log_text().strip().splitlines()
            last = lines[-1][:200] if lines else ""
            self.unexpected_exits.append(f"{self.proc.pid} (exit {self.proc.returncode}): {last}")
            self.reap(self.proc.pid)
            self.start()
        finally:
            self.lock.release()

    def kill_parent(self) -> None:
        """SIGKILL the parent only (what the OOM killer or a crash does)."""
        self.wanted = False
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def reap(self, pgid: int | None = None) -> None:
        """Kill what is left of the group (as systemd does with the unit's
        cgroup once its main process is gone) and wait for it."""
        pgid = pgid if pgid is not None else (self.proc.pid if self.proc else None)
        if pgid is None:
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc is not None and self.proc.pid == pgid:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        wait_until(lambda: not group_members(pgid), 10.0)

    def reap_all(self) -> None:
        """End of the run: start nothing more, and kill what is left of every
        process group this supervisor ever had."""
        with self.lock:
            self.closed = True
            self.wanted = False
            for pgid in self.pids:
                if group_members(pgid):
                    self.reap(pgid)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def group_members(pgid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.info["pid"]) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid} ({' '.join(p.cmdline())[:60]})"
    except psutil.Error:
        return f"pid {p.pid}"


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy or ``timeout``; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def busy_workers(runlog: Iterable[Any], supervisor: str) -> list[int]:
    """Worker pids of ``supervisor`` with a run started and not ended (from the run log)."""
    open_runs: dict[tuple[str, int], int] = {}
    for run in runlog:
        if run.supervisor != supervisor:
            continue
        key = (run.job_id, run.pid)
        if run.end is None:
            open_runs[key] = run.pid
        else:
            open_runs.pop(key, None)
    return sorted(set(open_runs.values()))
