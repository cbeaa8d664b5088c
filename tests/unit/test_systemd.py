"""The sd_notify client: addresses, watchdog rules, and silence without systemd."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_sdk.supervisor.exposition.systemd import SystemdNotifier


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environment({}, pid=1)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_messages_reach_a_path_socket(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path}, pid=42)
    assert notifier.ready("2 workers")
    assert sock.recv(1024) == b"READY=1\nSTATUS=2 workers"
    assert notifier.reloading()
    message = sock.recv(1024).decode()
    assert message.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(message.rsplit("=", 1)[1]) > 0
    assert notifier.stopping()
    assert sock.recv(1024) == b"STOPPING=1"
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"rochallor-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name}, pid=1)
        assert notifier.watchdog()
        assert sock.recv(1024) == b"WATCHDOG=1"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "43"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_the_period_for_our_pid(
    env: dict[str, str], expected: float | None, receiver: tuple[socket.socket, str]
) -> None:
    _, path = receiver
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path, **env}, pid=42)
    assert notifier.watchdog_interval == expected


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone"))
    assert notifier.enabled
    assert notifier.ready() is False
