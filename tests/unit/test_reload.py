"""SIGHUP's verdicts without a fork: what a reload keeps, and when its
configuration takes effect (issue 22, item 1)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from unit.fakes import make_slot
from workflow_sdk.supervisor.config import LoggingConfig, SupervisorConfig, load_config
from workflow_sdk.supervisor.loop.slots import SlotState
from workflow_sdk.supervisor.reload import Reload, reload_config


def _write(path: Path, supervisor: str = "", extra: str = "") -> None:
    path.write_text(f'[supervisor]\nhandlers = ["a"]\nworkers = 2\n{supervisor}\n{extra}')


def test_what_only_a_restart_changes_is_kept_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: report_deadline, lease_renewal, lease_seconds, worker_id (and
    [kafka], preload_handlers) were silently kept; each is now named."""
    path = tmp_path / "supervisor.toml"
    _write(path, "worker_id = 'w1'\n")
    current = load_config(path)
    _write(
        path,
        "worker_id = 'w2'\nreport_deadline = 33\nlease_renewal = 'off'\nlease_seconds = 40\n"
        "preload_handlers = true\npoll_interval = 0.5\nstale_check_interval = 1\n",
        "[kafka]\nbrokers = ['k:9092']\n",
    )
    with caplog.at_level(logging.WARNING, logger="workflow_sdk.supervisor"):
        new = reload_config(current, 2, require_handlers=True)
    assert new is not None
    kept = ("worker_id", "report_deadline", "lease_renewal", "lease_seconds", "preload_handlers")
    for key in kept:
        assert getattr(new.supervisor, key) == getattr(current.supervisor, key)
        assert f"supervisor.{key} changes take effect at the next restart" in caplog.text
    assert new.kafka == current.kafka
    assert "[kafka] changes take effect at the next restart" in caplog.text
    # What the loop reads as it goes is taken.
    assert (new.supervisor.poll_interval, new.supervisor.stale_check_interval) == (0.5, 1.0)


def test_nothing_is_named_when_nothing_restart_only_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "supervisor.toml"
    _write(path, "worker_id = 'w1'\n")
    current = load_config(path)
    _write(path, "worker_id = 'w1'\npoll_interval = 0.5\n")
    with caplog.at_level(logging.WARNING, logger="workflow_sdk.supervisor"):
        assert reload_config(current, 2, require_handlers=True) is not None
    assert "next restart" not in caplog.text


def _configs(tmp_path: Path) -> tuple[SupervisorConfig, SupervisorConfig]:
    path = tmp_path / "supervisor.toml"
    _write(path)
    old = load_config(path)
    return old, dataclasses.replace(old, logging=LoggingConfig("DEBUG", "json"))


def test_only_the_reloads_new_workers_boot_from_the_trial(tmp_path: Path) -> None:
    """Pins: a crashed old worker's replacement booted from the new (broken)
    configuration while the reload was still on trial."""
    old, new = _configs(tmp_path)
    reload = Reload()
    reload.begin(new)
    assert reload.config_for(old, surge=True) is new
    assert reload.config_for(old, surge=False) is old
    replacement, surge = make_slot(1, SlotState.BOOTING), make_slot(2, SlotState.BOOTING)
    reload.started(replacement, old)
    reload.started(surge, new)
    assert reload.ready(replacement) is None  # not a worker of the trial
    assert reload.ready(surge) is new
    assert reload.adopted and reload.trial is None
    # From now on every worker boots from the configuration in effect.
    assert reload.config_for(new, surge=True) is new
    assert reload.ready(surge) is None  # adopted once


def test_an_aborted_reload_never_adopts_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = _configs(tmp_path)
    reload = Reload()
    reload.begin(new)
    surge = make_slot(2, SlotState.BOOTING)
    reload.started(surge, new)
    with caplog.at_level(logging.ERROR, logger="workflow_sdk.supervisor"):
        assert reload.end(aborted=True) is False
    assert "the configuration from before the SIGHUP stays in effect" in caplog.text
    assert not reload.adopted and not reload.active
    assert reload.config_for(old, surge=True) is old
    assert reload.ready(surge) is None


def test_a_sighup_during_a_reload_is_remembered_once(tmp_path: Path) -> None:
    """Pins: a second SIGHUP during a reload was dropped."""
    _, new = _configs(tmp_path)
    reload = Reload()
    reload.begin(new)
    assert reload.queue() is True
    assert reload.queue() is False  # logged once, applied once
    assert reload.end() is True
    reload.begin(new)
    assert reload.end() is False


def test_logging_is_set_up_here_only_when_the_cli_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = _configs(tmp_path)
    calls: list[tuple[str, str]] = []
    reload = Reload()
    with caplog.at_level(logging.INFO, logger="workflow_sdk.supervisor"):
        reload.apply_logging(old, new)
    assert "applies to the workers" in caplog.text
    reload.log_setup = lambda level, fmt: calls.append((level, fmt))
    reload.apply_logging(old, old)
    reload.apply_logging(old, new)
    assert calls == [("DEBUG", "json")]
