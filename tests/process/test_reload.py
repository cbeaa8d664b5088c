"""SIGHUP against real supervisor processes: a reload that fails keeps the old
configuration, a SIGHUP during a reload is not lost, and what a reload
cannot change is said (issue 22, item 1 and its "also")."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, start_instances, upload_single_step, wait_for

Start = Callable[..., SupervisorProcess]

#: A handler module that cannot boot while its gate file exists: it waits at
#: import (the worker stays "booting"), so a reload stays in progress until
#: the test opens the gate.
GATED = """\
import os
import time

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

while os.path.exists(os.environ["RELOAD_GATE"]):
    time.sleep(0.01)


@registry.register("gated")
def gated(job):
    return {"pid": os.getpid()}
"""


def test_a_reload_whose_handlers_fail_to_import_keeps_the_old_config_for_replacements(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Pins: the new config was adopted before the reload was known to work;
    after "reload aborted, the old ones keep running", the next crash's
    replacement booted from the broken handler list, and after 5 boot
    failures the supervisor exited 3. Now the replacement boots from the
    old configuration and the supervisor keeps serving."""
    upload_single_step(client, "hup-flow", "cpu", retries=0)
    sv = start_supervisor(workers=2)
    sv.wait_for_log("workers ready")
    sv.config_path.write_text(
        sv.config_path.read_text().replace(
            'handlers = ["sv_handlers:registry"]', 'handlers = ["no_such_handler_module"]'
        )
    )
    sv.signal(signal.SIGHUP)
    sv.wait_for_log("the configuration from before the SIGHUP stays in effect")
    assert "reload aborted" in sv.log()
    workers = sv.wait_for_workers(2)
    ready_before = sv.log().count(" ready, pid ")
    victim = workers[0]
    victim.kill()  # a crash: its replacement must boot from the old handlers
    victim.wait(10)
    wait_for(lambda: sv.log().count(" ready, pid ") > ready_before, 30, "a replacement ready")
    fresh = sv.wait_for_workers(2)
    assert victim.pid not in {w.pid for w in fresh}
    ids = start_instances(client, "hup-flow", 4, {"ms": 1})
    engine.wait_for_instances(ids, "COMPLETED", timeout=30)
    assert sv.proc.poll() is None, "the supervisor is still running"
    assert "stopping the supervisor" not in sv.log()
    assert sv.log().count("could not start") == 1  # the reload's new worker, only
    sv.signal(signal.SIGTERM)
    assert sv.wait(15) == 0


def test_a_sighup_during_a_reload_is_applied_once_it_ends(
    start_supervisor: Start, tmp_path: Path
) -> None:
    """Pins: a second SIGHUP during a reload was dropped ("SIGHUP ignored: a
    reload is already in progress"), so a config change made meanwhile never
    took effect. Now it is applied once the first reload ends."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "gated_handlers.py").write_text(GATED)
    gate = tmp_path / "gate"
    sv = start_supervisor(
        workers=1,
        handlers="gated_handlers",
        RELOAD_GATE=str(gate),
        PYTHONPATH=os.pathsep.join([str(modules), str(Path(__file__).parent)]),
    )
    sv.wait_for_log("workers ready")
    gate.touch()  # the reload's new worker will wait at import
    sv.signal(signal.SIGHUP)
    sv.wait_for_log("SIGHUP: replacing 1 workers")
    sv.config_path.write_text(sv.config_path.read_text().replace("workers = 1", "workers = 2"))
    sv.signal(signal.SIGHUP)
    sv.wait_for_log("SIGHUP during a reload: applied once this reload ends")
    gate.unlink()
    wait_for(lambda: sv.log().count("reload finished") >= 2, 60, "both reloads")
    sv.wait_for_workers(2)
    assert "SIGHUP ignored" not in sv.log()
    assert sv.log().count("SIGHUP: the new configuration is in effect") == 2


def test_a_reload_says_what_waits_for_a_restart_and_applies_logging(
    start_supervisor: Start,
) -> None:
    """The keys a reload cannot change were kept silently; now each is named
    in the log. ``[logging]`` is applied, to the supervisor's own log too."""
    sv = start_supervisor(workers=1)
    sv.wait_for_log("workers ready")
    sv.config_path.write_text(
        sv.config_path.read_text()
        + "report_deadline = 33\nlease_seconds = 40\nworker_id = 'renamed'\n"
        + '[logging]\nformat = "json"\n'
    )
    sv.signal(signal.SIGHUP)
    wait_for(lambda: '"message": "reload finished"' in sv.log(), 30, "a JSON log line")
    log = sv.log()
    for key, old in (("report_deadline", "600.0"), ("lease_seconds", "0")):
        assert (
            f"SIGHUP: supervisor.{key} changes take effect at the next restart (still {old})"
            in (log)
        )
    assert "SIGHUP: supervisor.worker_id changes take effect at the next restart" in log
    lines = [line for line in log.splitlines() if "reload finished" in line]
    assert json.loads(lines[-1])["logger"] == "workflow_sdk.supervisor"
