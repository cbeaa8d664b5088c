"""The shipped systemd unit (deploy/systemd/): systemd accepts it, its sandbox
rates 4.0 or better in ``systemd-analyze security``, it keeps the supervisor's
lifecycle settings, it does not restart for ever on errors a restart cannot
fix, and the one directory it lets the service write is one the supervisor
accepts for its metric files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_sdk.supervisor import EXIT_BOOT_FAILED, EXIT_CONFIG
from workflow_sdk.supervisor.exposition import multiproc

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "rochallor-supervisor.service"
EXAMPLE_EXEC = "/srv/rochallor-workers/.venv/bin/rochallor-supervisor"
#: The highest exposure accepted (systemd-analyze: 0.0 best, 10.0 worst;
#: the unit before hardening rated 9.2 UNSAFE).
MAX_EXPOSURE = 4.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's console script:
    ``verify`` checks that ExecStart names an executable that exists."""
    executable = Path(sys.executable).parent / "rochallor-supervisor"
    assert executable.exists(), "pip install -e . installs the console script"
    text = UNIT.read_text()
    assert EXAMPLE_EXEC in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(EXAMPLE_EXEC, str(executable)))
    return unit


def test_a_bad_config_or_failing_handler_import_is_not_restarted() -> None:
    unit = settings()
    assert unit["Restart"] == ["on-failure"]
    prevented = set(" ".join(unit["RestartPreventExitStatus"]).split())
    # Exit 2 (configuration) and 3 (handlers cannot be imported) need a human.
    assert {str(EXIT_CONFIG), str(EXIT_BOOT_FAILED)} <= prevented


def test_the_lifecycle_settings_survive_the_hardening() -> None:
    """The sandbox came on top of these; each is relied on (README "Deploying
    with systemd")."""
    unit = settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["KillMode"] == ["mixed"]
    assert unit["OOMPolicy"] == ["continue"]
    assert unit["WatchdogSec"] and unit["TimeoutStopSec"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # ProcSubset=pid would hide /proc/stat and /proc/meminfo from psutil.
    assert "ProcSubset" not in unit


def test_the_runtime_directory_is_where_the_metric_files_go_and_is_accepted(
    tmp_path: Path,
) -> None:
    """With ProtectSystem=strict the runtime directory is the service's only
    writable place besides its private /tmp: [metrics] dir must default into
    it, and a directory made the way systemd makes it (owned by User=, mode
    RuntimeDirectoryMode) must pass the supervisor's ownership check."""
    unit = settings()
    assert unit["ProtectSystem"] == ["strict"]
    (name,) = unit["RuntimeDirectory"]
    runtime = tmp_path / name
    runtime.mkdir(mode=int(unit["RuntimeDirectoryMode"][0], 8))
    chosen = multiproc.choose_dir(None, {"RUNTIME_DIRECTORY": str(runtime)})
    assert Path(chosen).parent == runtime
    assert multiproc.dir_problem(str(runtime)) is None
    saved = os.environ.get(multiproc.ENV_DIR)
    old_umask = os.umask(int(unit["UMask"][0], 8))
    try:
        assert multiproc.prepare_dir(chosen) == chosen
    finally:
        os.umask(old_umask)
        if saved is None:
            os.environ.pop(multiproc.ENV_DIR, None)
        else:
            os.environ[multiproc.ENV_DIR] = saved
    assert multiproc.dir_problem(chosen) is None


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    unit = runnable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and unparsable values are only warned about: none allowed.
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_the_sandbox_rates_4_or_better_in_systemd_analyze_security(tmp_path: Path) -> None:
    unit = runnable_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"systemd-analyze cannot rate a unit file offline (250+): {result.stderr}")
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_every_line_of_the_unit_is_explained_in_docs_deploy_systemd() -> None:
    doc = (ROOT / "docs" / "deploy-systemd.md").read_text()
    unexplained = [key for key in settings() if f"`{key}=" not in doc]
    assert not unexplained, f"docs/deploy-systemd.md does not explain {unexplained}"
