"""Real cgroups for the tests that put a process under a CPU quota.

This project's machines have a writable cgroup v1 ``cpu`` controller as
root; elsewhere the test is skipped and says why. Every cgroup made here is
removed, whatever happens.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from workflow_sdk.cpus import find_cgroup_mount, parse_mountinfo, parse_proc_cgroup


def v1_cpu_cgroup_dir() -> Path:
    """This process's own cgroup directory in the v1 ``cpu`` hierarchy (skip if none)."""
    membership = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    mount = find_cgroup_mount(parse_mountinfo(Path("/proc/self/mountinfo").read_text()), "v1")
    if mount is None or membership.v1_cpu is None:
        pytest.skip("cgroup quota test skipped: no cgroup v1 cpu controller is mounted here")
    own = membership.v1_cpu
    if mount.root != "/" and own.startswith(mount.root):
        own = own[len(mount.root) :]
    return Path(mount.mount_point) / own.lstrip("/")


def _rmdir(path: Path) -> None:
    # A cgroup whose last task just exited can be busy for a moment.
    deadline = time.monotonic() + 10
    while path.exists():
        try:
            path.rmdir()
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def cgroups(*relative: str) -> Iterator[list[Path]]:
    """Make nested cgroups under this process's own; remove them all afterwards."""
    parent = v1_cpu_cgroup_dir()
    made: list[Path] = []
    try:
        for name in relative:
            path = parent / name
            try:
                path.mkdir()
            except OSError as exc:
                pytest.skip(f"cgroup quota test skipped: cannot create a cgroup in {parent}: {exc}")
            made.append(path)
        yield made
    finally:
        for path in reversed(made):
            _rmdir(path)


def set_quota(cgroup: Path, quota_us: int, period_us: int = 100_000) -> None:
    (cgroup / "cpu.cfs_period_us").write_text(str(period_us))
    (cgroup / "cpu.cfs_quota_us").write_text(str(quota_us))
