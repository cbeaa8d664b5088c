"""Issue 21 against real processes: a real supervisor, a real LocalEngine, the CLI.

Each test names the sequence it pins. The "before" behaviour of each was a
crash or a leak: exit 1 on EMFILE, secrets in the workers' environment,
credentials and forged lines in the log, a world-writable directory used.
"""

from __future__ import annotations

import os
import re
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

from .conftest import HERE, SupervisorProcess, start_instances, upload_single_step, wait_for

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]
StartOwn = Callable[..., SupervisorProcess]
SECRET = "s3cr3t-VALUE"
HANDLERS = "sec_handlers:registry"


def cli(*args: str, cwd: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env.pop("ROCHALLOR_ENGINE_URL", None)
    env.pop("ROCHALLOR_ENGINE_TOKEN", None)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "workflow_sdk.supervisor", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def start_own(tmp_path: Path) -> Iterator[StartOwn]:
    """A supervisor from a configuration text of the test's own (reaped after)."""
    started: list[SupervisorProcess] = []

    def start(text: str, *, mode: int = 0o600, **env_extra: str) -> SupervisorProcess:
        path = tmp_path / "supervisor.toml"
        path.write_text(text)
        path.chmod(mode)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        for name in ("ROCHALLOR_ENGINE_URL", "ROCHALLOR_ENGINE_TOKEN"):
            env.pop(name, None)
        env.update(env_extra)
        process = SupervisorProcess(path, tmp_path, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.reap()


def stop(sv: SupervisorProcess) -> str:
    sv.signal(signal.SIGTERM)
    assert sv.wait(30) == 0, sv.log()
    return sv.log()


def metrics_port(sv: SupervisorProcess) -> int:
    sv.wait_for_log("metrics on http://")
    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", sv.log())
    assert found, sv.log()
    return int(found.group(1))


# -- item 1 -----------------------------------------------------------------------------------


def test_idle_metrics_connections_do_not_exhaust_the_parent(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Sequence: the parent may open 128 files; 150 connections to /metrics
    each send half a request and stay. Before: one thread and one descriptor
    per connection, the next RSS sample raised EMFILE and the supervisor
    exited 1. Now: it keeps serving jobs, and /metrics answers once the idle
    connections are gone."""
    upload_single_step(client, "fd-flow", "noop", retries=0)
    sv = start_supervisor(workers=1, handlers=HANDLERS, extra="[metrics]\nport = 0\n")
    port = metrics_port(sv)
    sv.wait_for_workers(1)
    parent = psutil.Process(sv.pid)
    assert parent.num_fds() < 100, parent.num_fds()
    parent.rlimit(psutil.RLIMIT_NOFILE, (128, 128))
    idle: list[socket.socket] = []
    try:
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            idle.append(sock)
            try:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass  # closed by the server at once: over its connection cap
        # Several RSS samples (one a second) and polls while they are held.
        ids = start_instances(client, "fd-flow", 5, {})
        engine.wait_for_instances(ids, "COMPLETED", timeout=30)
        assert sv.proc.poll() is None, sv.log()
        assert parent.num_fds() < 128
    finally:
        for sock in idle:
            sock.close()

    def scraped() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                return b"".join(iter(lambda: sock.recv(65536), b""))
            except (ConnectionResetError, BrokenPipeError):
                return b""  # still over the cap: try again

    text = wait_for(scraped, 30, "a /metrics answer")
    assert b"workflow_supervisor_workers 1.0" in text
    stop(sv)


# -- item 7 -----------------------------------------------------------------------------------


def test_workers_and_the_fork_server_never_see_the_secrets(
    engine: LocalEngine, client: RestEngineClient, start_own: StartOwn
) -> None:
    """Sequence: the token comes from ROCHALLOR_ENGINE_TOKEN (and token_env
    names another variable), a Kafka password from [kafka.config_env]: no
    worker's os.environ holds them, nor the fork server's or a worker's
    /proc/PID/environ; a SIGHUP (which reads them again) still works."""
    upload_single_step(client, "env-flow", "env", retries=0)
    config = (
        f'[engine]\nurl = "{engine.url}"\ntoken_env = "SEC_TOKEN"\n'
        f'[supervisor]\nhandlers = ["{HANDLERS}"]\nworkers = 1\npoll_interval = 0.1\n'
        '[kafka.config_env]\n"sasl.password" = "SEC_KAFKA_PW"\n'
    )
    secrets = {name: SECRET for name in ("ROCHALLOR_ENGINE_TOKEN", "SEC_TOKEN", "SEC_KAFKA_PW")}
    sv = start_own(config, **secrets)
    (iid,) = start_instances(client, "env-flow", 1, {})
    engine.wait_for_instance(iid, "COMPLETED", timeout=30)
    assert client.get_instance(iid)["variables"]["seen"] == []
    children = psutil.Process(sv.pid).children(recursive=True)
    assert len(children) >= 2  # the fork server and the worker
    for process in children:
        leaked = set(secrets) & set(process.environ())
        assert not leaked, (process.cmdline(), leaked)
    # SIGHUP reads the file and the variables again.
    sv.signal(signal.SIGHUP)
    sv.wait_for_log("reload finished")
    assert "not set" not in sv.log()
    (iid,) = start_instances(client, "env-flow", 1, {})
    engine.wait_for_instance(iid, "COMPLETED", timeout=30)
    assert client.get_instance(iid)["variables"]["seen"] == []
    assert SECRET not in stop(sv)


# -- item 6 -----------------------------------------------------------------------------------


def test_url_credentials_appear_in_no_log_line(
    engine: LocalEngine, client: RestEngineClient, start_own: StartOwn
) -> None:
    """Sequence: engine.url carries user:password; the supervisor starts (the
    start-up line), runs a job, then the engine goes away (poll errors name
    the URL): no line holds the credentials, the start-up line shows ***."""
    upload_single_step(client, "cred-flow", "noop", retries=0)
    url = engine.url.replace("http://", f"http://admin:{SECRET}@")
    sv = start_own(
        f'[engine]\nurl = "{url}"\ntimeout = 2\n'
        f'[supervisor]\nhandlers = ["{HANDLERS}"]\nworkers = 1\npoll_interval = 0.1\n'
    )
    (iid,) = start_instances(client, "cred-flow", 1, {})
    engine.wait_for_instance(iid, "COMPLETED", timeout=30)
    engine.stop()
    try:
        sv.wait_for_log("poll failed")
    finally:
        engine.start()
    log = stop(sv)
    assert SECRET not in log and "admin" not in log
    assert f"engine {engine.url.replace('http://', 'http://***@')}" in log


# -- item 3 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["nonretryable", "raise"])
def test_a_handler_error_message_cannot_forge_a_log_line(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, how: str
) -> None:
    """Sequence: a handler fails with a message holding a line break, a line
    that looks like a record and an ANSI escape (with its traceback, for a
    plain exception): in the text log no line starts with the forged one,
    and no escape character is written."""
    upload_single_step(client, "forge-flow", "forge", retries=0)
    (iid,) = start_instances(client, "forge-flow", 1, {"how": how})
    sv = start_supervisor(workers=1, handlers=HANDLERS)
    engine.wait_for_instance(iid, "FAILED", timeout=30)
    log = stop(sv)
    assert "\x1b" not in log
    assert not [line for line in log.splitlines() if line.startswith("2099")], log
    (line,) = [line for line in log.splitlines() if "failed on worker-1" in line]
    assert "declined\\n2099-01-01" in line and "forged\\x1b[2J" in line
    if how == "raise":
        assert "  Traceback (most recent call last):" in log


# -- item 5 -----------------------------------------------------------------------------------


def test_a_metrics_dir_others_may_write_is_refused_by_run_and_check(
    engine: LocalEngine, start_own: StartOwn, tmp_path: Path
) -> None:
    """Sequence: [metrics] dir is a 1777 directory holding a planted
    counter_worker1.db link: run exits 2 naming metrics.dir without writing
    through the link, and check says the same."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (shared / "counter_worker1.db").symlink_to(victim)
    text = (
        f'[engine]\nurl = "{engine.url}"\n'
        f'[supervisor]\nhandlers = ["{HANDLERS}"]\nworkers = 1\n'
        f'[metrics]\nport = 0\ndir = "{shared}"\n'
    )
    sv = start_own(text)
    assert sv.wait(30) == 2
    assert f"metrics.dir: {shared} is writable by every user (mode 1777)" in sv.log()
    assert victim.read_text() == "keep me"
    result = cli("check", "-c", str(sv.config_path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{sv.config_path}: metrics.dir: {shared} is writable by every user" in result.stderr


# -- items 2, 4, 6, 8, 11: check -----------------------------------------------------------------


def test_check_refuses_a_token_with_a_newline_without_printing_it(
    engine: LocalEngine, tmp_path: Path
) -> None:
    """Sequence: ROCHALLOR_ENGINE_TOKEN ends with CR (a file read with its line
    ending): check exits 2 naming the variable; the token is printed nowhere
    (before: "unreachable: Bearer <token>")."""
    path = tmp_path / "sv.toml"
    path.write_text(f'[engine]\nurl = "{engine.url}"\n[supervisor]\nhandlers = ["{HANDLERS}"]\n')
    path.chmod(0o600)
    result = cli("check", "-c", str(path), cwd=tmp_path, ROCHALLOR_ENGINE_TOKEN=f"{SECRET}\r")
    assert result.returncode == 2, result
    assert f"{path}: $ROCHALLOR_ENGINE_TOKEN: must be printable ASCII" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_check_reports_weakened_security_with_file_and_key(
    engine: LocalEngine, tmp_path: Path
) -> None:
    """Sequence: a 0644 file holds the token, verify_tls is off, the URL
    carries credentials: check passes (exit 0) and prints one warning per
    setting, each with the file and the key, and the URL without them."""
    path = tmp_path / "sv.toml"
    url = engine.url.replace("http://", f"http://admin:{SECRET}@")
    path.write_text(
        f'[engine]\nurl = "{url}"\ntoken = "tok"\nverify_tls = false\n'
        f'[supervisor]\nhandlers = ["{HANDLERS}"]\n'
    )
    path.chmod(0o644)
    result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 0, result
    assert f"warning: {path}: engine.token: file mode 0644 lets its group and every user" in (
        result.stderr
    )
    assert SECRET not in result.stdout + result.stderr
    assert f"engine {engine.url.replace('http://', 'http://***@')}: healthy" in result.stdout
    # verify_tls = false on http:// changes nothing: no warning about it.
    assert "engine.verify_tls" not in result.stderr


def test_check_and_run_warn_about_tls_checks_turned_off(
    start_own: StartOwn, tmp_path: Path
) -> None:
    """Sequence: https:// with verify_tls = false: check prints the warning
    naming engine.verify_tls; run logs it once at WARNING at start-up."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        text = (
            f'[engine]\nurl = "https://127.0.0.1:{port}"\nverify_tls = false\ntimeout = 1\n'
            f'[supervisor]\nhandlers = ["{HANDLERS}"]\nworkers = 1\n'
        )
        sv = start_own(text)
        sv.wait_for_log("supervisor starting")
        result = cli("check", "-c", str(sv.config_path), cwd=tmp_path)
    assert result.returncode == 4  # nothing answers there
    assert f"warning: {sv.config_path}: engine.verify_tls: false:" in result.stderr
    log = stop(sv)
    warned = [line for line in log.splitlines() if "engine.verify_tls" in line]
    assert len(warned) == 1 and " WARNING " in warned[0], log


def test_check_refuses_a_world_writable_config(engine: LocalEngine, tmp_path: Path) -> None:
    """Sequence: the configuration file is mode 0666: check exits 2 naming the
    file and its mode (anyone could make the supervisor import their module)."""
    path = tmp_path / "sv.toml"
    path.write_text(f'[engine]\nurl = "{engine.url}"\n[supervisor]\nhandlers = ["{HANDLERS}"]\n')
    path.chmod(0o666)
    result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{path}: file mode 0666: every user may change this file" in result.stderr


def test_check_help_says_the_current_directory_comes_first(tmp_path: Path) -> None:
    """Item 11: check (like run) puts the current directory first on sys.path;
    its help says so."""
    for command in ("check", "run"):
        result = cli(command, "--help", cwd=tmp_path)
        assert result.returncode == 0
        assert "the current directory is put first on sys.path" in result.stdout
