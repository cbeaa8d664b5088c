"""Toxiproxy (Shopify's TCP proxy for faults): built once, run, driven over HTTP.

The server is built from the Go module proxy with the machine's Go into
``${XDG_CACHE_HOME:-~/.cache}/rochallor-tools/toxiproxy-<version>/server``,
as ``scripts/kafka.py`` caches the broker's jars. Without Go the network
faults are skipped (``missing`` says how to get it). The HTTP API is driven
with the standard library; each proxy is one listening port in front of one
upstream, and a *toxic* is added to it for the time of a fault and removed
after (``disabled`` closes the listener instead).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

VERSION = "v2.5.0"
MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
HOW_TO_GET_GO = (
    "network faults skipped: toxiproxy is built from the Go module proxy and needs Go "
    "(`apt-get install golang-go`, or https://go.dev/dl/), then run scripts/chaos again"
)


class ToxiproxyError(RuntimeError):
    """The build failed, the server did not start, or the API refused a call."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "rochallor-tools" / f"toxiproxy-{VERSION.lstrip('v')}"


def binary() -> Path:
    return cache_dir() / "server"


def missing() -> str | None:
    """Why the proxy cannot be had (the line to print), or None."""
    if binary().exists() or shutil.which("go"):
        return None
    return HOW_TO_GET_GO


def build() -> Path:
    """The server binary, built once (``go install`` into the cache)."""
    target = binary()
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise ToxiproxyError(HOW_TO_GET_GO)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        env = {**os.environ, "GOBIN": str(work), "GOFLAGS": "-mod=mod"}
        result = subprocess.run(
            [go, "install", f"{MODULE}@{VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if result.returncode != 0 or not (work / "server").exists():
            raise ToxiproxyError(f"building toxiproxy failed:\n{result.stderr[-3000:]}")
        (work / "server").rename(target)  # atomic: a parallel build may win, same file
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Toxiproxy:
    """A running toxiproxy server on a free loopback port; ``stop()`` reaps it."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        # One API call at a time, toxics named uniquely (a name in use is a 409).
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self.process = subprocess.Popen(
            [str(build()), "-host", "127.0.0.1", "-port", str(self.port)],
            env={**os.environ, "LOG_LEVEL": "info"},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20.0
        while True:
            try:
                self._call("GET", "/version")
                break
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ToxiproxyError(f"toxiproxy did not start: {exc}") from exc
                time.sleep(0.05)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with self._lock, urllib.request.urlopen(request, timeout=30) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(
                f"toxiproxy {method} {path}: {exc.code} {exc.read()[:300]!r}"
            ) from exc
        except urllib.error.URLError as exc:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {exc.reason}") from exc
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:
            return raw.decode(errors="replace")  # /version answers plain text

    def create(self, name: str, upstream: str, listen_port: int | None = None) -> int:
        """A proxy ``name`` in front of ``upstream`` (host:port); its port."""
        port = listen_port or free_port()
        self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True},
        )
        return port

    def add_toxic(
        self, proxy: str, kind: str, attributes: dict[str, Any], stream: str = "downstream"
    ) -> str:
        name = f"{kind}_{stream}_{next(self._names)}"
        self._call(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": name,
                "type": kind,
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            },
        )
        return name

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        self._call("POST", f"/proxies/{proxy}", {"enabled": enabled})

    def reset(self) -> None:
        """Every proxy enabled, every toxic removed."""
        self._call("POST", "/reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
