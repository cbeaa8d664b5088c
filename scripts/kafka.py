"""A real, single-node Apache Kafka broker (KRaft) on 127.0.0.1 for tests, demo and bench.

    scripts/kafka fetch               fetch the broker's jars once into the cache
    scripts/kafka start [--topic T]   start a fresh broker, print its bootstrap
                                      address, run until Ctrl-C / TERM
    scripts/kafka classpath           print the cached classpath (fetches first)

The jars are Maven Central's ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, copied once by Maven (``dependency:copy-dependencies`` on a
generated pom) into ``${XDG_CACHE_HOME:-~/.cache}/rochallor-kafka/<version>``.
Java 17+ and Maven must be on PATH (``apt-get install openjdk-17-jre-headless
maven`` on Debian/Ubuntu).

Each start formats a fresh log directory (``kafka.tools.StorageTool``) and
runs ``kafka.Kafka`` as a combined broker+controller on two free loopback
ports. Stdlib only: the test fixture imports this file by path.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: The broker version: the newest ``kafka_2.13`` our package mirror serves.
KAFKA_VERSION = os.environ.get("ROCHALLOR_KAFKA_VERSION", "4.4.0")

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.rochallor</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <!-- The broker logs through SLF4J; this binding sends its log to stderr
         (kafka_2.13 declares no binding of its own). -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
</project>
"""
_SLF4J_VERSION = "1.7.36"  # the slf4j-api line kafka_2.13 resolves to


class KafkaSetupError(RuntimeError):
    """Java or Maven is missing, the fetch failed, or the broker did not start."""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "rochallor-kafka" / version


def missing_tools() -> list[str]:
    """The tools a broker needs that are not on PATH (``java``; ``mvn`` unless cached)."""
    missing = [] if shutil.which("java") else ["java"]
    if not (cache_dir() / "complete").exists() and not shutil.which("mvn"):
        missing.append("mvn")
    return missing


HOW_TO_GET_JAVA = (
    "the Kafka tier needs Java 17+ (and Maven for the one-time jar fetch): "
    "`apt-get install openjdk-17-jre-headless maven` on Debian/Ubuntu, "
    "then `scripts/kafka fetch`"
)


def fetch(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Copy the broker's jars into the cache once; return the jar directory.

    A directory is used only once the ``complete`` marker is written, so an
    interrupted fetch is redone rather than leaving a half classpath.
    """
    target = cache_dir(version)
    libs = target / "libs"
    if (target / "complete").exists():
        return libs
    if not shutil.which("mvn"):
        raise KafkaSetupError("Maven (`mvn`) is not on PATH: " + HOW_TO_GET_JAVA)
    target.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=target))
    try:
        (work / "pom.xml").write_text(_POM.format(version=version, slf4j=_SLF4J_VERSION))
        command = [
            "mvn",
            "--batch-mode",
            *(["--quiet"] if quiet else []),
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={work / 'libs'}",
        ]
        result = subprocess.run(command, capture_output=quiet, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stdout or "")[-3000:] + (result.stderr or "")[-2000:]
            raise KafkaSetupError(f"fetching kafka_2.13 {version} failed:\n{detail}")
        if not (target / "complete").exists():  # else a parallel fetch finished first
            if libs.exists():
                shutil.rmtree(libs)
            (work / "libs").rename(libs)
            (target / "complete").write_text(f"kafka_2.13 {version}\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


def classpath(version: str = KAFKA_VERSION) -> str:
    libs = fetch(version)
    return os.pathsep.join(str(jar) for jar in sorted(libs.glob("*.jar")))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Broker:
    """A running broker process; ``stop()`` ends and reaps it and removes its log dir."""

    bootstrap: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    started_in: float = 0.0
    #: Extra listeners: name -> (port it listens on, port it advertises).
    listeners: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: How to launch the broker again on the same log dir (``restart``).
    command: list[str] = field(default_factory=list, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill_process(self, timeout: float = 20.0) -> None:
        """Stop the broker process (TERM, KILL after ``timeout``) and keep its
        log dir, so that ``relaunch`` brings the same broker back."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def relaunch(self, ready_timeout: float = 90.0, attempts: int = 3) -> None:
        """Start the broker again on the same ports and log dir (after
        ``kill_process``). A start that fails is tried again (a port of the
        old process may linger a moment); the log dir is kept either way."""
        if self.process.poll() is None:
            return
        port = int(self.bootstrap.rsplit(":", 1)[1])
        for attempt in range(1, attempts + 1):
            mark = len(self.log_tail(10**9))
            with self.log_path.open("ab") as log_file:
                self.process = subprocess.Popen(
                    self.command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            try:
                _wait_started(self, port, ready_timeout, since=mark, stop_on_failure=False)
                return
            except KafkaSetupError:
                self.kill_process()
                if attempt == attempts:
                    raise
                time.sleep(1.0)


def _wait_started(
    broker: Broker, port: int, ready_timeout: float, since: int = 0, stop_on_failure: bool = True
) -> None:
    deadline = time.monotonic() + ready_timeout
    # The port opens a little before the broker is unfenced and serves
    # requests; "Kafka Server started" is logged once it does.
    while not (_answers(port) and "Kafka Server started" in broker.log_tail(10**9)[since:]):
        if broker.process.poll() is not None or time.monotonic() > deadline:
            tail = broker.log_tail(10**9)[since:][-4000:]
            reason = "exited" if broker.process.returncode is not None else "did not answer in time"
            if stop_on_failure:
                broker.stop()
            raise KafkaSetupError(f"the Kafka broker {reason}; its log ends with:\n{tail}")
        time.sleep(0.1)


def _server_properties(
    data: Path,
    port: int,
    controller_port: int,
    listeners: dict[str, tuple[int, int]] | None = None,
) -> str:
    extra = listeners or {}
    listen = "".join(f",{name}://127.0.0.1:{ports[0]}" for name, ports in extra.items())
    advertise = "".join(f",{name}://127.0.0.1:{ports[1]}" for name, ports in extra.items())
    protocols = "".join(f",{name}:PLAINTEXT" for name in extra)
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
            + listen,
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}" + advertise,
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" + protocols,
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Tests create their topics themselves, as an operator would: a
            # missing topic must stay missing.
            "auto.create.topics.enable=false",
            # A new consumer group starts at once instead of waiting 3 s for
            # more members (tests start one consumer at a time).
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def start(
    *,
    version: str = KAFKA_VERSION,
    ready_timeout: float = 90.0,
    advertised: dict[str, int] | None = None,
) -> Broker:
    """Start a fresh single-node broker; return once it accepts connections.

    ``advertised`` adds a listener per name (``{"SUP1": 40001}``) that
    listens on a free port of its own and advertises the given port: a TCP
    proxy on that port in front of the listener's port (``Broker.listeners``)
    then carries all of a client's traffic, metadata included, since a client
    that bootstraps through a listener is told that listener's address."""
    if not shutil.which("java"):
        raise KafkaSetupError("`java` is not on PATH: " + HOW_TO_GET_JAVA)
    cp = classpath(version)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rochallor-kafka-"))
    data = workdir / "data"
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    config = workdir / "server.properties"
    taken = {port, controller_port, *(advertised or {}).values()}
    listeners: dict[str, tuple[int, int]] = {}
    for name, advertised_port in (advertised or {}).items():
        listen_port = free_port()
        while listen_port in taken:
            listen_port = free_port()
        taken.add(listen_port)
        listeners[name] = (listen_port, advertised_port)
    config.write_text(_server_properties(data, port, controller_port, listeners))
    log_path = workdir / "broker.log"
    java = ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-cp", cp]
    formatted = subprocess.run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(config),
            "--cluster-id",
            _cluster_id(),
            "--ignore-formatted",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if formatted.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise KafkaSetupError(
            f"formatting the broker's log dir failed:\n{formatted.stdout}{formatted.stderr}"
        )
    command = [*java, "kafka.Kafka", str(config)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    broker = Broker(f"127.0.0.1:{port}", process, workdir, log_path, 0.0, listeners, command)
    _wait_started(broker, port, ready_timeout)
    broker.started_in = time.monotonic() - began
    return broker


def _cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.

    One in 64 of those starts with "-", and the storage tool's argument parser
    then reads it as an option ("--cluster-id: expected one argument"): such
    an id is drawn again, as Kafka's own ``Uuid.randomUuid`` does.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/kafka", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the broker's jars into the cache (once)")
    sub.add_parser("classpath", help="print the broker's classpath")
    sub.add_parser("start", help="start a fresh broker and run it until Ctrl-C / TERM")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            began = time.monotonic()
            libs = fetch(quiet=False)
            print(f"kafka_2.13 {KAFKA_VERSION} jars in {libs} ({time.monotonic() - began:.1f} s)")
        elif args.command == "classpath":
            print(classpath())
        else:
            broker = start()
            stop = []
            signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
            print(broker.bootstrap, flush=True)
            print(f"broker started in {broker.started_in:.1f} s; Ctrl-C stops it", file=sys.stderr)
            try:
                while not stop and broker.process.poll() is None:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
            finally:
                broker.stop()
    except KafkaSetupError as exc:
        print(f"scripts/kafka: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
