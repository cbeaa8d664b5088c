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


def main(argv: list[str] | None = None, prog: str = "python -m workflow_sdk.testing") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An in-memory Rochallor engine for tests and demos (not for production).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port (default %(default)s; 0: any free port)"
    )
    parser.add_argument(
        "--lease-seconds", type=float, default=30.0, help="job lease length (default 30)"
    )
    args = parser.parse_args(argv)
    if args.lease_seconds <= 0:
        parser.error("--lease-seconds must be > 0")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        engine = LocalEngine(args.host, args.port, args.lease_seconds).start()
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
