"""Process-tier fixtures: a real LocalEngine and real supervisor processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

HERE = Path(__file__).resolve().parent


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy (deadline-bound)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class SupervisorProcess:
    """A ``rochallor-supervisor run`` child process, in its own process group.

    ``wrapper``: a command that ends by exec'ing its arguments (a shell that
    first moves itself into a cgroup, say)."""

    def __init__(
        self, config_path: Path, cwd: Path, env: dict[str, str], wrapper: tuple[str, ...] = ()
    ) -> None:
        self.config_path = config_path
        self.log_path = cwd / "supervisor.log"
        self._log = self.log_path.open("wb")
        command = [sys.executable, "-m", "workflow_sdk.supervisor", "run", "-c", str(config_path)]
        self.proc = subprocess.Popen(
            [*wrapper, *command],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def workers(self) -> list[psutil.Process]:
        """Live worker processes (their titles start with ``worker-``)."""
        found = []
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                # Read once: a worker exiting between two reads has an empty
                # command line by the second (a zombie's).
                title = child.cmdline()[:1]
            except psutil.Error:
                continue
            if title and title[0].startswith("worker-"):
                found.append(child)
        return found

    def wait_for_workers(self, count: int, timeout: float = 20.0) -> list[psutil.Process]:
        def exactly() -> list[psutil.Process] | None:
            found = self.workers()
            return found if len(found) == count else None

        return wait_for(exactly, timeout, f"{count} worker processes")

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        try:
            wait_for(lambda: text in self.log(), timeout, f"{text!r} in the supervisor log")
        except TimeoutError as exc:
            # The log says why (CI keeps no temp dirs): its last lines.
            tail = "\n".join(self.log().splitlines()[-40:])
            alive = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            raise TimeoutError(f"{exc}; the supervisor is {alive}; its log ends:\n{tail}") from None

    def reap(self) -> None:
        """Kill whatever is left of the process group and wait for it, then
        check no process of it forked while multi-threaded."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._log.close()

        def group_gone() -> bool:
            for p in psutil.process_iter(["pid"]):
                try:
                    if os.getpgid(p.info["pid"]) == self.pid and p.status() != "zombie":
                        return False
                except (ProcessLookupError, psutil.Error):
                    continue
            return True

        if not group_gone():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(group_gone, 10, "the supervisor's process group to exit")
        # A supervisor killed here cannot remove its stack-dump directory.
        for left in Path(tempfile.gettempdir()).glob(f"rochallor-stacks-{self.pid}-*"):
            shutil.rmtree(left, ignore_errors=True)
        log = self.log()
        # scripts/test sets PYTHONWARNINGS so that the warning is printed.
        assert "use of fork() may lead to deadlocks" not in log, log
        # multiprocessing prints "Process worker-N:" and a traceback when an
        # exception escapes a worker's main function: always a bug.
        assert "Process worker-" not in log, log


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Iterator[LocalEngine]:
    """A LocalEngine; ``@pytest.mark.lease(seconds)`` shortens its lease and
    ``@pytest.mark.local_engine(**options)`` passes any LocalEngine option."""
    marker = request.node.get_closest_marker("lease")
    options: dict[str, Any] = {"lease_seconds": float(marker.args[0]) if marker else 30.0}
    more = request.node.get_closest_marker("local_engine")
    if more is not None:
        options.update(more.kwargs)
    with LocalEngine(**options) as local:
        yield local


@pytest.fixture
def client(engine: LocalEngine) -> Iterator[RestEngineClient]:
    with RestEngineClient(engine.url, timeout=10) as c:
        yield c


@pytest.fixture
def start_supervisor(
    tmp_path: Path, engine: LocalEngine
) -> Iterator[Callable[..., SupervisorProcess]]:
    started: list[SupervisorProcess] = []

    def start(
        extra: str = "",
        workers: int | None = 2,
        handlers: str = "sv_handlers:registry",
        graceful_timeout: float = 10,
        engine_extra: str = "",
        *,
        wrapper: tuple[str, ...] = (),
        poll_interval: float = 0.1,
        **env_extra: str,
    ) -> SupervisorProcess:
        config = tmp_path / "supervisor.toml"
        # workers None: the default (the CPUs this process may use).
        workers_line = "" if workers is None else f"workers = {workers}\n"
        config.write_text(
            f'[engine]\nurl = "{engine.url}"\n{engine_extra or "timeout = 5"}\n'
            f'[supervisor]\nhandlers = ["{handlers}"]\n{workers_line}'
            f"poll_interval = {poll_interval:g}\ngraceful_timeout = {graceful_timeout:g}\n"
            f"{extra}\n"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        env.pop("ROCHALLOR_ENGINE_URL", None)
        env.update(env_extra)
        process = SupervisorProcess(config, tmp_path, env, wrapper)
        started.append(process)
        return process

    yield start
    for process in started:
        process.reap()


@pytest.fixture
def piddir(tmp_path: Path) -> Path:
    """Where the ``script`` handler writes the pid of the worker running a job."""
    path = tmp_path / "pids"
    path.mkdir()
    return path


def read_pid(piddir: Path, instance_id: str, timeout: float = 20.0) -> int:
    """The pid of the worker running ``instance_id``'s job, once it has started."""
    path = piddir / f"{instance_id}.pid"
    return int(wait_for(lambda: path.exists() and path.read_text(), timeout, f"{path}"))


def upload_single_step(client: RestEngineClient, def_id: str, job_type: str, retries: int) -> None:
    client.upload_definition(
        {
            "id": def_id,
            "name": def_id,
            "steps": [
                {
                    "id": "work",
                    "name": "Work",
                    "type": "SERVICE_TASK",
                    "jobType": job_type,
                    "retryCount": retries,
                    "nextStep": "end",
                },
                {"id": "end", "name": "End", "type": "END"},
            ],
        }
    )


def start_instances(
    client: RestEngineClient, def_id: str, count: int, variables: dict[str, Any]
) -> list[str]:
    return [client.start_instance(def_id, dict(variables))["id"] for _ in range(count)]
