"""The signal and exit-status tables (``supervisor/exposition/manual.py``) match the code.

They are the one source of ``run --help``, ``check --help`` and the
documentation's reference: every signal the main loop handles has its row,
every exit status the package defines has its row, and the CLI really
exits with the documented status in each case that can be reached without
starting workers.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from workflow_sdk import supervisor
from workflow_sdk.supervisor import cli
from workflow_sdk.supervisor.exposition import manual
from workflow_sdk.supervisor.loop.signals import HANDLED_SIGNALS
from workflow_sdk.testing import LocalEngine


def test_every_handled_signal_has_a_row() -> None:
    documented = {f"SIG{name}" for row in manual.SIGNALS if not row.repeat for name in row.names}
    assert documented == {signum.name for signum in HANDLED_SIGNALS}


def test_every_exit_constant_has_a_row() -> None:
    constants = {
        name: getattr(module, name)
        for module in (supervisor, cli, manual)
        for name in dir(module)
        if name.startswith("EXIT_") and isinstance(getattr(module, name), int)
    }
    rows = {status.constant: status.code for status in manual.EXIT_STATUSES}
    assert rows == constants
    codes = [status.code for status in manual.EXIT_STATUSES]
    assert codes == sorted(set(codes)), "one row per status, in order"
    for status in manual.EXIT_STATUSES:
        assert status.run or status.check, status.constant


def test_help_prints_the_tables() -> None:
    run_help = cli._parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    flat = " ".join(run_help.split())
    for row in manual.SIGNALS:
        assert " ".join(row.brief.split()) in flat, row.names
    for status in manual.EXIT_STATUSES:
        if status.run:
            assert " ".join(status.run.split()) in flat, status.code
    check_help = cli._parser()._subparsers._group_actions[0].choices["check"].format_help()  # type: ignore[union-attr]
    flat = " ".join(check_help.split())
    for status in manual.EXIT_STATUSES:
        if status.check:
            assert f"{status.code} {' '.join(status.check.split())}" in flat, status.code


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory with a handler module; ``cli.main`` puts it on sys.path."""
    (tmp_path / "manual_handlers.py").write_text(
        "from workflow_sdk import HandlerRegistry\n"
        "registry = HandlerRegistry()\n"
        "registry.register('manual-job', lambda job: None)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "manual_handlers", raising=False)
    for name in ("ROCHALLOR_ENGINE_URL", "ROCHALLOR_ENGINE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def config(workdir: Path, url: str, handlers: str = "manual_handlers:registry") -> str:
    path = workdir / "supervisor.toml"
    path.write_text(f'[engine]\nurl = "{url}"\n[supervisor]\nhandlers = ["{handlers}"]\n')
    path.chmod(0o600)
    return str(path)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_exits_with_the_documented_statuses(workdir: Path) -> None:
    with LocalEngine() as engine:
        assert cli.main(["check", "-c", config(workdir, engine.url)]) == manual.EXIT_OK
    missing = str(workdir / "missing.toml")
    assert cli.main(["check", "-c", missing]) == manual.EXIT_CONFIG
    assert cli.main(["run", "-c", missing]) == manual.EXIT_CONFIG
    with pytest.raises(SystemExit) as bad_command_line:
        cli.main(["frobnicate"])
    assert bad_command_line.value.code == manual.EXIT_CONFIG
    broken = config(workdir, "http://127.0.0.1:9", handlers="no_such_module_here:registry")
    assert cli.main(["check", "-c", broken]) == manual.EXIT_BOOT_FAILED
    unreachable = config(workdir, f"http://127.0.0.1:{closed_port()}")
    assert cli.main(["check", "-c", unreachable]) == manual.EXIT_ENGINE_UNREACHABLE
