"""``rochallor-supervisor``: run or check a worker supervisor from a TOML file.

Exit statuses: 0 stopped on request (or check passed); 1 unexpected error;
2 bad command line or configuration (a metrics port in use included); 3
handlers cannot be imported (workers cannot start); 4 the engine is
unreachable (``check`` only). ``run --help`` lists them with the signals and
the environment variables. ``status``, ``pause`` and ``resume`` talk to a
running supervisor through its metrics port (``remote``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from workflow_sdk import __version__
from workflow_sdk.errors import ConfigError
from workflow_sdk.sanitize import escape_controls, redact_text, redact_url
from workflow_sdk.supervisor import checks
from workflow_sdk.supervisor.config import SupervisorConfig, load_config, unhandled_job_types
from workflow_sdk.supervisor.exposition import remote
from workflow_sdk.supervisor.exposition.logs import configure_logging
from workflow_sdk.supervisor.exposition.manual import (
    EXIT_ENGINE_UNREACHABLE,
    exit_statuses_help,
    signals_help,
)
from workflow_sdk.supervisor.loop.arbiter import (
    EXIT_BOOT_FAILED,
    EXIT_CONFIG,
    EXIT_ERROR,
    Supervisor,
)
from workflow_sdk.supervisor.worker.handlers import load_registry
from workflow_sdk.supervisor.worker.hooks import WorkerHooks

# workflow_sdk.testing (the in-memory engine) is imported by the local-engine
# subcommand only: a production supervisor never loads it.

PROG = "rochallor-supervisor"

_SYS_PATH_NOTE = """\
module search path:
  the current directory is put first on sys.path (as `python -m` does), so that
  handler modules next to the configuration are found: a module there wins over
  an installed one of the same name. Run from a directory only trusted users can
  write to (systemd: WorkingDirectory=).
"""

_RUN_EPILOG = (
    signals_help()
    + "\n"
    + exit_statuses_help("run")
    + """\

environment:
  ROCHALLOR_ENGINE_URL    overrides engine.url
  ROCHALLOR_ENGINE_TOKEN  overrides engine.token (engine.token_env names another variable)
  ROCHALLOR_LOG_LEVEL     overrides logging.level
  PYTHONPATH              where handler modules are found, besides the current directory
  RUNTIME_DIRECTORY       set by systemd's RuntimeDirectory=: metrics files go to
                          $RUNTIME_DIRECTORY/metrics unless metrics.dir is set
  NOTIFY_SOCKET, WATCHDOG_USEC
                          set by systemd (Type=notify, WatchdogSec=); workers never see them
  workers see neither ROCHALLOR_ENGINE_TOKEN nor the variables named by engine.token_env
  and [kafka.config_env]

"""
)

_CHECK_EPILOG = (
    exit_statuses_help("check")
    + """\

warnings (printed, exit status unchanged): settings that weaken security, each with
its file and key: TLS checks off, a token sent in clear to another host, a secret in
a file others may read.

"""
)


_REMOTE_EPILOG = """\
the supervisor is asked through its metrics port: -c reads [metrics] bind and port
from the configuration (a bind of 0.0.0.0 or :: is asked on loopback); --url names
it (http://127.0.0.1:9400). pause and resume are accepted from this host only.

exit statuses:
  0  done
  1  the supervisor refused (the reason is printed)
  2  bad command line or configuration, or no [metrics] port to ask
  4  the supervisor cannot be reached (not running, another port)

"""


def _add_target(command: argparse.ArgumentParser) -> None:
    target = command.add_mutually_exclusive_group(required=True)
    target.add_argument("-c", "--config", help="path of the supervisor's TOML configuration")
    target.add_argument("--url", help="base URL of its metrics port (http://host:port)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run Rochallor job handlers in a pool of worker processes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the supervisor in the foreground",
        description="Run the supervisor in the foreground until a signal stops it.",
        epilog=_RUN_EPILOG + _SYS_PATH_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("-c", "--config", required=True, help="path of the TOML configuration")
    check = commands.add_parser(
        "check",
        help="validate the configuration, import the handlers, ping the engine",
        description="Validate the configuration, try the metrics port, import the "
        "handlers and ask the engine's /healthz; start nothing.",
        epilog=_CHECK_EPILOG + _SYS_PATH_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("-c", "--config", required=True, help="path of the TOML configuration")
    status = commands.add_parser(
        "status",
        help="show a running supervisor's workers, jobs and job source",
        description="Show each worker (pid, state, current job and for how long, memory, "
        "jobs done), the held jobs, the job source's state, and whether intake is paused.",
        epilog=_REMOTE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_target(status)
    status.add_argument("--json", action="store_true", help="print the /status JSON document")
    for action, text in (
        ("pause", "stop taking new jobs; the workers stay up and running jobs finish"),
        ("resume", "take jobs again after a pause"),
    ):
        command = commands.add_parser(
            action,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=_REMOTE_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_target(command)
    local = commands.add_parser(
        "local-engine",
        help="serve an in-memory engine for development (not for production); "
        f"see {PROG} local-engine --help",
    )
    del local  # listed for --help; main() hands its arguments over unparsed
    return parser


def _config_error(path: str, problem: str) -> None:
    text = problem if problem.startswith(path) else f"{path}: {problem}"
    print(f"{PROG}: configuration error\n{text}", file=sys.stderr)


def _load(path: str) -> SupervisorConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        _config_error(path, str(exc))
        return None


def _run(path: str) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    supervisor = Supervisor(config)
    supervisor.reload.log_setup = configure_logging  # a SIGHUP's [logging] applies here too
    try:
        code = supervisor.run()
    except ConfigError as exc:  # found at start: the metrics port is in use
        _config_error(path, str(exc))
        return EXIT_CONFIG
    if code == EXIT_BOOT_FAILED:
        # The whole traceback is in the log above; repeat the error itself.
        last_line = supervisor.fatal_error.strip().splitlines()[-1:] or ["unknown error"]
        print(f"{PROG}: workers cannot start: {escape_controls(last_line[0])}", file=sys.stderr)
    elif code != 0 and supervisor.fatal_error:
        print(f"{PROG}: {escape_controls(supervisor.fatal_error)}", file=sys.stderr)
    return code


def _check(path: str) -> int:
    config = _load(path)
    if config is None:
        return EXIT_CONFIG
    problem = checks.metrics_port_problem(config.metrics) or checks.metrics_dir_problem(
        config.metrics
    )
    if problem is not None:
        _config_error(path, problem)
        return EXIT_CONFIG
    print(f"{path}: configuration is valid")
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        registry = load_registry(config.supervisor.handlers)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_BOOT_FAILED
    except Exception as exc:
        # The handler code's own error: its traceback, without our frames.
        specs = ", ".join(config.supervisor.handlers)
        print(f"{path}: supervisor.handlers: {specs} failed to import:", file=sys.stderr)
        print(checks.user_traceback(exc), file=sys.stderr)
        return EXIT_BOOT_FAILED
    job_types = registry.job_types()
    if not job_types:
        print(f"{path}: supervisor.handlers: the handlers register no job types", file=sys.stderr)
        return EXIT_BOOT_FAILED
    print("job types: " + ", ".join(job_types))
    if config.supervisor.hooks and not _check_hooks(path, config.supervisor.hooks):
        return EXIT_BOOT_FAILED
    for warning in unhandled_job_types(config, job_types):
        print(f"warning: {warning}", file=sys.stderr)
    problem = checks.engine_problem(config.engine)
    engine = redact_url(config.engine.url)
    if problem is not None:
        print(f"engine {engine}: unreachable: {redact_text(problem)}", file=sys.stderr)
        return EXIT_ENGINE_UNREACHABLE
    print(f"engine {engine}: healthy")
    if config.engine.dispatch == "kafka":
        return _check_kafka(path, config, job_types)
    return 0


def _check_hooks(path: str, name: str) -> bool:
    """The hooks module imports (as a worker would); prints the hooks it defines."""
    try:
        hooks = WorkerHooks.load(name)
    except ConfigError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return False
    except Exception as exc:
        print(f"{path}: supervisor.hooks: {name} failed to import:", file=sys.stderr)
        print(checks.user_traceback(exc), file=sys.stderr)
        return False
    print(f"hooks: {name} ({', '.join(hooks.defined()) or 'none defined'})")
    return True


def _check_kafka(path: str, config: SupervisorConfig, job_types: list[str]) -> int:
    """The brokers answer and every job type's topic exists."""
    try:
        from workflow_sdk.kafka.consumer import (  # noqa: PLC0415 - optional dependency
            KafkaSourceError,
            check_topics,
        )
    except ImportError as exc:
        print(
            f'{path}: engine.dispatch: "kafka" needs the kafka extra '
            f"(pip install 'rochallor-sdk[kafka]'): {exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    brokers = ", ".join(config.kafka.brokers)
    try:
        missing = check_topics(config.kafka.brokers, job_types, dict(config.kafka.config))
    except KafkaSourceError as exc:
        print(f"kafka {brokers}: unreachable: {exc}", file=sys.stderr)
        return EXIT_ENGINE_UNREACHABLE
    if missing:
        print(
            f"kafka {brokers}: missing topic(s) {', '.join(missing)} (the engine does not "
            "create them: create one per job type)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    print(f"kafka {brokers}: topics " + ", ".join(f"workflow.jobs.{t}" for t in job_types))
    return 0


def _remote(args: argparse.Namespace) -> int:
    """``status``, ``pause``, ``resume``: ask a running supervisor."""
    base = args.url
    if base is None:
        config = _load(args.config)
        if config is None:
            return EXIT_CONFIG
        base, problem = remote.metrics_url(config.metrics)
        if base is None:
            _config_error(args.config, problem)
            return EXIT_CONFIG
    try:
        if args.command == "status":
            document = remote.fetch_status(base)
            if args.json:
                print(json.dumps(document, indent=2))
            else:
                print(remote.render_status(document))
        else:
            print(remote.control(base, args.command))
    except remote.RemoteError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        # 4, as check's unreachable engine: what was asked did not answer.
        return EXIT_ENGINE_UNREACHABLE if exc.unreachable else EXIT_ERROR
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["local-engine"]:
        from workflow_sdk.testing.__main__ import main as local_engine_main  # noqa: PLC0415

        return local_engine_main(arguments[1:], prog=f"{PROG} local-engine")
    args = _parser().parse_args(arguments)
    # Like `python -m`, make modules in the current directory importable,
    # so `handlers = ["myapp.handlers"]` works from a console script too.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command in ("status", "pause", "resume"):
            return _remote(args)
        return _check(args.config)
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception:
        logging.getLogger("workflow_sdk.supervisor").exception("unexpected error")
        return EXIT_ERROR


def entry_point() -> None:
    sys.exit(main())


__all__ = ["main"]
