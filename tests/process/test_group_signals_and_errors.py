"""What an operator meets: signals to the whole process group, config and port
errors, the temporary metrics directory, reload after scaling, error texts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import (
    HERE,
    SupervisorProcess,
    read_pid,
    start_instances,
    upload_single_step,
    wait_for,
)

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def cli(
    *args: str, cwd: Path, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(HERE))
    env.pop("ROCHALLOR_ENGINE_URL", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "workflow_sdk.supervisor", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class ShellJobSupervisor(SupervisorProcess):
    """A supervisor started as an interactive shell starts a job: in a process
    group of its own but in the test's session. That group is not orphaned,
    so SIGTTIN and SIGTTOU really stop the processes that do not ignore them
    (the kernel discards them for an orphaned group, such as the one of a
    process started in a new session)."""

    def __init__(self, config_path: Path, cwd: Path, env: dict[str, str]) -> None:
        self.config_path = config_path
        self.log_path = cwd / "supervisor.log"
        self._log = self.log_path.open("wb")
        launcher = "import os, sys; os.setpgid(0, 0); os.execv(sys.executable, sys.argv[1:])"
        command = ["-m", "workflow_sdk.supervisor", "run", "-c", str(config_path)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launcher, sys.executable, *command],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        wait_for(lambda: os.getpgid(self.pid) == self.pid, 10, "its own process group")


@pytest.fixture
def start_shell_job(
    tmp_path: Path, engine: LocalEngine
) -> Iterator[Callable[..., SupervisorProcess]]:
    started: list[SupervisorProcess] = []

    def start(workers: int = 2, extra: str = "") -> SupervisorProcess:
        config = tmp_path / "supervisor.toml"
        config.write_text(
            f'[engine]\nurl = "{engine.url}"\ntimeout = 5\n'
            f'[supervisor]\nhandlers = ["sv_handlers:registry"]\nworkers = {workers}\n'
            f"poll_interval = 0.1\ngraceful_timeout = 10\n{extra}\n"
        )
        env = dict(os.environ, PYTHONPATH=str(HERE))
        env.pop("ROCHALLOR_ENGINE_URL", None)
        process = ShellJobSupervisor(config, tmp_path, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.reap()


def send(sv: SupervisorProcess, signum: int, whom: str) -> None:
    """To the supervisor's pid, or to its whole process group (its pid is the
    group's id: the fixture starts it in a session of its own)."""
    if whom == "group":
        os.killpg(sv.pid, signum)
    else:
        sv.signal(signum)


def fork_server(sv: SupervisorProcess) -> psutil.Process:
    def find() -> psutil.Process | None:
        for child in psutil.Process(sv.pid).children():
            try:
                if "forkserver" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        return None

    found: psutil.Process = wait_for(find, 20, "the fork server")
    return found


def assert_none_stopped(processes: list[psutil.Process]) -> None:
    for process in processes:
        assert process.status() != psutil.STATUS_STOPPED, process


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def leftover_metric_dirs(tmpdir: Path) -> list[str]:
    return sorted(p.name for p in tmpdir.glob("rochallor-metrics-*"))


# -- signals to the whole process group -----------------------------------------


@pytest.mark.parametrize("whom", ["main", "group"])
def test_hup_with_busy_workers_finishes_their_jobs_and_replaces_them(
    engine: LocalEngine,
    client: RestEngineClient,
    start_shell_job: Start,
    piddir: Path,
    whom: str,
) -> None:
    # A job interrupted and retried would run "then" and fail its instance.
    upload_single_step(client, "hup-flow", "script", retries=1)
    variables = {
        "retries": 1,
        "first": "sleep",
        "seconds": 2,
        "then": "nonretryable",
        "piddir": str(piddir),
    }
    ids = start_instances(client, "hup-flow", 2, variables)
    sv = start_shell_job(workers=2)
    busy = {read_pid(piddir, iid) for iid in ids}
    send(sv, signal.SIGHUP, whom)
    for iid in ids:
        summary = engine.wait_for_instance(iid, "COMPLETED", timeout=30)
        assert summary["variables"]["attempt"] == "first"
    assert all(job["failCalls"] == 0 for job in engine.jobs())
    sv.wait_for_log("reload finished")
    fresh = {w.pid for w in sv.wait_for_workers(2)}
    assert not busy & fresh, "the busy workers were replaced after their jobs"
    log = sv.log()
    assert "could not start" not in log
    assert "failed after" not in log  # no job failed
    assert "worker pid" not in log  # no worker died during a job
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


@pytest.mark.parametrize("whom", ["main", "group"])
def test_usr1_is_logged_and_changes_nothing(
    engine: LocalEngine,
    client: RestEngineClient,
    start_shell_job: Start,
    piddir: Path,
    whom: str,
) -> None:
    """Pins: SIGUSR1 (what gunicorn's operators and logrotate recipes send to
    reopen logs) killed the supervisor (its default action), and sent to the
    group it set every running job's cancelEvent (it was the workers' cancel
    signal). Now the supervisor logs it and goes on; the running job is not
    cancelled, keeps its worker and completes."""
    upload_single_step(client, "usr1-flow", "lifecycle", retries=0)
    sv = start_shell_job(workers=1)
    instance = client.start_instance("usr1-flow", {"piddir": str(piddir), "seconds": 3})["id"]
    pid = read_pid(piddir, instance)
    send(sv, signal.SIGUSR1, whom)
    sv.wait_for_log("SIGUSR1 ignored")
    summary = engine.wait_for_instance(instance, "COMPLETED", timeout=30)
    assert summary["variables"]["lifecycle"] == "done"
    assert (piddir / f"{instance}.cancelled").read_text() == "clear"
    assert {w.pid for w in sv.wait_for_workers(1)} == {pid}, "the worker lived on"
    assert sv.proc.poll() is None
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


@pytest.mark.parametrize("whom", ["main", "group"])
def test_ttin_and_ttou_scale_without_stopping_any_process(
    engine: LocalEngine, client: RestEngineClient, start_shell_job: Start, whom: str
) -> None:
    sv = start_shell_job(workers=1)
    sv.wait_for_workers(1)
    server = fork_server(sv)
    send(sv, signal.SIGTTIN, whom)
    workers = sv.wait_for_workers(2)
    assert_none_stopped([server, *workers])
    send(sv, signal.SIGTTOU, whom)
    survivors = sv.wait_for_workers(1)
    assert_none_stopped([server, *survivors])
    # The pool still works: the fork server can start workers, they run jobs.
    send(sv, signal.SIGTTIN, whom)
    sv.wait_for_workers(2)
    upload_single_step(client, "scale-flow", "cpu", retries=0)
    ids = start_instances(client, "scale-flow", 4, {"ms": 1})
    engine.wait_for_instances(ids, "COMPLETED", timeout=30)
    assert "could not start" not in sv.log()
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


def test_group_sigint_drains_like_a_sigint_to_the_supervisor(
    engine: LocalEngine, client: RestEngineClient, start_shell_job: Start, piddir: Path
) -> None:
    # Ctrl-C in a terminal: the running job still finishes and is reported.
    upload_single_step(client, "int-flow", "script", retries=1)
    variables = {
        "retries": 1,
        "first": "sleep",
        "seconds": 2,
        "then": "nonretryable",
        "piddir": str(piddir),
    }
    (iid,) = start_instances(client, "int-flow", 1, variables)
    sv = start_shell_job(workers=1)
    read_pid(piddir, iid)
    os.killpg(sv.pid, signal.SIGINT)
    assert sv.wait(20) == 0
    summary = engine.wait_for_instance(iid, "COMPLETED", timeout=10)
    assert summary["variables"]["attempt"] == "first"


def test_the_fork_server_outlives_a_group_sigterm_until_the_supervisor_exits(
    start_shell_job: Start,
) -> None:
    sv = start_shell_job(workers=2, extra='[logging]\nlevel = "DEBUG"\n')
    workers = sv.wait_for_workers(2)
    server = fork_server(sv)
    os.killpg(sv.pid, signal.SIGTERM)
    assert sv.wait(15) == 0
    wait_for(lambda: not server.is_running() or server.status() == "zombie", 10, "it to exit")
    log = sv.log()
    # Each worker's exit status is read through the fork server: had it died
    # of the TERM, every worker would have "exited with status 255".
    assert "status 255" not in log
    for worker in workers:
        assert f"(pid {worker.pid}) killed by SIGTERM" in log


def test_hup_after_ttin_restores_the_configured_pool_size_and_says_so(
    start_supervisor: Start,
) -> None:
    sv = start_supervisor(workers=1)
    sv.wait_for_workers(1)
    sv.signal(signal.SIGTTIN)
    sv.wait_for_workers(2)
    sv.signal(signal.SIGHUP)
    sv.wait_for_log("SIGHUP: pool size back to the configuration's 1 workers")
    assert "(SIGTTIN/SIGTTOU had made it 2)" in sv.log()
    sv.wait_for_log("reload finished")
    sv.wait_for_workers(1)


# -- configuration errors ------------------------------------------------------


def test_missing_handlers_is_a_config_error_for_run_and_check(
    engine: LocalEngine, tmp_path: Path
) -> None:
    path = tmp_path / "nohandlers.toml"
    path.write_text(f'[engine]\nurl = "{engine.url}"\n[supervisor]\nworkers = 0\n')
    for command in ("run", "check"):
        result = cli(command, "-c", str(path), cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        # Reported with the file's other problem, naming the key.
        assert f"{path}: supervisor.handlers: missing" in result.stderr
        assert f"{path}: supervisor.workers: must be >= 1" in result.stderr
        assert "Traceback" not in result.stderr
        assert "configuration is valid" not in result.stdout


def test_metrics_port_in_use_is_a_config_error_for_run_and_check(
    engine: LocalEngine, tmp_path: Path, listening_port: int
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    path = tmp_path / "port.toml"
    path.write_text(
        f'[engine]\nurl = "{engine.url}"\n[supervisor]\nhandlers = ["sv_handlers"]\n'
        f"workers = 1\n[metrics]\nport = {listening_port}\n"
    )
    expected = f"{path}: metrics.port: 127.0.0.1:{listening_port} is in use"
    for command in ("check", "run"):
        result = cli(command, "-c", str(path), cwd=tmp_path, env_extra={"TMPDIR": str(tmpdir)})
        assert result.returncode == 2, (command, result.stderr)
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
    # The run created a temporary metrics directory before it met the port.
    assert leftover_metric_dirs(tmpdir) == []


# -- the temporary metrics directory ---------------------------------------------


def test_a_temporary_metrics_directory_is_removed_after_a_run(
    start_supervisor: Start, tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    sv = start_supervisor(workers=1, extra="[metrics]\nport = 0\n", TMPDIR=str(tmpdir))
    sv.wait_for_workers(1)
    sv.wait_for_log("metrics on http://")
    (made,) = leftover_metric_dirs(tmpdir)
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
    assert leftover_metric_dirs(tmpdir) == [], made


def test_a_temporary_metrics_directory_is_removed_after_a_boot_failure(
    start_supervisor: Start, tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('cannot load the model')\n")
    sv = start_supervisor(
        workers=1,
        handlers="broken_mod",
        extra="[metrics]\nport = 0\n",
        TMPDIR=str(tmpdir),
        PYTHONPATH=str(tmp_path),
    )
    assert sv.wait(30) == 3
    assert "metrics on http://" in sv.log()
    assert leftover_metric_dirs(tmpdir) == []


def test_a_configured_metrics_directory_is_kept(start_supervisor: Start, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    sv = start_supervisor(workers=1, extra=f'[metrics]\nport = 0\ndir = "{metrics_dir}"\n')
    sv.wait_for_workers(1)
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
    assert metrics_dir.is_dir()
    assert list(metrics_dir.glob("*.db")), "the run's metric files are still there"


# -- what check and run say ---------------------------------------------------------


def test_check_names_a_mistyped_handler_module_without_a_traceback(
    engine: LocalEngine, tmp_path: Path
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(f'[engine]\nurl = "{engine.url}"\n[supervisor]\nhandlers = ["sv_handlrs"]\n')
    result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 3
    assert "supervisor.handlers: 'sv_handlrs': no module named 'sv_handlrs'" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_names_a_mistyped_handler_module_without_a_traceback(
    start_supervisor: Start,
) -> None:
    sv = start_supervisor(workers=1, handlers="sv_handlrs")
    assert sv.wait(30) == 3
    log = sv.log()
    expected = "supervisor.handlers: 'sv_handlrs': no module named 'sv_handlrs'"
    assert f"workers cannot start: {expected}" in log
    assert "Traceback" not in log


def test_check_shows_an_import_error_from_the_handler_code_without_our_frames(
    engine: LocalEngine, tmp_path: Path
) -> None:
    (tmp_path / "needs_dep.py").write_text("import not_installed_dependency\n")
    path = tmp_path / "dep.toml"
    path.write_text(f'[engine]\nurl = "{engine.url}"\n[supervisor]\nhandlers = ["needs_dep"]\n')
    result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 3
    assert "supervisor.handlers: needs_dep failed to import" in result.stderr
    assert "needs_dep.py" in result.stderr
    assert "No module named 'not_installed_dependency'" in result.stderr
    assert "workflow_sdk" not in result.stderr
    assert "importlib" not in result.stderr


def test_check_says_why_the_engine_is_unreachable(tmp_path: Path) -> None:
    with LocalEngine() as gone:
        url = gone.url
    path = tmp_path / "down.toml"
    path.write_text(f'[engine]\nurl = "{url}"\n[supervisor]\nhandlers = ["sv_handlers"]\n')
    result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 4
    assert f"engine {url}: unreachable: connection refused" in result.stderr


def test_check_reports_the_engine_status_when_healthz_is_not_200(tmp_path: Path) -> None:
    # A URL whose /healthz is an unknown route: the engine answers 404.
    with LocalEngine() as engine:
        path = tmp_path / "status.toml"
        path.write_text(
            f'[engine]\nurl = "{engine.url}/nope"\n[supervisor]\nhandlers = ["sv_handlers"]\n'
        )
        result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 4
    assert "/healthz answered 404" in result.stderr


def test_run_warns_like_check_about_a_job_type_section_without_a_handler(
    engine: LocalEngine, start_supervisor: Start, tmp_path: Path
) -> None:
    extra = '[job_types."render-pfd"]\ntimeout = 5\n'
    warning = '[job_types."render-pfd"] has no handler'
    sv = start_supervisor(workers=1, extra=extra)
    sv.wait_for_log(warning)
    result = cli("check", "-c", str(sv.config_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"warning: {warning}" in result.stderr


def test_run_help_lists_signals_exit_statuses_and_environment(tmp_path: Path) -> None:
    result = cli("run", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for text in ("HUP", "TTIN", "TTOU", "process group", "exit statuses", "ROCHALLOR_ENGINE_URL"):
        assert text in result.stdout, text
    for status in ("0 ", "1 ", "2 ", "3 "):
        assert f"\n  {status}" in result.stdout, status


def test_local_engine_help_names_the_program_and_the_default_port(tmp_path: Path) -> None:
    result = cli("local-engine", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: rochallor-supervisor local-engine")
    assert "default 8080" in result.stdout


def test_the_cli_module_does_not_import_the_local_engine() -> None:
    code = (
        "import sys, workflow_sdk.supervisor.cli\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('workflow_sdk.testing'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
