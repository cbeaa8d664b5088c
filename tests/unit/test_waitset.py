"""WaitSet: the main loop's kept poll selector, on real pipes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from multiprocessing import Pipe

import pytest

from workflow_sdk.supervisor.loop.waitset import WaitSet


@pytest.fixture
def waitset() -> Iterator[WaitSet]:
    ws = WaitSet()
    yield ws
    ws.close()


def test_reports_only_the_ready_objects(waitset: WaitSet) -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        assert waitset.wait([r1, r2], 0) == []
        os.write(w2, b"x")
        assert waitset.wait([r1, r2], 0) == [r2]
        os.write(w1, b"x")
        assert sorted(waitset.wait([r1, r2], 0)) == sorted([r1, r2])
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_connections_and_end_of_file(waitset: WaitSet) -> None:
    a, b = Pipe()
    assert waitset.wait([a], 0) == []
    b.send("hello")
    assert waitset.wait([a], 0) == [a]
    assert a.recv() == "hello"
    b.close()
    # The peer closed: readable (end of file), so the loop sees it.
    assert waitset.wait([a], 0) == [a]
    a.close()


def test_a_changed_set_is_registered_again(waitset: WaitSet) -> None:
    r1, w1 = os.pipe()
    os.write(w1, b"x")
    assert waitset.wait([r1], 0) == [r1]
    os.close(r1)
    os.close(w1)
    # A new pipe may get the same descriptor numbers: still watched.
    r2, w2 = os.pipe()
    try:
        assert waitset.wait([r2], 0) == []
        os.write(w2, b"y")
        assert waitset.wait([r2], 0) == [r2]
        assert waitset.wait([], 0) == []
    finally:
        os.close(r2)
        os.close(w2)


def test_a_timeout_returns_nothing(waitset: WaitSet) -> None:
    r, w = os.pipe()
    try:
        assert waitset.wait([r], 0.01) == []
        assert waitset.wait([r], -1.0) == []  # a passed deadline: no wait, no error
    finally:
        os.close(r)
        os.close(w)
