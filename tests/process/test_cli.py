"""``rochallor-supervisor check`` and friends, as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from workflow_sdk import __version__
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import HERE, SupervisorProcess, read_pid, start_instances, upload_single_step

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def cli(*args: str, cwd: Path, pythonpath: str = str(HERE)) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    env.pop("ROCHALLOR_ENGINE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "workflow_sdk.supervisor", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, url: str, handlers: str = "sv_handlers") -> Path:
    path = tmp_path / "check.toml"
    path.write_text(
        f'[engine]\nurl = "{url}"\ntimeout = 2\n[supervisor]\nhandlers = ["{handlers}"]\n'
    )
    return path


def test_version(tmp_path: Path) -> None:
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_check_passes_and_lists_job_types(engine: LocalEngine, tmp_path: Path) -> None:
    result = cli("check", "-c", str(write_config(tmp_path, engine.url)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "job types: attempts, cpu, gil, lifecycle, noop, script, span, span-other" in result.stdout
    )
    assert "healthy" in result.stdout


def test_check_engine_down_exits_4(tmp_path: Path) -> None:
    with LocalEngine() as gone:
        url = gone.url
    result = cli("check", "-c", str(write_config(tmp_path, url)), cwd=tmp_path)
    assert result.returncode == 4
    assert f"engine {url}" in result.stderr


def test_check_import_error_exits_3(engine: LocalEngine, tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('cannot load the model')\n")
    config = write_config(tmp_path, engine.url, handlers="broken_mod")
    result = cli("check", "-c", str(config), cwd=tmp_path, pythonpath=str(tmp_path))
    assert result.returncode == 3
    assert "RuntimeError: cannot load the model" in result.stderr


def test_check_imports_the_hooks_module_and_lists_its_hooks(
    engine: LocalEngine, tmp_path: Path
) -> None:
    (tmp_path / "ok_hooks.py").write_text("def worker_init(c):\n    pass\n\nchild_exit = print\n")
    (tmp_path / "bad_hooks.py").write_text("raise RuntimeError('no database')\n")
    config = write_config(tmp_path, engine.url)
    pythonpath = os.pathsep.join([str(HERE), str(tmp_path)])
    config.write_text(config.read_text() + 'hooks = "ok_hooks"\n')
    result = cli("check", "-c", str(config), cwd=tmp_path, pythonpath=pythonpath)
    assert result.returncode == 0, result.stderr
    assert "hooks: ok_hooks (worker_init)" in result.stdout
    config.write_text(config.read_text().replace("ok_hooks", "bad_hooks"))
    result = cli("check", "-c", str(config), cwd=tmp_path, pythonpath=pythonpath)
    assert result.returncode == 3
    assert "supervisor.hooks: bad_hooks failed to import" in result.stderr
    assert "RuntimeError: no database" in result.stderr


def test_check_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[supervisor]\nworkers = -3\n")
    result = cli("check", "-c", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{path}: supervisor.workers: must be >= 1, got -3" in result.stderr


def test_json_logs_and_worker_titles(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "title-flow", "script", retries=0)
    (iid,) = start_instances(client, "title-flow", 1, {"first": "block", "piddir": str(piddir)})
    sv = start_supervisor(workers=1, extra='[logging]\nformat = "json"\n')
    busy_pid = read_pid(piddir, iid)
    title = " ".join(psutil.Process(busy_pid).cmdline())
    (job,) = engine.jobs(instance_id=iid)
    assert title.startswith("worker-1 [rochallor] busy script")
    assert f"job={job['id']}" in title
    sv.signal(signal.SIGTERM)
    sv.wait_for_log("stopping; waiting up to")  # two signals sent at once may merge
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0
    lines = [line for line in sv.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"ts", "level", "logger", "pid", "message"} <= set(records[0])
    assert any("ready" in r["message"] for r in records)


def test_local_engine_subcommand_serves_until_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "workflow_sdk.supervisor", "local-engine", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with RestEngineClient(url) as client:
            assert client.health()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
