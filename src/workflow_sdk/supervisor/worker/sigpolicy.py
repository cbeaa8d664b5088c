"""Signals whose meaning belongs to the supervisor, and the processes that ignore them.

A signal sent to the whole process group (``kill -HUP -- -PGID``,
``systemctl kill`` without ``--kill-whom=main``, a shell's job control)
reaches the fork server and every worker as well as the supervisor. Reload,
scaling, pausing and Ctrl-C are the supervisor's to act on: its children ignore those
signals, so a signal to the group does what the same signal to the
supervisor's pid does. Without this a group-wide SIGHUP kills the fork server
(every worker's exit status is read through it, so all of them look dead
mid-job), and a group-wide SIGTTIN stops the fork server and the workers.
"""

from __future__ import annotations

import signal

#: Acted on by the supervisor only (reload, scale up, scale down, Ctrl-C,
#: pause or resume intake), and SIGUSR1, which the supervisor only logs (a
#: worker's cancel signal is a real-time one of its own, ``CANCEL_SIGNAL``).
PARENT_ONLY: tuple[signal.Signals, ...] = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR2,
    signal.SIGUSR1,
)


def ignore_in_worker() -> None:
    """A worker ignores the supervisor's signals; SIGTERM keeps its meaning
    there (the worker sets its own handler: unwind the job, then exit)."""
    for signum in PARENT_ONLY:
        signal.signal(signum, signal.SIG_IGN)


def ignore_in_fork_server() -> None:
    """The fork server ignores SIGTERM too: a group-wide SIGTERM must not
    take it down while the supervisor drains (each worker's exit status is
    read through it, and replacements need it). It exits when the supervisor
    does, as its connection to the supervisor closes. Workers forked from it
    inherit these dispositions until they set their own."""
    ignore_in_worker()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


__all__ = ["PARENT_ONLY", "ignore_in_fork_server", "ignore_in_worker"]
