"""Logging set-up for the supervisor and its workers: text or JSON lines.

Log lines carry text from outside: job ids and types, instance ids, the
engine's reasons, handlers' error messages and tracebacks. In the text
format a line break in any of them would start a forged line (and under
journald a forged ``<0>`` prefix sets its priority), and terminal escapes
would pass through, so the text formatter escapes every control character
of the formatted line (``\\n``, ``\\x1b``...), whatever the call site. A
record's multi-line block (an exception's traceback, ``stack_info``, or the
text passed as ``extra={DETAILS: ...}``) keeps its line breaks, with its
other control characters escaped, and each of its lines is indented, so no
line of it can pass for a record of its own. The JSON format escapes by
construction (one object per line).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from workflow_sdk.sanitize import escape_controls

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
#: The record attribute of a multi-line block shown below the line (a
#: traceback received from a worker, the problems of a configuration):
#: ``log.error("...", extra={DETAILS: text})``.
DETAILS = "details"
#: Every line of a block starts with this, never with a record's own start.
BLOCK_INDENT = "  "


def _details(record: logging.LogRecord) -> str:
    value = record.__dict__.get(DETAILS)
    return str(value).rstrip() if value else ""


class TextLineFormatter(logging.Formatter):
    """The text format, with control characters escaped (see the module doc)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = escape_controls(self.formatMessage(record))
        blocks = [_details(record)]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        blocks.append(record.exc_text or "")
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            if block:
                lines = escape_controls(block.rstrip("\n"), keep_newlines=True).split("\n")
                text += "".join(f"\n{BLOCK_INDENT}{line}" for line in lines)
        return text


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line, for journald or ELK."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        details = _details(record)
        if details:
            message += "\n" + details
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": message,
        }
        for key in ("job_id", "job_type", "instance_id", "worker", "slot"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every record to stderr, replacing handlers set up earlier."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(TextLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(os.environ.get("ROCHALLOR_LOG_LEVEL", level).upper())


__all__ = ["BLOCK_INDENT", "DETAILS", "JsonLineFormatter", "TextLineFormatter", "configure_logging"]
