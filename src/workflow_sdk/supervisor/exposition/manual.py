"""The exit statuses, and what each signal does to the supervisor and each status means.

The exit statuses are defined here (``Supervisor.run`` returns them; the
package exports the first four), beside one table of their meanings and one
of the signals: ``rochallor-supervisor run --help`` and ``check --help``
print the tables (``cli``), and the documentation's reference pages are
generated from them (``docs/_gen``), so neither can drift from the other.
``tests/unit/test_manual.py`` checks that every signal the main loop handles
(``loop.signals.HANDLED_SIGNALS``) and every exit status has its row.

This module only describes; it acts on nothing. Whether a child process
ignores a signal is ``worker.sigpolicy``'s to decide: the reference reads it
from there.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

# Exit statuses of ``Supervisor.run`` and of the CLI.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BOOT_FAILED = 3
#: ``check`` only: the engine (or, in Kafka mode, the brokers) did not answer.
EXIT_ENGINE_UNREACHABLE = 4


@dataclass(frozen=True)
class SignalRow:
    """One row of the supervisor's signal table."""

    #: signal names without ``SIG``, as ``kill -s`` takes them
    names: tuple[str, ...]
    #: one line (or two) for ``--help``
    brief: str
    #: the whole story, for the reference (Markdown)
    details: str
    #: a row about a repeated signal (``second TERM``), not a signal of its own
    repeat: bool = False


SIGNALS: tuple[SignalRow, ...] = (
    SignalRow(
        ("TERM", "INT"),
        "stop claiming; running jobs get graceful_timeout to finish; exit 0",
        "stop claiming; running jobs get `graceful_timeout` (never past their lease) to "
        "finish and be reported; workers stop; exit 0",
    ),
    SignalRow(
        ("TERM", "INT"),
        "(a second one stops at once: running jobs are left to lease expiry)",
        "stop now: workers are killed; their jobs are left to the engine's lease expiry "
        "(failing them would burn a retry)",
        repeat=True,
    ),
    SignalRow(
        ("HUP",),
        "re-read the configuration and replace the workers one at a time;\n"
        "the pool size goes back to the file's supervisor.workers",
        "re-read the config file; if it is invalid, keep running on the old one and log "
        "why. Otherwise replace the workers one at a time (a new worker is ready before an "
        "old one leaves) so new handler code runs (not with `preload_handlers`), no job is "
        "lost and capacity never drops. The new configuration is on trial until the "
        "reload's first new worker is ready: only then does it take effect (pool size, poll "
        "interval, time limits, recycling and memory rules, `stale_check_interval`, "
        "`lease_renewal_interval`, `[logging]` for the workers and the supervisor itself); "
        "until then, and for good if that worker cannot boot (the reload is aborted), every "
        "worker started boots from the old one. `[engine]`, `[metrics]`, `[kafka]` and "
        "`supervisor.worker_id`, `report_deadline`, `lease_renewal`, `lease_seconds`, "
        "`preload_handlers` need a restart (in Kafka mode the consumers still follow the new "
        "handlers' job types: see [Kafka dispatch](kafka.md)): the log names each one that "
        "changed (`SIGHUP: supervisor.report_deadline changes take effect at the next "
        "restart (still 600.0)`). A `SIGHUP` during a reload is applied once that reload "
        "ends. The pool size goes back to the file's `workers`: a size set with "
        "`SIGTTIN`/`SIGTTOU` is not kept (as with gunicorn), and the log says so (`SIGHUP: "
        "pool size back to the configuration's 4 workers (SIGTTIN/SIGTTOU had made it 6)`); "
        "change `workers` in the file to keep a new size",
    ),
    SignalRow(
        ("TTIN", "TTOU"),
        "one worker more, one worker fewer (never below one)",
        "one worker more / one fewer (never below one)",
    ),
    SignalRow(
        ("USR2",),
        "pause intake if it runs, resume it if paused (workers stay up;\n"
        "see the pause and resume commands)",
        "pause intake if it runs, resume it if paused: no poll or Kafka fetch while "
        "paused, running jobs finish and are reported, workers stay up; `/readyz`, the "
        "process title and systemd's status say paused; a reload keeps it, a restart "
        "forgets it (the same as `rochallor-supervisor pause`/`resume`; see "
        "[Operations](operations.md))",
    ),
    SignalRow(
        ("USR1",),
        "ignored, with a warning (nothing to reopen: logs go to stderr)",
        "ignored, with one WARNING: logs go to stderr (journald), so there is no log file "
        "to reopen as gunicorn does on `USR1`; sent to the whole group it reaches no "
        "worker's job either (workers ignore it; the parent stops a job with a signal of "
        "its own, `SIGRTMIN+2`, and dumps a worker's stacks on `SIGRTMIN+1`)",
    ),
)


#: What a signal sent to the whole process group does (``--help``). The
#: reference says it per process, from ``worker.sigpolicy``.
PROCESS_GROUP_BRIEF = (
    "HUP, INT, TTIN, TTOU, USR1 and USR2 sent to the whole process group do the same; TERM sent "
    "to the group also reaches the workers and interrupts their jobs (systemd: "
    "KillMode=mixed sends it to the supervisor only)"
)


@dataclass(frozen=True)
class ExitStatus:
    """One exit status of ``rochallor-supervisor``."""

    code: int
    #: the constant's name (``workflow_sdk.supervisor`` exports the first four)
    constant: str
    #: what it means for ``run`` (empty: ``run`` never exits with it)
    run: str
    #: what it means for ``check`` (empty: ``check`` never exits with it)
    check: str
    #: what it means for ``status``, ``pause`` and ``resume`` (empty: never)
    remote: str = ""


EXIT_STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(
        EXIT_OK,
        "EXIT_OK",
        "stopped on request",
        "the configuration is valid, the handlers import and the engine answers /healthz",
        "done",
    ),
    ExitStatus(
        EXIT_ERROR,
        "EXIT_ERROR",
        'unexpected error (also: lease_renewal = "required" and the engine could not be '
        "asked whether it renews leases)",
        "unexpected error",
    ),
    ExitStatus(
        EXIT_CONFIG,
        "EXIT_CONFIG",
        "bad command line or configuration (every problem of the file at once, each naming "
        "its key), including a missing [supervisor] handlers, a metrics port in use "
        "(metrics.port: 127.0.0.1:9400 is in use), a "
        "metrics.dir others may write to, a token that cannot be sent and a configuration "
        'file every user may write; found at start-up: lease_renewal = "required" on an '
        "engine that cannot renew leases, an engine that dispatches through Kafka while "
        'dispatch = "poll", and (Kafka dispatch) a job type whose topic is missing',
        "bad command line or configuration (also: the metrics port is in use, metrics.dir "
        "is not the service user's alone, the file is writable by every user; Kafka "
        "dispatch: a job type's topic is missing)",
        "bad command line or configuration, or no [metrics] port to ask",
    ),
    ExitStatus(
        EXIT_BOOT_FAILED,
        "EXIT_BOOT_FAILED",
        "workers cannot start (the handlers fail to import, or the hooks' worker_init "
        "raises); also: parent_hooks = true and the hooks module cannot be imported in "
        "the supervisor",
        "the handlers (or the hooks module) cannot be imported, or register no job types",
    ),
    ExitStatus(
        EXIT_ENGINE_UNREACHABLE,
        "EXIT_ENGINE_UNREACHABLE",
        "",
        "the engine's /healthz did not answer 200, or (Kafka dispatch) the brokers did not "
        "answer; the reason is printed (connection refused, no answer within 10 s, "
        "/healthz answered 503 ...)",
        "the supervisor's metrics port cannot be reached",
    ),
)


#: Columns of ``--help`` text (argparse's raw epilogs are printed as written).
HELP_WIDTH = 86


def _column(text: str, first: str, width: int) -> list[str]:
    """``text`` in a column right of ``first`` (its own line breaks kept)."""
    lines = text.split("\n")
    out = [f"  {first:<{width}} {lines[0]}"]
    out.extend(f"  {'':<{width}} {line}" for line in lines[1:])
    return out


def signals_help() -> str:
    """The ``signals`` part of ``run --help``."""
    lines = ["signals (to the supervisor's pid):"]
    width = max(len(", ".join(r.names)) for r in SIGNALS) + 4
    for row in SIGNALS:
        lines.extend(_column(row.brief, "" if row.repeat else ", ".join(row.names), width))
    lines.extend(
        textwrap.wrap(PROCESS_GROUP_BRIEF, HELP_WIDTH, initial_indent="  ", subsequent_indent="  ")
    )
    return "\n".join(lines) + "\n"


def exit_statuses_help(command: str) -> str:
    """The ``exit statuses`` part of ``run --help`` or ``check --help``."""
    lines = ["exit statuses:"]
    for status in EXIT_STATUSES:
        meaning = {"run": status.run, "check": status.check}.get(command, status.remote)
        if meaning:
            lines.extend(
                textwrap.wrap(
                    meaning,
                    HELP_WIDTH,
                    initial_indent=f"  {status.code}  ",
                    subsequent_indent="     ",
                )
            )
    return "\n".join(lines) + "\n"


__all__ = [
    "EXIT_BOOT_FAILED",
    "EXIT_CONFIG",
    "EXIT_ENGINE_UNREACHABLE",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_STATUSES",
    "PROCESS_GROUP_BRIEF",
    "SIGNALS",
    "ExitStatus",
    "SignalRow",
    "exit_statuses_help",
    "signals_help",
]
