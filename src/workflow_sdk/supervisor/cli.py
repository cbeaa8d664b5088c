"""``rochallor-supervisor``: run or check a worker supervisor from a TOML file.

Exit statuses: 0 stopped on request (or check passed); 1 unexpected error;
2 bad command line or configuration; 3 handlers cannot be imported (workers
cannot start); 4 the engine is unreachable (``check`` only).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from workflow_sdk import __version__
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import ConfigError
from workflow_sdk.supervisor.arbiter import (
    EXIT_BOOT_FAILED,
    EXIT_CONFIG,
    EXIT_ERROR,
    Supervisor,
)
from workflow_sdk.supervisor.config import SupervisorConfig, load_config
from workflow_sdk.supervisor.handlers import load_registry
from workflow_sdk.supervisor.logs import configure_logging
from workflow_sdk.testing.__main__ import main as local_engine_main

EXIT_ENGINE_UNREACHABLE = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rochallor-supervisor",
        description="Run Rochallor job handlers in a pool of worker processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the supervisor in the foreground")
    run.add_argument("-c", "--config", required=True, help="path of the TOML configuration")
    check = commands.add_parser(
        "check", help="validate the configuration, import the handlers, ping the engine"
    )
    check.add_argument("-c", "--config", required=True, help="path of the TOML configuration")
    local = commands.add_parser(
        "local-engine",
        help="serve an in-memory engine for development (not for production); "
        "options as python -m workflow_sdk.testing --help",
    )
    del local  # listed for --help; main() hands its arguments over unparsed
    return parser


def _load(path: str) -> SupervisorConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"rochallor-supervisor: configuration error\n{exc}", file=sys.stderr)
        return None


def _run(path: str) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    supervisor = Supervisor(config)
    code = supervisor.run()
    if code == EXIT_BOOT_FAILED:
        # The whole traceback is in the log above; repeat the error itself.
        last_line = supervisor.fatal_error.strip().splitlines()[-1:] or ["unknown error"]
        print(
            f"rochallor-supervisor: workers cannot start: {last_line[0]}",
            file=sys.stderr,
        )
    return code


def _check(path: str) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    print(f"{path}: configuration is valid")
    try:
        registry = load_registry(config.supervisor.handlers)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_BOOT_FAILED
    except Exception:
        print(f"{path}: the handlers failed to import:", file=sys.stderr)
        traceback.print_exc()
        return EXIT_BOOT_FAILED
    job_types = registry.job_types()
    if not job_types:
        print(f"{path}: the handlers register no job types", file=sys.stderr)
        return EXIT_BOOT_FAILED
    print("job types: " + ", ".join(job_types))
    for job_type in sorted(set(config.job_types) - set(job_types)):
        print(f"warning: [job_types.{job_type!r}] has no handler", file=sys.stderr)
    with RestEngineClient(config.engine.url, config.engine.timeout) as client:
        if not client.health():
            print(f"engine {config.engine.url}: /healthz did not answer 200", file=sys.stderr)
            return EXIT_ENGINE_UNREACHABLE
    print(f"engine {config.engine.url}: healthy")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["local-engine"]:
        return local_engine_main(arguments[1:])
    args = _parser().parse_args(arguments)
    # Like `python -m`, make modules in the current directory importable,
    # so `handlers = ["myapp.handlers"]` works from a console script too.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "run":
            return _run(args.config)
        return _check(args.config)
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception:
        logging.getLogger("workflow_sdk.supervisor").exception("unexpected error")
        return EXIT_ERROR


def entry_point() -> None:
    sys.exit(main())


__all__ = ["main"]
