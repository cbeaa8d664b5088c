"""Log lines and process titles: text from outside cannot forge a line (issue 21)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from workflow_sdk.supervisor.exposition import logs, titles

FORGED = "boom\n2099-01-01 00:00:00,000 CRITICAL workflow_sdk.supervisor[1]: forged\x1b[2J"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through ``configure_logging``'s handler to a buffer."""
    buffer = io.StringIO()
    saved_stderr, root = sys.stderr, logging.getLogger()
    saved = (list(root.handlers), root.level)
    sys.stderr = buffer
    try:
        logs.configure_logging("DEBUG", "text")
    finally:
        sys.stderr = saved_stderr
    logger = logging.getLogger("workflow_sdk.test_logs")
    try:
        yield logger, buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_a_line_break_in_an_argument_does_not_start_a_line(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    """Sequence: a job id / reason / error message with CR, LF and an ANSI
    escape is logged in the text format: one line, the characters escaped."""
    logger, buffer = capture
    logger.warning("job %s failed: %s", "id\r\n<0>x", FORGED)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "id\\r\\n<0>x" in lines[0]
    assert "boom\\n2099-01-01" in lines[0]
    assert "\\x1b[2J" in lines[0] and "\x1b" not in lines[0]


def test_unicode_line_separators_and_c1_controls_are_escaped(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture
    logger.info("a\u2028b\x85c\x7fd")
    (line,) = buffer.getvalue().split("\n")[:-1]
    assert line.endswith("a\\u2028b\\x85c\\x7fd")


def test_a_traceback_keeps_its_lines_indented_and_escaped(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    """Sequence: an exception whose message holds a forged line is logged with
    exc_info: the traceback stays multi-line and readable, but every one of
    its lines is indented (none can pass for a record) and its escapes shown."""
    logger, buffer = capture
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("handler failed")
    first, *block = buffer.getvalue().rstrip("\n").split("\n")
    assert first.endswith("handler failed")
    assert block[0] == "  Traceback (most recent call last):"
    assert all(line.startswith("  ") for line in block), block
    assert "  ValueError: boom" in block
    assert "  2099-01-01 00:00:00,000 CRITICAL workflow_sdk.supervisor[1]: forged\\x1b[2J" in block


def test_a_details_block_is_shown_below_its_line(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = capture
    logger.error("could not start", extra={logs.DETAILS: "line one\nline\rtwo\n"})
    assert buffer.getvalue().split("\n")[1:] == ["  line one", "  line\\rtwo", ""]


def test_json_lines_carry_the_details_in_the_message() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "failed %s", ("a\nb",), None)
    record.__dict__[logs.DETAILS] = "Traceback\n  File"
    entry = json.loads(logs.JsonLineFormatter().format(record))
    assert entry["message"] == "failed a\nb\nTraceback\n  File"


def test_worker_titles_escape_job_ids_and_types() -> None:
    """Sequence: a job whose id and type hold control characters is shown in
    the worker's process title: the title shows them escaped."""
    title = titles.worker_title(3, "busy type\x1b[31m job=a\nb")
    assert title == "worker-3 [rochallor] busy type\\x1b[31m job=a\\nb"
    assert titles.master_title("sv\n.toml", 2, 1) == (
        "supervisor [rochallor] sv\\n.toml workers=2 busy=1"
    )
