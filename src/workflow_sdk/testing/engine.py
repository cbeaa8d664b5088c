"""``LocalEngine``: the in-memory engine on a real HTTP port, and its test helpers."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing.server import ROUTE_NAMES, EngineHTTPServer
from workflow_sdk.testing.store import EngineState

if TYPE_CHECKING:
    from workflow_sdk.testing.kafka_dispatch import DispatchPublisher

T = TypeVar("T")

_FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: Seconds between looks for due boundary timers (the real engine: 5 s).
DEFAULT_TIMER_INTERVAL = 0.5


def default_sweep_interval(lease_seconds: float) -> float:
    """How often expired leases are looked for: a tenth of the lease, between
    50 ms and the real engine's 15 s. A job becomes claimable again between
    ``lease`` and ``lease + interval`` after its claim, never before."""
    return min(15.0, max(0.05, lease_seconds / 10))


class LocalEngine:
    """An in-memory Rochallor engine served over HTTP, for tests and demos.

    It speaks the engine's REST contract (quirks included) on ``url``. Nothing
    is kept on disk. ``stop()`` then ``start()`` brings it back on the same
    port with the same state, which is how tests simulate an engine outage.

    :param host: address to listen on.
    :param port: port to listen on; 0 picks a free one (kept across restarts).
    :param lease_seconds: how long a claimed job stays locked (the real
        engine: 30 s).
    :param sweep_interval: seconds between looks for expired leases; by
        default derived from the lease (see ``default_sweep_interval``).
    :param timer_interval: seconds between looks for due boundary timers
        (default 0.5 s). A timer fires between its duration and its duration
        plus this interval after its step started; the real engine looks
        every 5 s, so a ``PT2S`` timer fires there 2 to 7 s after.
    :param complete_delay: seconds each ``POST /v1/jobs/{id}/complete`` takes
        before it is applied and answered (default 0), to model a loaded
        database. Other requests go on meanwhile. Settable while running.
    :param heartbeat: model a newer engine with lease extension ("Lease
        extension" in the contract): ``POST /v1/jobs/{id}/heartbeat`` and
        ``leaseSeconds`` in polls. Default: a released engine (the route
        answers the plain-text 404).
    :param dispatch: ``"poll"`` (default) or ``"kafka"``: like an engine with
        ``WE_DISPATCH_MODE=kafka_outbox``, every claimable job is published to
        ``workflow.jobs.<jobType>`` on ``brokers`` and polls answer 410 (see
        ``workflow_sdk.testing.kafka_dispatch``; needs the ``kafka`` extra).
        Topics are not created: create them as an operator would.
    :param brokers: ``"host:port[,...]"`` (or a list), required in Kafka mode.
    :param kafka_config: more librdkafka settings for the publisher.
    :param cors_origins: web origins allowed to call it from a browser
        (``"http://localhost:3000"``, or ``"*"`` for any, as the real engine
        allows). Default: none, so that no page a browser opens can read or
        change the workflows of a developer's engine.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        lease_seconds: float = 30.0,
        *,
        sweep_interval: float | None = None,
        timer_interval: float = DEFAULT_TIMER_INTERVAL,
        complete_delay: float = 0.0,
        heartbeat: bool = False,
        dispatch: str = "poll",
        brokers: str | Sequence[str] | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        if sweep_interval is not None and sweep_interval <= 0:
            raise ValueError(f"sweep_interval must be > 0, got {sweep_interval}")
        if timer_interval <= 0:
            raise ValueError(f"timer_interval must be > 0, got {timer_interval}")
        if dispatch not in ("poll", "kafka"):
            raise ValueError(f'dispatch must be "poll" or "kafka", got {dispatch!r}')
        self.host = host
        self.cors_origins = tuple(cors_origins)
        self._port = port
        self.state = EngineState(lease_seconds, complete_delay)
        self.state.heartbeat = heartbeat
        self.sweep_interval = (
            sweep_interval if sweep_interval is not None else default_sweep_interval(lease_seconds)
        )
        self.timer_interval = float(timer_interval)
        self._server: EngineHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()
        self._bound_before = False
        self.dispatch = dispatch
        self.publisher: DispatchPublisher | None = None
        if dispatch == "kafka":
            # Imported here: confluent-kafka is an optional dependency.
            from workflow_sdk.testing.kafka_dispatch import (  # noqa: PLC0415
                POLL_GONE_BODY,
                DispatchPublisher,
            )

            text = brokers if isinstance(brokers, str) else ",".join(brokers or [])
            self.publisher = DispatchPublisher(text, kafka_config)
            self.state.job_listener = self.publisher.enqueue
            self.state.poll_gone = dict(POLL_GONE_BODY)

    # -- life cycle ----------------------------------------------------------

    def start(self) -> LocalEngine:
        """Listen and serve (no-op when already running); returns ``self``."""
        with self._lifecycle:
            if self._server is not None:
                return self
            server = self._bind()
            self._port = server.server_address[1]
            self._server = server
            self._stopping.clear()
            self._threads = [
                threading.Thread(
                    target=server.serve_forever,  # stop() wakes it (see _shutdown)
                    name=f"local-engine-{self._port}-serve",
                    daemon=True,
                ),
                threading.Thread(
                    target=self._sweep, name=f"local-engine-{self._port}-sweeper", daemon=True
                ),
                threading.Thread(
                    target=self._tick_timers, name=f"local-engine-{self._port}-timers", daemon=True
                ),
            ]
            for thread in self._threads:
                thread.start()
            if self.publisher is not None:
                self.publisher.start()
            return self

    def _bind(self) -> EngineHTTPServer:
        # Right after a stop the old socket may linger for a moment: a restart
        # retries its port briefly; a first start fails at once.
        deadline = time.monotonic() + 5.0
        while True:
            try:
                server = EngineHTTPServer(
                    (self.host, self._port), self.state, cors_origins=self.cors_origins
                )
                self._bound_before = True
                return server
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or not self._bound_before:
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving, close every connection, join the threads. Idempotent;
        the state is kept, and ``start()`` serves it again on the same port."""
        with self._lifecycle:
            server = self._server
            if server is None:
                return
            self._stopping.set()
            self._shutdown(server)
            server.server_close()
            server.close_connections()
            for thread in self._threads:
                thread.join(5.0)
            self._threads = []
            self._server = None
            if self.publisher is not None:
                self.publisher.stop()

    def _shutdown(self, server: EngineHTTPServer) -> None:
        """``server.shutdown()``, without waiting out the accept loop's poll
        interval: a connection to ourselves wakes its ``select()`` at once."""
        stopper = threading.Thread(
            target=server.shutdown, name=f"local-engine-{self._port}-stop", daemon=True
        )
        stopper.start()
        wake_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        deadline = time.monotonic() + 5.0
        while stopper.is_alive() and time.monotonic() < deadline:
            try:
                socket.create_connection((wake_host, self._port), timeout=0.5).close()
            except OSError:
                pass  # nothing to wake: the loop checks its flag by itself
            stopper.join(0.01)
        stopper.join()

    def _sweep(self) -> None:
        while not self._stopping.wait(self.sweep_interval):
            self.state.expire_leases()

    def _tick_timers(self) -> None:
        while not self._stopping.wait(self.timer_interval):
            self.state.fire_timers()

    def __enter__(self) -> LocalEngine:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The port served (the one first bound when ``port=0`` was asked)."""
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def lease_seconds(self) -> float:
        return self.state.lease_seconds

    @property
    def complete_delay(self) -> float:
        """Seconds each job completion takes (see the class docstring)."""
        return self.state.complete_delay

    @complete_delay.setter
    def complete_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"complete_delay must be >= 0, got {seconds}")
        self.state.complete_delay = float(seconds)  # read by each request as it comes

    @property
    def fail_answer_delay(self) -> float:
        """Seconds each ``POST /v1/jobs/{id}/fail`` answer is held after the
        fail was applied (default 0): the engine has acted (a retry is back
        in the queue) while the worker has not heard yet, as over a slow
        network. Other requests go on meanwhile. Settable while running."""
        return self.state.fail_answer_delay

    @fail_answer_delay.setter
    def fail_answer_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"fail_answer_delay must be >= 0, got {seconds}")
        self.state.fail_answer_delay = float(seconds)

    def fail_next(
        self, route: str, count: int = 1, status: int = 503, *, applied: bool = False
    ) -> None:
        """Make the next ``count`` requests of ``route`` answer ``status``: a
        burst of 5xx. ``route`` is ``"poll"``, ``"complete"``, ``"fail"``,
        ``"heartbeat"``, ``"instance"`` (``GET /v1/instances/{id}``),
        ``"history"``, ``"start"`` or ``"cancel"``. ``status`` 500 gets the
        engine's envelope with a timeout reason (``context deadline
        exceeded``), 502/503/504 a gateway's empty body. With ``applied`` the
        request is carried out first and only its answer is the error (the
        engine acted, the client cannot tell); otherwise nothing is done, as
        when a proxy in front answers. Added to those still pending; counted
        in ``counters["errors_injected"]`` as they are given."""
        if route not in ROUTE_NAMES:
            raise ValueError(
                f"route must be one of {', '.join(sorted(ROUTE_NAMES))}, got {route!r}"
            )
        if status not in (500, 502, 503, 504):
            raise ValueError(f"status must be 500, 502, 503 or 504, got {status}")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        with self.state.lock:
            self.state.error_bursts.setdefault(route, []).extend([(status, applied)] * count)

    def add_to_next_poll(self, *items: Any) -> None:
        """Make the next poll answer that claims a job carry ``items`` too,
        before its jobs, each once: raw JSON values (a job without an id, a
        field of the wrong type...), to test how a worker treats a malformed
        job beside good ones. They are not jobs of this engine: completing
        one gets the unknown-job 500."""
        with self.state.lock:
            self.state.poll_extras.extend(items)

    def client(self, timeout: float = 10.0) -> RestEngineClient:
        """A ``RestEngineClient`` for this engine (close it when done)."""
        return RestEngineClient(self.url, timeout=timeout)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        renewal = ", heartbeat=True" if self.heartbeat else ""
        return f"LocalEngine({self.url}, lease_seconds={self.lease_seconds}{renewal}, {state})"

    # -- inspection (engine side, not on the HTTP surface) ----------------------

    def instance(self, instance_id: str) -> dict[str, Any]:
        """An instance's summary, as ``GET /v1/instances/{id}`` gives it (a copy)."""
        return self.state.inspect_instance(instance_id)

    def instances(self) -> list[dict[str, Any]]:
        return self.state.inspect_instances()

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        """History items with the engine's PascalCase keys."""
        return self.state.inspect_history(instance_id)

    def jobs(
        self,
        status: str | None = None,
        *,
        job_type: str | None = None,
        instance_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs in creation order, with what the HTTP answer hides: ``status``
        (``PENDING``, ``LOCKED``, ``COMPLETED``, ``FAILED``, or ``CANCELLED``
        when an interrupting boundary timer ended its step), ``stepId``,
        ``deliveries`` (claims so far), ``completeCalls`` and ``failCalls``."""
        return self.state.inspect_jobs(status, job_type, instance_id)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.state.inspect_job(job_id)

    def complete_calls(self, job_id: str) -> int:
        """How many complete requests this job received (duplicates included)."""
        return int(self.state.inspect_job(job_id)["completeCalls"])

    def fail_calls(self, job_id: str) -> int:
        """How many fail requests this job received."""
        return int(self.state.inspect_job(job_id)["failCalls"])

    @property
    def counters(self) -> dict[str, int]:
        """Totals: ``polls``, ``empty_polls``, ``jobs_delivered``,
        ``complete_calls``, ``jobs_completed``, ``fail_calls``, ``jobs_retried``,
        ``jobs_failed``, ``leases_expired``, ``instances_started``,
        ``instances_cancelled``, ``timers_fired``, ``jobs_cancelled``,
        ``overlapping_completes``, ``overlapping_fails``...

        A copy, as a ``collections.Counter``: a total that has not happened
        yet reads 0 (``counters["polls"]`` before the first poll)."""
        with self.state.lock:
            return Counter(self.state.counters)

    @property
    def chain_errors(self) -> list[str]:
        """Next workflows that could not be started when an instance completed."""
        with self.state.lock:
            return list(self.state.chain_errors)

    def expire_leases(self) -> int:
        """Run the lease sweep now (only leases that have passed expire)."""
        return self.state.expire_leases()

    def fire_timers(self) -> int:
        """Run the timer check now (only timers that are due fire); returns how many fired."""
        return self.state.fire_timers()

    def pending_timers(self) -> list[dict[str, Any]]:
        """Boundary timers armed on steps that are still open, soonest first:
        ``instanceId``, ``stepId``, ``stepExecutionId``, ``duration``,
        ``interrupting``, ``targetStepId``, ``dueInSeconds``."""
        return self.state.pending_timers()

    def revoke_lease(self, job_id: str) -> None:
        """Put a LOCKED job back in the queue now, as if its lease had passed
        (its worker's next heartbeat gets "lease lost")."""
        self.state.revoke_lease(job_id)

    @property
    def heartbeat(self) -> bool:
        """Whether this engine extends leases (the heartbeat route exists)."""
        return self.state.heartbeat

    def reset(self) -> None:
        """Forget every definition, instance and job (the server keeps running)."""
        self.state.reset()

    # -- waiting (a condition variable, no sleeping) -------------------------

    def wait_until(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Wait until ``predicate()`` returns something truthy and return it.

        The predicate runs with the engine's lock held, after every change; it
        may call the inspection methods, but not the engine over HTTP (that
        request would wait for the lock until ``timeout``). Raises
        ``TimeoutError``.
        """
        result = self.state.wait_until(predicate, timeout)
        if not result:
            raise TimeoutError(f"condition not met within {timeout} s (last: {result!r})")
        return result

    def wait_for_instance(
        self,
        instance_id: str,
        status: str | Collection[str] = "COMPLETED",
        timeout: float = 10.0,
        *,
        fail_fast: bool = True,
    ) -> dict[str, Any]:
        """Wait until the instance has ``status`` (one or several) and return
        its summary. Raises ``TimeoutError`` naming the last status seen, or at
        once ``AssertionError`` when it finished in another status (unless
        ``fail_fast`` is false)."""
        wanted = {status} if isinstance(status, str) else set(status)
        return self.wait_for_instances([instance_id], wanted, timeout, fail_fast=fail_fast)[0]

    def wait_for_instances(
        self,
        instance_ids: Iterable[str],
        status: str | Collection[str] = "COMPLETED",
        timeout: float = 10.0,
        *,
        fail_fast: bool = True,
    ) -> list[dict[str, Any]]:
        """``wait_for_instance`` for several instances; summaries in the same order."""
        ids = list(instance_ids)
        wanted = {status} if isinstance(status, str) else set(status)
        last: dict[str, str] = {}
        wrong: list[dict[str, Any]] = []

        def check() -> list[dict[str, Any]] | None:
            summaries: list[dict[str, Any]] = []
            for instance_id in ids:
                try:
                    summary = self.state.inspect_instance(instance_id)
                except KeyError:
                    last[instance_id] = "unknown instance"
                    return None
                last[instance_id] = summary["status"]
                if summary["status"] not in wanted:
                    if fail_fast and summary["status"] in _FINAL_STATUSES:
                        wrong.append(summary)
                        return [summary]  # stop waiting
                    return None
                summaries.append(summary)
            return summaries

        result = self.state.wait_until(check, timeout)
        if wrong:
            summary = wrong[0]
            raise AssertionError(
                f"instance {summary['id']} is {summary['status']}, expected "
                f"{' or '.join(sorted(wanted))} (failureReason: {summary.get('failureReason')!r})"
            )
        if not result:
            shown = ", ".join(f"{i}: {s}" for i, s in last.items()) or "none seen"
            raise TimeoutError(
                f"instances not {' or '.join(sorted(wanted))} within {timeout} s ({shown})"
            )
        return result


__all__ = ["DEFAULT_TIMER_INTERVAL", "LocalEngine", "default_sweep_interval"]
