"""/healthz, /readyz, /status and the pause endpoints: their verdicts, routes and client.

The verdicts (``exposition.health``) are pure functions of what the main
loop published; the routes (``exposition.endpoints``) are a WSGI
application called here directly, then once over a real socket of a real
``MetricsServer``; the client side (``exposition.remote``) renders a
document and finds the port in a configuration.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily

from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor import cli
from workflow_sdk.supervisor.config import MetricsConfig
from workflow_sdk.supervisor.exposition import remote
from workflow_sdk.supervisor.exposition.endpoints import (
    LOCAL_ADDRESS_KEY,
    Endpoints,
    Probes,
    is_local_peer,
    status_document,
    worker_memory,
)
from workflow_sdk.supervisor.exposition.exporter import MetricsServer, PoolCollector
from workflow_sdk.supervisor.exposition.health import (
    ANSWER_MARGIN,
    Verdict,
    judge_liveness,
    judge_readiness,
)
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.exposition.status import PoolSnapshot, SourceView, WorkerView


def worker(slot: int, state: str = "idle", **fields: Any) -> WorkerView:
    return WorkerView(slot, 1000 + slot, state == "busy", None, state=state, **fields)


def snapshot(**changes: Any) -> PoolSnapshot:
    base: dict[str, Any] = {
        "taken_at": 100.0,
        "phase": "running",
        "paused": False,
        "target": 2,
        "workers": (worker(1), worker(2)),
        "jobs_held": 0,
        "held_limit": 4,
        "jobs_succeeded": 0,
        "jobs_failed": 0,
        "source": SourceView("poll", open=True, last_ok_at=99.5),
    }
    base.update(changes)
    return PoolSnapshot(**base)


# -- liveness ------------------------------------------------------------------------


def test_alive_while_the_loop_ticks_within_the_limit() -> None:
    verdict = judge_liveness(105.0, 104.5, ticked=True, snapshot=snapshot(), limit=10.0)
    assert verdict.ok and verdict.http_status == 200
    assert verdict.reason == "alive: the main loop ran 0.5 s ago"


def test_a_loop_that_has_not_ticked_within_the_limit_is_not_alive() -> None:
    """Sequence: the loop's last tick is 12 s old (it is wedged; the HTTP
    thread still answers): 503, saying how long ago."""
    verdict = judge_liveness(112.0, 100.0, ticked=True, snapshot=snapshot(), limit=10.0)
    assert not verdict.ok and verdict.http_status == 503
    assert verdict.reason == "the main loop has not run for 12.0 s (limit 10 s)"


def test_not_alive_before_the_loop_first_ran() -> None:
    """Start-up (imports, the fork server's preload) is not a live loop yet:
    a probe must wait for it (a startup probe), not pass at once."""
    verdict = judge_liveness(103.0, 100.0, ticked=False, snapshot=None, limit=10.0)
    assert not verdict.ok
    assert verdict.reason == "starting: the main loop has not run yet (start-up began 3.0 s ago)"


def test_a_wedged_source_thread_is_not_alive_as_for_the_watchdog() -> None:
    """The rule that withholds WATCHDOG=1 (``Intake.healthy``) fails /healthz too."""
    source = SourceView("poll", open=True, in_flight_since=40.0, responsive=False)
    verdict = judge_liveness(100.0, 99.9, ticked=True, snapshot=snapshot(source=source))
    assert not verdict.ok
    assert verdict.reason == "the job source's thread has not answered for 60 s (wedged)"


# -- readiness -------------------------------------------------------------------------


def ready(snap: PoolSnapshot | None, now: float = 100.0) -> Verdict:
    return judge_readiness(snap, now, engine_timeout=10.0)


def test_ready_with_a_worker_up_and_the_source_answering() -> None:
    verdict = ready(snapshot())
    assert verdict.ok and verdict.reason == "ready: 2 of 2 workers ready, the poll source answers"


def test_ready_with_one_worker_up_while_another_boots() -> None:
    verdict = ready(snapshot(workers=(worker(1, "busy"), worker(2, "booting"))))
    assert verdict.ok and "1 of 2 workers ready" in verdict.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"phase": "draining"}, "stopping: no new jobs are taken"),
        ({"paused": True}, "paused: no new jobs are taken (rochallor-supervisor resume)"),
        (
            {"workers": (worker(1, "booting"), worker(2, "booting"))},
            "no worker is ready (2 booting)",
        ),
        ({"workers": (worker(1, "stopping"),)}, "no worker is ready (0 booting)"),
        ({"source": SourceView("poll")}, "the job source is not open yet"),
    ],
)
def test_not_ready(changes: dict[str, Any], reason: str) -> None:
    verdict = ready(snapshot(**changes))
    assert not verdict.ok and verdict.http_status == 503
    assert verdict.reason == reason


def test_an_engine_outage_makes_it_not_ready() -> None:
    """Sequence: the last polls failed (the engine is down): not ready, with
    the error and when the next poll goes; liveness is not affected."""
    source = SourceView(
        "poll",
        open=True,
        last_ok_at=50.0,
        failures=3,
        last_error="EngineConnectionError: refused",
        next_request_at=101.5,
    )
    snap = snapshot(source=source)
    verdict = ready(snap)
    assert not verdict.ok
    assert verdict.reason == (
        "the job source is failing: 3 failed request(s) in a row, next in 1.5 s: "
        "EngineConnectionError: refused"
    )
    assert judge_liveness(100.0, 99.9, ticked=True, snapshot=snap).ok


def test_a_request_out_for_longer_than_the_engine_timeout_makes_it_not_ready() -> None:
    bound = 10.0 + ANSWER_MARGIN
    within = SourceView("poll", open=True, in_flight_since=100.0 - bound + 1)
    assert ready(snapshot(source=within)).ok
    late = SourceView("poll", open=True, in_flight_since=100.0 - bound - 1)
    verdict = ready(snapshot(source=late))
    assert not verdict.ok and verdict.reason == "the job source has not answered for 16 s"


def test_nothing_published_yet_is_not_ready() -> None:
    assert ready(None) == Verdict(False, "starting")


# -- who may pause ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote_address", "local", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.5", "0.0.0.0", True),
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "::", True),
        ("10.0.0.5", "10.0.0.5", True),  # this host, through its own address
        ("10.0.0.7", "10.0.0.5", False),
        ("::ffff:10.0.0.7", "10.0.0.5", False),
        ("fe80::1%eth0", "fe80::2%eth0", False),
        ("", "127.0.0.1", False),
        ("not an address", "127.0.0.1", False),
    ],
)
def test_pause_is_accepted_from_this_host_only(
    remote_address: str, local: str, allowed: bool
) -> None:
    assert is_local_peer(remote_address, local) is allowed


# -- the routes --------------------------------------------------------------------------


class Recorder:
    """Probes whose answers the test sets; records the control calls."""

    def __init__(self) -> None:
        self.health = Verdict(True, "alive")
        self.ready = Verdict(False, "paused")
        self.controls: list[tuple[str, str]] = []

    def probes(self) -> Probes:
        return Probes(
            health=lambda: self.health,
            ready=lambda: self.ready,
            status=lambda: {"workers": [], "paused": True},
            control=self.control,
        )

    def control(self, action: str, origin: str) -> Verdict:
        self.controls.append((action, origin))
        return Verdict(True, f"{action}d")


def metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"metrics for " + environ["PATH_INFO"].encode()]


def call(
    app: Endpoints, path: str, method: str = "GET", **environ: str
) -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split(maxsplit=1)[0]), dict(headers)

    env = {"PATH_INFO": path, "REQUEST_METHOD": method, **environ}
    body = b"".join(app(env, start_response))
    return seen["status"], seen["headers"], body


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(recorder: Recorder) -> Endpoints:
    return Endpoints(metrics_app, recorder.probes())


def test_healthz_and_readyz_answer_their_verdicts(app: Endpoints, recorder: Recorder) -> None:
    assert call(app, "/healthz")[::2] == (200, b"alive\n")
    status, headers, body = call(app, "/readyz")
    assert (status, body) == (503, b"paused\n")
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Cache-Control"] == "no-store"
    recorder.health = Verdict(False, "the main loop has not run for 12.0 s (limit 10 s)")
    assert call(app, "/healthz")[0] == 503
    assert call(app, "/healthz", "HEAD")[::2] == (503, b"")


def test_status_is_json(app: Endpoints) -> None:
    status, headers, body = call(app, "/status")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"workers": [], "paused": True}


def test_other_paths_are_the_metrics_as_before(app: Endpoints) -> None:
    assert call(app, "/metrics")[::2] == (200, b"metrics for /metrics")
    assert call(app, "/")[::2] == (200, b"metrics for /")


def test_pause_and_resume_from_this_host(app: Endpoints, recorder: Recorder) -> None:
    local = {"REMOTE_ADDR": "127.0.0.1", LOCAL_ADDRESS_KEY: "127.0.0.1"}
    assert call(app, "/pause", "POST", **local)[::2] == (200, b"paused\n")
    assert call(app, "/resume", "POST", **local)[::2] == (200, b"resumed\n")
    assert recorder.controls == [
        ("pause", "POST /pause from 127.0.0.1"),
        ("resume", "POST /resume from 127.0.0.1"),
    ]


def test_pause_is_refused_from_elsewhere_from_a_web_page_and_by_get(
    app: Endpoints, recorder: Recorder
) -> None:
    """Sequences: a POST from another machine (the metrics port is bound for
    a remote Prometheus); a POST a web page made (it carries Origin, even
    from this host); a GET (a link): none reaches the loop."""
    status, _, body = call(
        app, "/pause", "POST", REMOTE_ADDR="10.0.0.7", **{LOCAL_ADDRESS_KEY: "10.0.0.5"}
    )
    assert status == 403 and b"only accepted from this host (not from 10.0.0.7)" in body
    status, _, body = call(
        app,
        "/pause",
        "POST",
        REMOTE_ADDR="127.0.0.1",
        HTTP_ORIGIN="http://evil.example",
        **{LOCAL_ADDRESS_KEY: "127.0.0.1"},
    )
    assert status == 403 and b"from a web page" in body
    status, headers, _ = call(app, "/pause", "GET", REMOTE_ADDR="127.0.0.1")
    assert status == 405 and headers["Allow"] == "POST"
    assert call(app, "/healthz", "POST")[0] == 405
    assert recorder.controls == []


def test_the_server_routes_and_knows_the_address_a_connection_came_in_on(
    tmp_path: Path, recorder: Recorder
) -> None:
    """A real ``MetricsServer`` with probes: /healthz over a socket; POST
    /pause from loopback reaches the control (the handler put the local
    address in the environ); /metrics still scrapes."""
    server = MetricsServer(
        str(tmp_path), PoolCollector(SupervisorStats(), lambda: ()), recorder.probes()
    )
    port = server.start("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/healthz", timeout=10) as answer:
            assert answer.status == 200 and answer.read() == b"alive\n"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/readyz", timeout=10)
        assert refused.value.code == 503
        assert remote.control(base, "pause") == "paused"
        assert recorder.controls == [("pause", "POST /pause from 127.0.0.1")]
        with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
            assert b"workflow_supervisor_workers" in answer.read()
    finally:
        server.stop()


# -- the /status document ---------------------------------------------------------------------


def test_worker_memory_reads_every_worker_bytes_gauge_by_slot() -> None:
    """USS and PSS show once a gauge exposes them, with no change here."""
    rss = GaugeMetricFamily("workflow_supervisor_worker_rss_bytes", "", labels=["slot"])
    rss.add_metric(["1"], 100.0)
    rss.add_metric(["2"], 200.0)
    uss = GaugeMetricFamily("workflow_supervisor_worker_uss_bytes", "", labels=["slot"])
    uss.add_metric(["1"], 60.0)
    other = GaugeMetricFamily("workflow_supervisor_workers", "", 2)
    no_slot = GaugeMetricFamily("workflow_supervisor_worker_pss_bytes", "", labels=["pid"])
    no_slot.add_metric(["77"], 5.0)
    assert worker_memory([rss, uss, other, no_slot]) == {
        1: {"rss_bytes": 100, "uss_bytes": 60},
        2: {"rss_bytes": 200},
    }


def test_the_status_document() -> None:
    busy = worker(1, "busy", job_id="j-1", job_type="render", job_started=90.0, jobs_done=4)
    snap = snapshot(
        workers=(busy, worker(2, rss_bytes=5)),
        jobs_held=3,
        jobs_succeeded=7,
        jobs_failed=1,
        paused=True,
        source=SourceView(
            "kafka",
            open=True,
            last_ok_at=99.0,
            failures=2,
            last_error="boom",
            next_request_at=100.25,
        ),
    )
    document = status_document(
        snap,
        100.5,
        pid=42,
        config="sv.toml",
        health=Verdict(True, "alive"),
        ready=Verdict(False, "paused"),
        kafka=SourceStats(in_flight=2, offsets_pending=5, partitions_held_back=1),
        memory={1: {"rss_bytes": 111, "uss_bytes": 80}},
    )
    assert json.loads(json.dumps(document)) == document, "plain JSON types"
    assert document["paused"] is True and document["phase"] == "running"
    assert document["ready"] == {"ok": False, "reason": "paused"}
    first, second = document["workers"]
    assert first == {
        "slot": 1,
        "pid": 1001,
        "state": "busy",
        "job": {"id": "j-1", "type": "render", "running_seconds": 10.5},
        "jobs_done": 4,
        "rss_bytes": 111,
        "uss_bytes": 80,
    }
    assert second["job"] is None and second["rss_bytes"] == 5
    assert document["jobs"] == {"held": 3, "held_limit": 4, "succeeded": 7, "failed": 1}
    source = document["source"]
    assert source["failures"] == 2 and source["last_error"] == "boom"
    assert source["retry_in_seconds"] == 0.0 and source["last_ok_seconds_ago"] == 1.5
    assert source["kafka"]["in_flight"] == 2 and source["kafka"]["partitions_held_back"] == 1


# -- the client side -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        (MetricsConfig(port=9400), "http://127.0.0.1:9400"),
        (MetricsConfig(port=9400, bind="0.0.0.0"), "http://127.0.0.1:9400"),
        (MetricsConfig(port=9400, bind="::"), "http://[::1]:9400"),
        (MetricsConfig(port=9400, bind="fd00::5"), "http://[fd00::5]:9400"),
        (MetricsConfig(port=9400, bind="worker-1.internal"), "http://worker-1.internal:9400"),
    ],
)
def test_the_metrics_url_from_the_configuration(settings: MetricsConfig, url: str) -> None:
    assert remote.metrics_url(settings) == (url, "")


def test_no_metrics_url_without_a_fixed_port() -> None:
    url, why = remote.metrics_url(MetricsConfig())
    assert url is None and "metrics.port is not set" in why
    url, why = remote.metrics_url(MetricsConfig(port=0))
    assert url is None and "--url" in why


def test_the_status_table_shows_each_worker_and_escapes_what_came_from_outside() -> None:
    document = status_document(
        snapshot(
            workers=(
                worker(1, "busy", job_id="j\x1b[2J", job_type="render", job_started=-200.0),
                worker(2, jobs_done=9, rss_bytes=3 * 2**20),
            ),
        ),
        100.0,
        pid=42,
        config="sv.toml",
        health=Verdict(True, "alive: the main loop ran 0.1 s ago"),
        ready=Verdict(True, "ready"),
        memory={1: {"rss_bytes": 2**30, "pss_bytes": 2**29}},
    )
    text = remote.render_status(document)
    assert "\x1b" not in text and "j\\x1b[2J" in text
    lines = text.splitlines()
    assert lines[0] == "supervisor pid 42 (sv.toml): running"
    assert lines[1] == "  healthy: yes: alive: the main loop ran 0.1 s ago"
    header = lines[4].split()
    assert header == ["SLOT", "PID", "STATE", "JOB", "TYPE", "FOR", "RSS", "PSS", "DONE"]
    assert lines[5].split() == [
        *("1", "1001", "busy", "j\\x1b[2J", "render", "5m00s"),
        *("1.0", "GiB", "512.0", "MiB", "0"),
    ]
    assert lines[6].split()[:3] == ["2", "1002", "idle"] and lines[6].split()[-1] == "9"
    assert "3.0 MiB" in lines[6]
    assert lines[-1] == "job source: poll, last answer ok 0.5 s ago"


def test_status_without_a_metrics_port_says_so_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sv.toml"
    path.write_text('[engine]\nurl = "http://127.0.0.1:9"\n[supervisor]\nhandlers = ["x"]\n')
    assert cli.main(["status", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: metrics.port is not set" in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_of_a_supervisor_that_is_not_running_exits_4(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["pause", "--url", url]) == 4
    assert f"cannot reach the supervisor at {url}/pause" in capsys.readouterr().err


@pytest.fixture
def not_a_supervisor(tmp_path: Path) -> Iterator[str]:
    """A metrics port of a plain prometheus exporter: /status is metrics."""
    server = MetricsServer(str(tmp_path), PoolCollector(SupervisorStats(), lambda: ()))
    port = server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_status_of_something_else_says_what(
    not_a_supervisor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--url", not_a_supervisor]) == 4
    assert "did not answer a supervisor's status" in capsys.readouterr().err
