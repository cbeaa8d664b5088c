"""/metrics cannot exhaust the parent (issue 21 item 1) and its directory is
the service user's alone (item 5).

Real sockets against a real ``MetricsServer``; real files and, for the
multiprocess values, a real child interpreter (prometheus_client reads its
directory from the environment at import).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from unit.fakes import make_slot
from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.exposition import exporter, multiproc
from workflow_sdk.supervisor.exposition.exporter import MetricsServer, PoolCollector, WorkerView
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.memory_watch import MemoryRules, sample_memory

# -- item 1: the server's bounds -------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MetricsServer]:
    metrics = MetricsServer(str(tmp_path), PoolCollector(SupervisorStats(), lambda: ()))
    metrics.start("127.0.0.1", 0)
    try:
        yield metrics
    finally:
        metrics.stop()


def half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
    return sock


def scrape(port: int) -> bytes:
    """The whole answer; b"" when the server closed the connection unanswered."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return b""
    return b"".join(chunks)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server ended the connection (EOF or reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connections_over_the_cap_are_closed_and_scrapes_resume(server: MetricsServer) -> None:
    """Sequence: MAX_CONNECTIONS half-sent requests hold every slot; one more
    connection is closed at once, unanswered (no thread, no descriptor kept);
    once the idle ones go, a scrape is answered."""
    idle = [half_sent(server.port) for _ in range(exporter.MAX_CONNECTIONS)]
    try:
        extra = half_sent(server.port)
        with extra:
            assert closed_by_server(extra)
        assert server._server.refused >= 1  # type: ignore[union-attr]
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30
    while True:  # the slots come back as the server sees the closed connections
        answer = scrape(server.port)
        if answer or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert answer.startswith(b"HTTP/1.0 200") and b"workflow_supervisor_workers" in answer


def test_an_idle_connection_times_out(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequence: a request is half sent and nothing more comes: the server
    closes the connection after its timeout (instead of holding it for ever)."""
    monkeypatch.setattr(exporter._QuietHandler, "timeout", 0.5)
    with half_sent(server.port) as sock:
        # Before: nothing ever came, and the client's own 30 s timeout raised.
        assert closed_by_server(sock)
    assert exporter.CONNECTION_TIMEOUT > 0


class _NoFiles:
    """A psutil.Process whose reads fail as they do without file descriptors."""

    def __init__(self) -> None:
        self.calls = 0

    def memory_info(self) -> Any:
        self.calls += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def oneshot(self) -> Any:
        return self

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_rss_sampling_survives_running_out_of_file_descriptors() -> None:
    """Sequence: the parent is out of file descriptors when it samples a
    worker's RSS: psutil raises a plain OSError (EMFILE), not psutil.Error;
    the sample is skipped (the last one kept) instead of ending the loop."""
    ps = _NoFiles()
    slot = make_slot(1, ps=ps, rss_bytes=123)
    verdict = sample_memory([slot], MemoryRules(hard=1.0))
    assert ps.calls == 1
    assert verdict.kill == [] and verdict.idle == []
    assert slot.rss_bytes == 123


def test_a_scrape_survives_running_out_of_file_descriptors() -> None:
    view = WorkerView(1, 4242, True, _NoFiles())  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(PoolCollector(SupervisorStats(), lambda: (view,)))
    text = generate_latest(registry).decode()
    assert "workflow_supervisor_workers 1.0" in text
    assert 'workflow_supervisor_worker_rss_bytes{slot="1"}' not in text


# -- item 5: the multiprocess directory -----------------------------------------------------


@pytest.fixture
def keep_env() -> Iterator[None]:
    saved = os.environ.get(multiproc.ENV_DIR)
    yield
    if saved is None:
        os.environ.pop(multiproc.ENV_DIR, None)
    else:
        os.environ[multiproc.ENV_DIR] = saved


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o720])
def test_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int, keep_env: None) -> None:
    """Sequence: metrics.dir is writable by its group or by everyone (sticky
    bit or not): refused with a ConfigError naming metrics.dir, nothing wiped."""
    path = tmp_path / "metrics"
    path.mkdir()
    path.chmod(mode)
    (path / "counter_1.db").write_bytes(b"x")
    with pytest.raises(ConfigError) as raised:
        multiproc.prepare_dir(str(path))
    assert str(raised.value).startswith(f"metrics.dir: {path} is writable by")
    assert (path / "counter_1.db").exists()


def test_a_directory_of_another_user_is_refused(tmp_path: Path, keep_env: None) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700)
    os.chown(path, 4321, -1)
    with pytest.raises(ConfigError, match=r"is owned by uid 4321, not by this user"):
        multiproc.prepare_dir(str(path))


def test_a_symbolic_link_to_a_directory_is_refused(tmp_path: Path, keep_env: None) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "metrics"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        multiproc.prepare_dir(str(link))


def test_a_new_directory_is_private_and_planted_links_are_removed_not_followed(
    tmp_path: Path, keep_env: None
) -> None:
    path = tmp_path / "new" / "metrics"
    assert multiproc.prepare_dir(str(path)) == str(path)
    assert path.stat().st_mode & 0o777 == 0o700
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (path / "counter_worker1.db").symlink_to(victim)
    multiproc.prepare_dir(str(path))
    assert not (path / "counter_worker1.db").is_symlink()
    assert victim.read_text() == "keep me"


_WRITE_A_COUNTER = """
import sys
from workflow_sdk.supervisor.exposition import multiproc
multiproc.use_identifier("worker1")
from prometheus_client import Counter
try:
    Counter("planted", "x").inc()
except OSError as exc:
    print("refused", exc.errno)
    sys.exit(0)
print("written")
"""


def test_metric_files_are_never_opened_through_a_symbolic_link(tmp_path: Path) -> None:
    """Sequence: a link named like a worker's counter file is in the directory
    when the worker creates its first counter: the file is not written
    through the link (the victim keeps its content)."""
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (path / "counter_worker1.db").symlink_to(victim)
    env = dict(os.environ, **{multiproc.ENV_DIR: str(path)})
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_A_COUNTER],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["refused", str(errno.ELOOP)], result.stderr
    assert victim.read_text() == "keep me"


def test_metric_files_are_created_private(tmp_path: Path) -> None:
    path = tmp_path / "metrics"
    path.mkdir(mode=0o700)
    env = dict(os.environ, **{multiproc.ENV_DIR: str(path)})
    subprocess.run(
        [sys.executable, "-c", _WRITE_A_COUNTER], env=env, timeout=60, check=True, stdout=-1
    )
    assert (path / "counter_worker1.db").stat().st_mode & 0o777 == 0o600
