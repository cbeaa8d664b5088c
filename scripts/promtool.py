"""promtool, built once into the user's cache like the Kafka jars.

    python3 scripts/promtool.py --path          build it once, print its path
    python3 scripts/promtool.py --path --check  print its path if built; exit 1 if not
    python3 scripts/promtool.py ARGS...         run it (building it first if needed),
                                                e.g. check rules deploy/prometheus/*.yml

promtool (Prometheus's rule checker and rule unit-test runner) is built from
the Go module proxy with ``go install
github.com/prometheus/prometheus/cmd/promtool@<PROMTOOL_VERSION>`` into
``${XDG_CACHE_HOME:-~/.cache}/rochallor-tools/promtool-<version>/``. The
module is large: the first build takes several minutes on two cores; later
calls only print the path. Go must be on PATH (``apt-get install golang`` on
Debian/Ubuntu, or the toolchain from go.dev); without it the build fails with
a message saying so, and the tests that need promtool skip with it.

Stdlib only: the tests import this file by path. It does not download
anything itself; ``go install`` does, from the proxy Go is configured with.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: github.com/prometheus/prometheus module version (Prometheus 3.x tags its Go
#: module v0.3xx.y): one that builds with the Go toolchain here.
PROMTOOL_VERSION = os.environ.get("ROCHALLOR_PROMTOOL_VERSION", "v0.316.0")
PROMTOOL_PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"


class ToolError(RuntimeError):
    """The tool cannot be had here (Go missing, build failed); the message says why."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "rochallor-tools"


def promtool_path(version: str = PROMTOOL_VERSION) -> Path:
    return cache_root() / f"promtool-{version}" / "promtool"


def promtool(version: str = PROMTOOL_VERSION, *, quiet: bool = True) -> Path:
    """The cached promtool, built first if it is not there yet."""
    binary = promtool_path(version)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None:
        raise ToolError(
            "promtool is built from source with Go, which is not on PATH "
            "(apt-get install golang, or the toolchain from go.dev)"
        )
    # Build into a scratch directory next to the target and rename it into
    # place, so that an interrupted build never leaves a half-written binary
    # that a later call would take as done.
    binary.parent.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".promtool-", dir=binary.parent.parent))
    env = dict(os.environ, GOBIN=str(scratch), CGO_ENABLED="0")
    try:
        result = subprocess.run(
            [go, "install", f"{PROMTOOL_PACKAGE}@{version}"],
            env=env,
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.STDOUT if quiet else None,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout or "")[-3000:]
            raise ToolError(f"go install {PROMTOOL_PACKAGE}@{version} failed:\n{tail}")
        built = scratch / "promtool"
        if not built.is_file():
            raise ToolError(f"go install {PROMTOOL_PACKAGE}@{version} left no binary")
        binary.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, binary)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return binary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--path"]:
        parser = argparse.ArgumentParser(prog="scripts/promtool.py --path")
        parser.add_argument("--check", action="store_true", help="only print it if built")
        parser.add_argument("--verbose", action="store_true", help="show go's build output")
        options = parser.parse_args(args[1:])
        if options.check:
            binary = promtool_path()
            if not binary.is_file():
                print(f"not built: {binary}", file=sys.stderr)
                return 1
            print(binary)
            return 0
        try:
            print(promtool(quiet=not options.verbose))
        except ToolError as exc:
            print(f"scripts/promtool.py: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        binary = promtool()
    except ToolError as exc:
        print(f"scripts/promtool.py: {exc}", file=sys.stderr)
        return 1
    return subprocess.run([str(binary), *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
