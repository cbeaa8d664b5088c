"""Applying the faults of a schedule to the running system.

``Injector.run`` walks the schedule in time order; each fault runs in a
thread of its own (it begins, waits its duration, ends) and leaves an
``audit.Injection`` saying what was done to what and when. A fault that
cannot be done at its moment (no busy worker to kill, the target restarting)
is recorded as skipped with the reason, not retried: the run stays
replayable in what it tries.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from chaos import schedule
from chaos.audit import Injection, read_runlog
from chaos.cluster import Supervisor, busy_workers, wait_until
from chaos.schedule import Fault
from chaos.toxiproxy import Toxiproxy

log = logging.getLogger("chaos")


@dataclass
class Target:
    """What the injector may act on."""

    supervisors: dict[str, Supervisor]
    runlog: Path
    #: The LocalEngine (None against a real engine).
    engine: Any = None
    proxy: Toxiproxy | None = None
    #: supervisor name -> its engine proxy's name, its broker proxy's name
    engine_proxy: dict[str, str] = field(default_factory=dict)
    broker_proxy: dict[str, str] = field(default_factory=dict)
    broker: Any = None
    #: Starts the extra supervisor of a join/leave fault; returns it.
    start_joiner: Callable[[], Supervisor] | None = None
    #: Called with (supervisor) to restart one after a kill or a stop.
    restart: Callable[[Supervisor], None] = lambda s: s.start()
    graceful: float = 10.0


class Injector:
    def __init__(self, target: Target, faults: list[Fault], seed: int) -> None:
        self.target = target
        self.faults = faults
        self.rng = random.Random(seed ^ 0x5EED)
        self.injections: list[Injection] = []
        self.skipped: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._engine_lock = threading.Lock()  # engine knobs: one fault at a time
        self._lanes: dict[str, threading.Lock] = {}

    # -- driving -----------------------------------------------------------------

    def run(self, t0: float) -> None:
        """Start each fault at its moment (from ``t0``, a ``time.monotonic``)."""
        for fault in self.faults:
            delay = t0 + fault.at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            thread = threading.Thread(
                target=self._one, args=(fault,), name=f"fault-{fault.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()

    def _one(self, fault: Fault) -> None:
        # A fault may take longer than drawn (a broker or a supervisor takes
        # seconds to start again): the next one of its lane waits for it.
        with self._lock:
            lane = self._lanes.setdefault(schedule.lane(fault), threading.Lock())
        with lane:
            try:
                getattr(self, f"_do_{fault.kind}")(fault)
            except Exception as exc:
                log.exception("fault %s on %s failed", fault.kind, fault.target)
                self._skip(fault, f"failed: {exc}")

    def _record(self, fault: Fault, target: str, start: float, detail: str = "") -> Injection:
        injection = Injection(fault.kind, fault.fault_class, target, start, time.time(), detail)
        with self._lock:
            self.injections.append(injection)
        log.info("injected %s on %s (%.1f s) %s", fault.kind, target, injection.end - start, detail)
        return injection

    def _skip(self, fault: Fault, why: str) -> None:
        with self._lock:
            self.skipped.append(
                {"kind": fault.kind, "target": fault.target, "at": fault.at, "why": why}
            )
        log.info("skipped %s on %s: %s", fault.kind, fault.target, why)

    def _sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def _sup(self, fault: Fault) -> Supervisor:
        return self.target.supervisors[fault.target]

    # -- network (toxiproxy) -----------------------------------------------------

    def _toxic(self, fault: Fault, proxy: str, kind: str, attributes: dict[str, Any]) -> None:
        assert self.target.proxy is not None
        start = time.time()
        name = self.target.proxy.add_toxic(proxy, kind, attributes)
        try:
            self._sleep(fault.duration)
        finally:
            self.target.proxy.remove_toxic(proxy, name)
        self._record(fault, fault.target, start, f"{kind} {attributes}")

    def _engine_proxy(self, fault: Fault) -> str:
        return self.target.engine_proxy[fault.target]

    def _do_latency(self, fault: Fault) -> None:
        self._toxic(fault, self._engine_proxy(fault), "latency", fault.params)

    def _do_bandwidth(self, fault: Fault) -> None:
        self._toxic(fault, self._engine_proxy(fault), "bandwidth", fault.params)

    def _do_slow_close(self, fault: Fault) -> None:
        self._toxic(fault, self._engine_proxy(fault), "slow_close", fault.params)

    def _do_slicer(self, fault: Fault) -> None:
        self._toxic(fault, self._engine_proxy(fault), "slicer", fault.params)

    def _do_reset_peer(self, fault: Fault) -> None:
        # Each connection is reset ``timeout`` ms after the toxic meets it: a
        # request sent meanwhile reached the engine, which acted; its answer is lost.
        self._toxic(fault, self._engine_proxy(fault), "reset_peer", fault.params)

    def _do_blackhole(self, fault: Fault) -> None:
        self._toxic(fault, self._engine_proxy(fault), "timeout", {"timeout": 0})

    def _down(self, fault: Fault, proxy: str) -> None:
        assert self.target.proxy is not None
        start = time.time()
        self.target.proxy.set_enabled(proxy, False)
        try:
            self._sleep(fault.duration)
        finally:
            self.target.proxy.set_enabled(proxy, True)
        self._record(fault, fault.target, start, "proxy disabled")

    def _do_proxy_down(self, fault: Fault) -> None:
        self._down(fault, self._engine_proxy(fault))

    def _do_broker_net(self, fault: Fault) -> None:
        proxy = self.target.broker_proxy[fault.target]
        mode = fault.params.get("mode")
        if mode == "down":
            self._down(fault, proxy)
        elif mode == "latency":
            self._toxic(fault, proxy, "latency", {"latency": 300, "jitter": 200})
        else:
            self._toxic(fault, proxy, "reset_peer", {"timeout": 0})

    # -- the engine's knobs (local engine only) -----------------------------------

    def _knob(self, fault: Fault, name: str, value: float) -> None:
        engine = self.target.engine
        with self._engine_lock:
            start = time.time()
            setattr(engine, name, value)
            try:
                self._sleep(fault.duration)
            finally:
                setattr(engine, name, 0.0)
        self._record(fault, "*", start, f"{name} = {value:.1f} s")

    def _do_slow_complete(self, fault: Fault) -> None:
        self._knob(fault, "complete_delay", float(fault.params["delay"]))

    def _do_fail_answer_delay(self, fault: Fault) -> None:
        self._knob(fault, "fail_answer_delay", float(fault.params["delay"]))

    def _burst(self, fault: Fault, applied: bool) -> None:
        p = fault.params
        start = time.time()
        self.target.engine.fail_next(p["route"], int(p["count"]), int(p["status"]), applied=applied)
        # The burst lasts until its answers are given (or the fault's time is up).
        given_before = self.target.engine.counters["errors_injected"]
        wait_until(
            lambda: (
                self.target.engine.counters["errors_injected"] - given_before >= int(p["count"])
            ),
            max(fault.duration, 30.0),
            0.05,
        )
        self._record(fault, "*", start, f"{p['count']} x {p['status']} on {p['route']}")

    def _do_burst_5xx(self, fault: Fault) -> None:
        self._burst(fault, applied=False)

    def _do_burst_5xx_applied(self, fault: Fault) -> None:
        self._burst(fault, applied=True)

    # -- processes ------------------------------------------------------------------

    def _busy(self, sup: Supervisor) -> list[int]:
        live = {p.pid for p in sup.workers()}
        return [
            pid for pid in busy_workers(read_runlog(self.target.runlog), sup.name) if pid in live
        ]

    def _do_kill_busy_worker(self, fault: Fault) -> None:
        sup = self._sup(fault)
        busy = wait_until(lambda: self._busy(sup), fault.duration + 10.0, 0.05)
        if not busy:
            self._skip(fault, "no busy worker")
            return
        self._kill_one_of(fault, busy, "busy worker", f"worker {{pid}} of {sup.name}")

    def _do_kill_idle_worker(self, fault: Fault) -> None:
        sup = self._sup(fault)

        def idle() -> list[int]:
            busy = set(self._busy(sup))
            return [p.pid for p in sup.workers() if p.pid not in busy]

        found = wait_until(idle, fault.duration + 5.0, 0.05)
        if not found:
            self._skip(fault, "no idle worker")
            return
        self._kill_one_of(fault, found, "idle worker", f"idle worker {{pid}} of {sup.name}")

    def _kill_one_of(self, fault: Fault, pids: list[int], what: str, detail: str) -> None:
        """SIGKILL one of ``pids`` (drawn from the seed); ``detail`` names it ({pid})."""
        pid = self.rng.choice(sorted(pids))
        start = time.time()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            self._skip(fault, f"the {what} had exited")
            return
        self._record(fault, f"pid:{pid}", start, detail.format(pid=pid))

    def _do_kill_parent(self, fault: Fault) -> None:
        sup = self._sup(fault)
        if not sup.alive:
            self._skip(fault, "not running")
            return
        start = time.time()
        old = sup.pid
        with sup.lock:
            sup.kill_parent()
            sup.reap(old)  # systemd: what is left of the unit goes with its main process
        self._sleep(fault.duration)
        self.target.restart(sup)
        self._record(fault, sup.name, start, f"parent {old} killed, restarted as {sup.pid}")

    def _do_stop_parent(self, fault: Fault) -> None:
        sup = self._sup(fault)
        if not sup.alive:
            self._skip(fault, "not running")
            return
        start = time.time()
        sup.signal(signal.SIGSTOP)
        try:
            self._sleep(fault.duration)
        finally:
            sup.signal(signal.SIGCONT)
        self._record(fault, sup.name, start, f"parent {sup.pid} stopped {fault.duration:.1f} s")

    def _do_term_restart(self, fault: Fault) -> None:
        sup = self._sup(fault)
        if not sup.alive:
            self._skip(fault, "not running")
            return
        start = time.time()
        old = sup.pid
        code = sup.stop(self.target.graceful + 15.0)
        self._sleep(fault.duration)
        self.target.restart(sup)
        self._record(fault, sup.name, start, f"parent {old} exited {code}, restarted as {sup.pid}")

    def _do_reload(self, fault: Fault) -> None:
        sup = self._sup(fault)
        if not sup.alive:
            self._skip(fault, "not running")
            return
        start = time.time()
        pool = sup.sections["supervisor"]
        before = (pool["workers"], list(pool["handlers"]))
        pool["workers"] = int(fault.params.get("workers", 2))
        pool["handlers"] = ["chaos.handlers:registry_ab"]  # chaos.slow dropped
        sup.write_config()
        sup.signal(signal.SIGHUP)
        try:
            self._sleep(fault.duration)
        finally:
            pool["workers"], pool["handlers"] = before[0], before[1]
            sup.write_config()
            sup.signal(signal.SIGHUP)
        self._record(fault, sup.name, start, f"workers {before[0]} -> {pool['workers']} and back")

    def _do_ttin_ttou(self, fault: Fault) -> None:
        sup = self._sup(fault)
        if not sup.alive:
            self._skip(fault, "not running")
            return
        start = time.time()
        sup.signal(signal.SIGTTIN)
        self._sleep(fault.duration / 2)
        sup.signal(signal.SIGTTOU)
        self._sleep(fault.duration / 2)
        self._record(fault, sup.name, start, "one worker more, then one fewer")

    # -- Kafka ----------------------------------------------------------------------

    def _do_broker_restart(self, fault: Fault) -> None:
        broker = self.target.broker
        start = time.time()
        broker.kill_process()
        self._sleep(fault.duration)
        broker.relaunch()
        self._record(fault, "*", start, f"broker down {time.time() - start:.1f} s")

    def _do_join_leave(self, fault: Fault) -> None:
        if self.target.start_joiner is None:
            self._skip(fault, "no joiner")
            return
        start = time.time()
        joiner = self.target.start_joiner()
        self._sleep(fault.duration)
        joiner.stop(self.target.graceful + 15.0)
        self._record(fault, "*", start, f"{joiner.name} joined, then left")


def live_pids(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)]
