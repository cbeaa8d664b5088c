"""The HTTP/1.1 answer reader of LeanJobClient, fed through a socket pair."""

from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from workflow_sdk.client.http11 import Answer, CutAnswer, read_answer


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def _read(pair: tuple[socket.socket, socket.socket], data: bytes, *, end: bool = False) -> Answer:
    ours, theirs = pair
    theirs.sendall(data)
    if end:
        theirs.shutdown(socket.SHUT_WR)
    return read_answer(ours)


def test_content_length_body(pair: tuple[socket.socket, socket.socket]) -> None:
    answer = _read(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert answer == Answer(200, "OK", b"hello", True)


def test_two_answers_in_a_row_on_one_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    assert _read(pair, b"HTTP/1.1 204 No Content\r\n\r\n") == Answer(204, "No Content", b"", True)
    second = _read(pair, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    assert second.body == b"{}"


def test_chunked_body_with_extensions_and_trailers(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;name=x\r\n{"jo\r\nA\r\nbs": null}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    answer = _read(pair, data)
    assert answer.body == b'{"jobs": null}'
    assert answer.keep_alive is True


def test_interim_answers_are_skipped(pair: tuple[socket.socket, socket.socket]) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
    )
    assert _read(pair, data) == Answer(500, "Internal Server Error", b"", True)


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n", False),
        (b"HTTP/1.1 204 No Content\r\nConnection: Keep-Alive, Close\r\n", False),
        (b"HTTP/1.0 204 No Content\r\n", False),
        (b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n", True),
    ],
)
def test_keep_alive_rules(
    pair: tuple[socket.socket, socket.socket], head: bytes, keep: bool
) -> None:
    assert _read(pair, head + b"\r\n").keep_alive is keep


def test_body_without_length_ends_with_the_connection(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    answer = _read(pair, b"HTTP/1.1 200 OK\r\n\r\n<html>proxy</html>", end=True)
    assert answer == Answer(200, "OK", b"<html>proxy</html>", False)


def test_empty_reason_phrase(pair: tuple[socket.socket, socket.socket]) -> None:
    assert _read(pair, b"HTTP/1.1 599\r\nContent-Length: 0\r\n\r\n").reason == ""


def test_closed_before_any_byte(pair: tuple[socket.socket, socket.socket]) -> None:
    with pytest.raises(http.client.RemoteDisconnected):
        _read(pair, b"", end=True)


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
)
def test_not_http(pair: tuple[socket.socket, socket.socket], data: bytes) -> None:
    with pytest.raises(http.client.BadStatusLine):
        _read(pair, data, end=True)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
    ],
)
def test_cut_or_malformed_answer(pair: tuple[socket.socket, socket.socket], data: bytes) -> None:
    with pytest.raises(http.client.HTTPException) as info:
        _read(pair, data, end=True)
    assert not isinstance(info.value, http.client.RemoteDisconnected)


class _ResetAfter(io.RawIOBase):
    """A stream that gives ``data`` and then fails as a reset connection does."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._data:
            raise ConnectionResetError(104, "Connection reset by peer")
        size = min(len(buffer), len(self._data))
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


class _FakeSocket:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_ResetAfter(self._data))


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{",
        b"HTTP/1.1 200 OK\r\nContent-",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
def test_reset_after_the_status_line_is_a_cut_answer(data: bytes) -> None:
    with pytest.raises(CutAnswer) as info:
        read_answer(_FakeSocket(data))  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, ConnectionResetError)


@pytest.mark.parametrize("data", [b"", b"HTTP/1.1 2"])
def test_reset_before_the_status_line_stays_a_reset(data: bytes) -> None:
    # What LeanJobClient reads as a connection that was dead before answering.
    with pytest.raises(ConnectionResetError):
        read_answer(_FakeSocket(data))  # type: ignore[arg-type]


def test_silence_is_a_timeout(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, theirs = pair
    ours.settimeout(0.05)
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    with pytest.raises(TimeoutError):
        read_answer(ours)
