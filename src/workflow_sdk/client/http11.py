"""Reads one HTTP/1.1 answer from a socket, for ``LeanJobClient``.

``http.client.HTTPResponse`` parses headers with the ``email`` package: about
20 us per answer, a tenth of a poll+complete cycle. The engine's answers are
small and plain, so this reader keeps only what a client of it needs: the
status, the reason phrase, the body (Content-Length, chunked, or up to the
end of the connection) and whether the connection may be kept.

Failures raise ``http.client``'s own exceptions (``RemoteDisconnected`` when
the connection ends before any byte of an answer, ``BadStatusLine`` for
something that is not HTTP, ``IncompleteRead`` for a cut body, ``OSError``
and ``TimeoutError`` from the socket), so callers translate them as they
would translate ``http.client``'s.
"""

from __future__ import annotations

import http.client
import socket
from typing import BinaryIO, NamedTuple


class CutAnswer(http.client.HTTPException):
    """The connection broke after the answer had begun (not a stale connection)."""


_MAX_LINE = 65536
_MAX_HEADERS = 100
_NO_BODY = frozenset({204, 304})


class Answer(NamedTuple):
    status: int
    reason: str
    body: bytes
    #: False when the answer ends the connection ("Connection: close", an
    #: HTTP/1.0 answer without keep-alive, or a body read to the end).
    keep_alive: bool


def _line(fp: BinaryIO) -> bytes:
    line = fp.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong("answer line")
    return line


def _status_line(fp: BinaryIO) -> tuple[str, int, str]:
    line = _line(fp)
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    text = line.decode("iso-8859-1").rstrip("\r\n")
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(repr(line[:100]))
    return version, int(code), reason.strip()


def _headers(fp: BinaryIO) -> dict[str, str]:
    """Header fields, names lowercased; a repeated field keeps its values joined by ','."""
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = _line(fp)
        if line in (b"\r\n", b"\n"):
            return fields
        if not line:
            raise http.client.IncompleteRead(b"", None)
        if line[:1] in (b" ", b"\t"):
            continue  # obsolete line folding: not used by the engine
        name, sep, value = line.decode("iso-8859-1").partition(":")
        if not sep:
            raise http.client.BadStatusLine(f"malformed header line {line[:100]!r}")
        key = name.strip().lower()
        value = value.strip()
        fields[key] = f"{fields[key]},{value}" if key in fields else value
    raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")


def _exactly(fp: BinaryIO, size: int) -> bytes:
    data = fp.read(size)
    if len(data) < size:
        raise http.client.IncompleteRead(data, size - len(data))
    return data


def _chunked(fp: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(fp)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise http.client.IncompleteRead(b"".join(parts)) from None
        if size == 0:
            break
        parts.append(_exactly(fp, size))
        _exactly(fp, 2)  # the CRLF after each chunk
    while _line(fp) not in (b"\r\n", b"\n", b""):
        pass  # trailer fields: not used
    return b"".join(parts)


def _length(fields: dict[str, str]) -> int | None:
    raw = fields.get("content-length")
    if raw is None:
        return None
    values = {value.strip() for value in raw.split(",")}
    if len(values) != 1:
        raise http.client.HTTPException(f"conflicting Content-Length: {raw!r}")
    (value,) = values
    if not value.isdigit():
        raise http.client.HTTPException(f"bad Content-Length: {raw!r}")
    return int(value)


def _body(fp: BinaryIO, version: str, status: int, reason: str, fields: dict[str, str]) -> Answer:
    tokens = {token.strip().lower() for token in fields.get("connection", "").split(",")}
    keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    if status in _NO_BODY:
        return Answer(status, reason, b"", keep)
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return Answer(status, reason, _chunked(fp), keep)
    length = _length(fields)
    if length is not None:
        return Answer(status, reason, _exactly(fp, length), keep)
    # No length: the body ends with the connection.
    return Answer(status, reason, fp.read(), False)


def read_answer(sock: socket.socket) -> Answer:
    """Read the next answer on ``sock`` (interim 1xx answers are skipped).

    A reset or close before the status line arrived raises as the socket
    does (or ``RemoteDisconnected``); after it, ``CutAnswer``, so that a
    caller can tell a connection that was dead before answering from one
    that died while answering. Timeouts raise ``TimeoutError`` in both.
    """
    with sock.makefile("rb") as fp:
        version, status, reason = _status_line(fp)
        try:
            fields = _headers(fp)
            while 100 <= status < 200:
                version, status, reason = _status_line(fp)
                fields = _headers(fp)
            return _body(fp, version, status, reason, fields)
        except TimeoutError:
            raise
        except OSError as exc:
            raise CutAnswer(f"connection lost while reading the answer: {exc!r}") from exc


__all__ = ["Answer", "CutAnswer", "read_answer"]
