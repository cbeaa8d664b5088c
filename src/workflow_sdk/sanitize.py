"""What must not reach a log line, a process title or a message as it is.

Two things, each one function used everywhere it matters:

- ``redact_url`` / ``redact_text``: credentials written into a URL
  (``http://user:secret@engine``) become ``http://***@engine``, in the URL
  itself or anywhere in a text (an exception's message).
- ``escape_controls``: control characters (C0, DEL, C1, and the Unicode line
  and paragraph separators) become visible escapes (``\\n``, ``\\x1b``,
  ``\\u2028``), so text from outside (job ids, an engine's reason, a
  handler's error message) cannot start a forged log line, move a terminal's
  cursor or colour it. ``keep_newlines`` leaves line breaks for multi-line
  blocks (tracebacks) whose lines the caller indents itself.

Nothing here validates or rejects: it only changes what is shown.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: ``scheme://userinfo@``: the userinfo part has no "/", "@" or white space.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(code: int) -> str:
    char = chr(code)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_TABLE = {code: _escape(code) for code in _CONTROLS}
_TABLE_KEEP_NEWLINES = {code: text for code, text in _TABLE.items() if code != ord("\n")}
_ANY_CONTROL = re.compile("[" + "".join(re.escape(chr(c)) for c in _CONTROLS) + "]")


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as a visible escape."""
    if not _ANY_CONTROL.search(text):
        return text  # the common case: one scan, no copy
    return text.translate(_TABLE_KEEP_NEWLINES if keep_newlines else _TABLE)


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a control character (a line break included)."""
    return _ANY_CONTROL.search(text) is not None


def redact_url(url: str) -> str:
    """``url`` without the user name and password it may carry."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(rf"\1{REDACTED}@", text)


__all__ = ["REDACTED", "escape_controls", "has_controls", "redact_text", "redact_url"]
