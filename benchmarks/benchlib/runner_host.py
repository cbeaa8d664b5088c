"""``python -m benchlib.runner_host --url URL --parallelism N``: the threaded Runner.

Runs ``workflow_sdk.runner.Runner`` over the benchmark's handlers until
SIGTERM or SIGINT, logging to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys

from benchlib.handlers import registry
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.runner import Runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchlib.runner_host")
    parser.add_argument("--url", required=True)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One keep-alive connection per thread that may call at once, plus the poller.
    with RestEngineClient(args.url, timeout=10.0, pool_size=args.parallelism + 2) as client:
        runner = Runner(
            client, registry, parallelism=args.parallelism, poll_interval=args.poll_interval
        )
        runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
