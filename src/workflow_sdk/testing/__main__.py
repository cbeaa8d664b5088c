"""``python -m workflow_sdk.testing``: run a local engine in the foreground.

Prints the engine's URL on one line, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from types import FrameType

from workflow_sdk.testing.engine import DEFAULT_TIMER_INTERVAL, LocalEngine


def build_parser(prog: str = "python -m workflow_sdk.testing") -> argparse.ArgumentParser:
    """The command line's options (the documentation's CLI reference reads them too)."""
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
    parser.add_argument(
        "--timer-interval",
        type=float,
        default=DEFAULT_TIMER_INTERVAL,
        help=f"seconds between checks for due boundary timers (default {DEFAULT_TIMER_INTERVAL})",
    )
    parser.add_argument(
        "--complete-delay",
        type=float,
        default=0.0,
        help="seconds each job completion takes before its answer, to model a loaded "
        "database (default 0)",
    )
    parser.add_argument(
        "--dispatch",
        choices=("poll", "kafka"),
        default="poll",
        help="poll (default), or kafka: publish jobs to Kafka, answer polls 410",
    )
    parser.add_argument("--brokers", default="", help="Kafka brokers host:port[,...] (kafka mode)")
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin allowed to call the engine from a browser, e.g. "
        "http://localhost:3000 ('*': any); repeatable. Default: none",
    )
    return parser


def engine_from_args(
    argv: list[str] | None = None, prog: str = "python -m workflow_sdk.testing"
) -> LocalEngine:
    """The (unstarted) engine the command line asks for; exits 2 on bad options."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.lease_seconds <= 0:
        parser.error("--lease-seconds must be > 0")
    if args.timer_interval <= 0:
        parser.error("--timer-interval must be > 0")
    if args.complete_delay < 0:
        parser.error("--complete-delay must be >= 0")
    if args.dispatch == "kafka" and not args.brokers:
        parser.error("--dispatch kafka needs --brokers host:port[,...]")
    return LocalEngine(
        args.host,
        args.port,
        args.lease_seconds,
        timer_interval=args.timer_interval,
        complete_delay=args.complete_delay,
        dispatch=args.dispatch,
        brokers=args.brokers or None,
        cors_origins=args.cors_origin,
    )


def exposure_warning(host: str) -> str | None:
    """What to tell the user who makes the engine listen beyond this machine."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() == "localhost"
    if loopback:
        return None
    shown = host or "every interface"
    return (
        f"warning: listening on {shown}: the local engine has no authentication, so "
        "whoever can reach this port can read and change every workflow"
    )


def main(argv: list[str] | None = None, prog: str = "python -m workflow_sdk.testing") -> int:
    engine = engine_from_args(argv, prog)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    warning = exposure_warning(engine.host)
    if warning:
        print(warning, file=sys.stderr)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        engine.start()
    except OSError as exc:
        print(f"cannot listen on {engine.host}:{engine.port}: {exc}", file=sys.stderr)
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
