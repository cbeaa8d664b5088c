"""librdkafka's own lines go through the logger, not raw to stderr (issue 21 item 9).

A real child interpreter with JSON logs, real librdkafka clients and a real
refused connection (a port bound and not listening): librdkafka logs each
failed connect. No broker is needed for that.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

_CHILD = """
import sys, time
from workflow_sdk.supervisor.exposition.logs import configure_logging
configure_logging("INFO", "json")
from workflow_sdk.kafka.consumer import KafkaJobSource, KafkaSourceError, check_topics
brokers = sys.argv[1]
try:
    check_topics(brokers, ["t"], timeout=1.0)
except KafkaSourceError:
    pass
source = KafkaJobSource(brokers, ["t"])
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    source.fetch(1, timeout=0.2)
source.close()
"""


def test_librdkafka_lines_are_json_log_records() -> None:
    """Sequence: with JSON logs, the admin client (check_topics) and a
    consumer (KafkaJobSource.fetch) meet refused connections: every stderr
    line is one JSON record, librdkafka's under its own logger name (before:
    librdkafka printed "%3|...|FAIL|..." lines of its own)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        brokers = f"127.0.0.1:{sock.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, brokers],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on a raw line
    from_librdkafka = [r for r in records if r["logger"] == "workflow_sdk.kafka.librdkafka"]
    assert any("producer" in r["message"] for r in from_librdkafka), records  # admin client
    assert any("consumer" in r["message"] for r in from_librdkafka), records
    assert all("Connect to" in r["message"] for r in from_librdkafka if r["level"] == "ERROR")
