"""``python -m workflow_sdk.testing``: run a local engine in the foreground.

Prints the engine's URL on one line, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from workflow_sdk.testing.engine import LocalEngine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_sdk.testing",
        description="An in-memory Rochallor engine for tests and demos (not for production).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument(
        "--lease-seconds", type=float, default=30.0, help="job lease length (default 30)"
    )
    parser.add_argument(
        "--dispatch",
        choices=("poll", "kafka"),
        default="poll",
        help="poll (default), or kafka: publish jobs to Kafka, answer polls 410",
    )
    parser.add_argument("--brokers", default="", help="Kafka brokers host:port[,...] (kafka mode)")
    args = parser.parse_args(argv)
    if args.lease_seconds <= 0:
        parser.error("--lease-seconds must be > 0")
    if args.dispatch == "kafka" and not args.brokers:
        parser.error("--dispatch kafka needs --brokers host:port[,...]")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        engine = LocalEngine(
            args.host,
            args.port,
            args.lease_seconds,
            dispatch=args.dispatch,
            brokers=args.brokers or None,
        ).start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(engine.url, flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
