"""docs/tutorial.md runs as written.

Its fenced blocks, in page order, are a script:

- a block titled with a file name (``first_worker.py``, ``supervisor.toml``)
  is written into a fresh folder;
- a block titled ``terminal N`` holds commands, run there with bash and this
  interpreter's environment first on ``PATH`` (so ``python`` and
  ``rochallor-supervisor`` are the project's); ``rochallor-supervisor
  local-engine`` and ``rochallor-supervisor run`` keep running, in the
  background, until the end; every other command must exit 0;
- a block titled ``output`` lists lines that the command before it must
  have printed (in any order);
- ``setup`` (the install) and ``output (example)`` (times, pids) are shown,
  not run or checked.

Ports: the page uses 8080 for the engine and 9400 for ``/metrics``; the test
starts the engine on a free port (``--port 0``, which prints its address)
and the metrics server on one (``port = 0``, which the log names), and puts
those ports wherever the page says 8080 or 9400. Stopping is the page's
Ctrl-C: SIGINT to the supervisor, which must then exit 0.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BIN = Path(sys.executable).parent
LONG_RUNNING = ("rochallor-supervisor local-engine", "rochallor-supervisor run")


@dataclass(frozen=True)
class Block:
    language: str
    title: str
    text: str


def blocks(markdown: str) -> list[Block]:
    found = re.findall(r'^```(\w+)(?: title="([^"]*)")?\n(.*?)^```$', markdown, re.M | re.S)
    return [Block(language, title, text) for language, title, text in found]


def test_every_block_has_a_role() -> None:
    """A block the test would not run or check is a block nobody tests."""
    roles = re.compile(r"^(setup|terminal \d+|output|output \(example\)|[\w.-]+\.\w+)$")
    for block in blocks(TUTORIAL.read_text()):
        assert roles.match(block.title), f"untitled or unknown block: {block.text[:60]!r}"


class Background:
    """A long-running command of the page: its output collected by a thread."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s:\n{''.join(self.output)}"
                ) from None
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self, signum: int) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=40)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(5)


@pytest.fixture
def background() -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for process in reversed(started):  # the supervisor first, then the engine
        process.stop(signal.SIGKILL)


def test_tutorial_runs_as_written(tmp_path: Path, background: list[Background]) -> None:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("ROCHALLOR_ENGINE_URL", None)
    env.pop("ROCHALLOR_ENGINE_TOKEN", None)
    ports = {"8080": "8080", "9400": "0"}  # free ports once they are known
    files: dict[str, str] = {}
    last_output = ""
    supervisor: Background | None = None
    ran = 0

    def substitute(text: str) -> str:
        for page_port, port in ports.items():
            text = text.replace(page_port, port)
        return text

    def write_files() -> None:
        for name, text in files.items():
            (tmp_path / name).write_text(substitute(text))

    for block in blocks(TUTORIAL.read_text()):
        if block.title in ("setup", "output (example)"):
            continue
        if block.title == "output":
            printed = {line.rstrip() for line in last_output.splitlines()}
            for line in substitute(block.text).splitlines():
                if line.strip():
                    assert line.rstrip() in printed, f"{line!r} not in:\n{last_output}"
            continue
        if not block.title.startswith("terminal"):
            files[block.title] = block.text
            continue
        for command in block.text.splitlines():
            if not command.strip():
                continue
            write_files()
            ran += 1
            if command.startswith("rochallor-supervisor local-engine"):
                engine = Background(command.replace("--port 8080", "--port 0"), tmp_path, env)
                background.append(engine)
                ports["8080"] = engine.wait_for(r"^http://127\.0\.0\.1:(\d+)$").group(1)
                last_output = ""
            elif command.startswith("rochallor-supervisor run"):
                supervisor = Background(substitute(command), tmp_path, env)
                background.append(supervisor)
                ports["9400"] = supervisor.wait_for(r"metrics on http://[\d.]+:(\d+)/").group(1)
                supervisor.wait_for(r"all \d+ workers ready")
                last_output = ""
            else:
                result = subprocess.run(
                    ["bash", "-c", substitute(command)],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                last_output = result.stdout + result.stderr
                assert result.returncode == 0, f"{command}: exit {result.returncode}\n{last_output}"

    assert ran >= 6, "the tutorial lost its commands"
    assert supervisor is not None, "the tutorial no longer runs the supervisor"
    # "Press Ctrl-C in terminal 2": the supervisor drains and exits 0.
    assert supervisor.stop(signal.SIGINT) == 0, "".join(supervisor.output)
    log = "".join(supervisor.output)
    assert "supervisor stopped" in log
    assert "Traceback" not in log, log
    assert "use of fork()" not in log, log
