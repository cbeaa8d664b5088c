"""The example systemd unit: systemd accepts it, and it does not restart for ever
on errors a restart cannot fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_sdk.supervisor import EXIT_BOOT_FAILED, EXIT_CONFIG

UNIT = Path(__file__).resolve().parents[2] / "scripts" / "rochallor-supervisor.service"
EXAMPLE_EXEC = "/srv/rochallor-workers/.venv/bin/rochallor-supervisor"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_a_bad_config_or_failing_handler_import_is_not_restarted() -> None:
    unit = settings()
    assert unit["Restart"] == ["on-failure"]
    prevented = set(" ".join(unit["RestartPreventExitStatus"]).split())
    # Exit 2 (configuration) and 3 (handlers cannot be imported) need a human.
    assert {str(EXIT_CONFIG), str(EXIT_BOOT_FAILED)} <= prevented


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart names an executable: use this venv's.
    executable = Path(sys.executable).parent / "rochallor-supervisor"
    assert executable.exists(), "pip install -e . installs the console script"
    text = UNIT.read_text()
    assert EXAMPLE_EXEC in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(EXAMPLE_EXEC, str(executable)))
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
