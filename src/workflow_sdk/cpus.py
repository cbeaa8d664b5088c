"""How many CPUs this process may really use, and where that number came from.

``os.cpu_count()`` counts the machine's CPUs. A process may use fewer: its
affinity mask (``taskset``, a cpuset, systemd's ``CPUAffinity=``) names the
CPUs it may run on, and a cgroup CPU quota (systemd's ``CPUQuota=``, a
container's ``--cpus``) caps how much CPU time it gets per period. A pool of
one busy worker per CPU sized from ``os.cpu_count()`` then runs more busy
processes than it has CPU time for.

``usable_cpus()`` takes the smaller of:

- the affinity mask (``os.sched_getaffinity``);
- the CPU quota of the process's own cgroup and of each of its ancestors up
  to the mount point (a limit set on a parent, e.g. a systemd slice or a
  container's root, applies to everything below it): cgroup v2 ``cpu.max``
  (``"max 100000"`` or ``"QUOTA PERIOD"``), found from the ``0::/path`` line
  of ``/proc/self/cgroup`` under the ``cgroup2`` mount; cgroup v1
  ``cpu.cfs_quota_us`` (``-1``: none) and ``cpu.cfs_period_us``, from the
  ``N:cpu,cpuacct:/path`` line under the mount of the ``cpu`` controller.
  Mount points come from ``/proc/self/mountinfo``, never assumed (a mount
  whose root is a sub-cgroup, as in a container, is translated).

A quota of 1.5 CPUs counts as 1 (rounded down), and the result is at least 1.
The answer carries a short text for a start-up line: ``"2 CPUs (affinity)"``,
``"1 CPU (cgroup v1 quota 150000/100000 us)"``.

The parsing functions are pure (text in, values out); the one function that
reads files takes a ``root`` directory standing for ``/`` so that tests can
build a fake tree. Missing or unreadable files mean "no limit from there";
a malformed one is ignored the same way (the kernel writes these files, and a
worker count must not fail start-up): ``UsableCpus.notes`` says what was
skipped. This module does not look at CPU shares or weights (a share is not a
cap), nor at the load of the machine, and it does not pin anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Files of the process's own cgroup membership and of the mounts it sees.
PROC_CGROUP = "proc/self/cgroup"
PROC_MOUNTINFO = "proc/self/mountinfo"


@dataclass(frozen=True)
class CgroupMembership:
    """Where ``/proc/self/cgroup`` puts this process: one path per hierarchy."""

    #: The cgroup v2 path (the ``0::/path`` line), or None.
    v2: str | None = None
    #: The cgroup v1 path of the hierarchy that has the ``cpu`` controller, or None.
    v1_cpu: str | None = None


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``, the fields this module needs."""

    #: The directory of the hierarchy that is mounted (``/`` or a sub-cgroup).
    root: str
    mount_point: str
    fstype: str
    super_options: tuple[str, ...]


@dataclass(frozen=True)
class CpuQuota:
    """A CFS quota: ``quota_us`` of CPU time every ``period_us``."""

    quota_us: int
    period_us: int
    #: ``"v1"`` or ``"v2"``.
    version: str
    #: The directory the limit was read from.
    directory: str

    @property
    def cpus(self) -> int:
        """Whole CPUs the quota allows: rounded down, at least 1."""
        return max(1, self.quota_us // self.period_us)

    def describe(self) -> str:
        if self.version == "v1":
            return f"cgroup v1 quota {self.quota_us}/{self.period_us} us"
        return f"cgroup v2 cpu.max {self.quota_us}/{self.period_us} us"


@dataclass(frozen=True)
class UsableCpus:
    """The verdict: how many CPUs, and why."""

    count: int
    #: Where the count came from: ``"affinity"``, ``"cpu_count"`` or a quota's text.
    source: str
    #: The CPUs the affinity mask allows (None where the platform has no mask).
    affinity: int | None = None
    #: The tightest quota found, whether or not it decided the count.
    quota: CpuQuota | None = None
    #: Files that were there but could not be used (malformed, unreadable).
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """``"2 CPUs (affinity)"``; a quota that did not decide is named after it."""
        noun = "CPU" if self.count == 1 else "CPUs"
        text = f"{self.count} {noun} ({self.source}"
        if self.quota is not None and self.source != self.quota.describe():
            text += f"; {self.quota.describe()} allows {self.quota.cpus}"
        return text + ")"


# -- pure parsing ------------------------------------------------------------


def parse_proc_cgroup(text: str) -> CgroupMembership:
    """Read ``/proc/self/cgroup``: ``hierarchy-ID:controllers:path`` per line.

    The v2 line is ``0::/path`` (hierarchy 0, no controllers). A v1 line lists
    its controllers separated by commas; the one naming ``cpu`` (alone or as
    ``cpu,cpuacct``) is the one whose quota applies. Lines that do not have
    three fields are skipped.
    """
    v2: str | None = None
    v1_cpu: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1_cpu = path
    return CgroupMembership(v2=v2, v1_cpu=v1_cpu)


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field_text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field_text)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of ``/proc/self/mountinfo``.

    A line is ``id parent major:minor root mount-point options [optional...]
    - fstype source super-options``; the optional fields end at the lone
    ``-``. Lines without it are skipped.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 6 or len(fields) < dash + 3:
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fields[dash + 1],
                super_options=tuple(fields[dash + 3].split(",")) if len(fields) > dash + 3 else (),
            )
        )
    return mounts


def find_cgroup_mount(mounts: list[Mount], version: str) -> Mount | None:
    """The ``cgroup2`` mount (``"v2"``), or the v1 mount with the ``cpu`` controller."""
    for mount in mounts:
        if version == "v2" and mount.fstype == "cgroup2":
            return mount
        if version == "v1" and mount.fstype == "cgroup" and "cpu" in mount.super_options:
            return mount
    return None


def cgroup_directories(mount: Mount, cgroup_path: str) -> list[str]:
    """The process's cgroup directory and its ancestors up to the mount point.

    Own directory first. ``cgroup_path`` is relative to the hierarchy's root;
    the mount shows the hierarchy from ``mount.root`` down, so that prefix is
    cut off. When the path is not under the mount's root (a cgroup namespace
    that the mount does not match), only the mount point itself is returned:
    it is the closest directory this process can see.
    """
    root = mount.root.rstrip("/")
    path = cgroup_path.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return [mount.mount_point]
    relative = path[len(root) :].strip("/")
    parts = relative.split("/") if relative else []
    directories = []
    for depth in range(len(parts), -1, -1):
        directories.append(os.path.join(mount.mount_point, *parts[:depth]))
    return directories


def parse_cpu_max(text: str) -> tuple[int, int] | None:
    """cgroup v2 ``cpu.max``: ``"max 100000"`` is no limit (None), else ``(quota, period)``.

    Raises ``ValueError`` when the text is neither.
    """
    fields = text.split()
    if len(fields) == 1 and fields[0] == "max":
        return None
    if len(fields) != 2:
        raise ValueError(f"cpu.max is {text.strip()!r}: expected 'max PERIOD' or 'QUOTA PERIOD'")
    quota, period = fields
    period_us = _positive_int(period, "cpu.max period")
    if quota == "max":
        return None
    return _positive_int(quota, "cpu.max quota"), period_us


def parse_cfs(quota_text: str, period_text: str) -> tuple[int, int] | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``: a quota of -1 is no limit.

    Raises ``ValueError`` on anything but integers (quota -1 or positive).
    """
    try:
        quota = int(quota_text.strip())
    except ValueError:
        raise ValueError(f"cpu.cfs_quota_us is {quota_text.strip()!r}: not an integer") from None
    if quota == -1:
        return None
    if quota <= 0:
        raise ValueError(f"cpu.cfs_quota_us is {quota}: expected -1 or a positive number")
    return quota, _positive_int(period_text, "cpu.cfs_period_us")


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{what} is {text.strip()!r}: not an integer") from None
    if value <= 0:
        raise ValueError(f"{what} is {value}: expected a positive number")
    return value


def decide(affinity: int | None, quota: CpuQuota | None, notes: tuple[str, ...] = ()) -> UsableCpus:
    """The smaller of the affinity count and the quota's whole CPUs (at least 1).

    Without an affinity mask, ``os.cpu_count()`` stands in for it. On a tie
    the quota is named: it is the limit an operator set on purpose.
    """
    if affinity is not None:
        base, base_source = max(1, affinity), "affinity"
    else:
        base, base_source = max(1, os.cpu_count() or 1), "cpu_count"
    if quota is not None and quota.cpus <= base:
        return UsableCpus(quota.cpus, quota.describe(), affinity, quota, notes)
    return UsableCpus(base, base_source, affinity, quota, notes)


# -- reading the files -------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _inside(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _quota_in(root: Path, directory: str, version: str) -> tuple[CpuQuota | None, str | None]:
    """The quota set in one cgroup directory: ``(quota or None, note or None)``."""
    folder = _inside(root, directory)
    try:
        if version == "v2":
            text = _read(folder / "cpu.max")
            if text is None:
                return None, None
            parsed = parse_cpu_max(text)
        else:
            quota_text = _read(folder / "cpu.cfs_quota_us")
            period_text = _read(folder / "cpu.cfs_period_us")
            if quota_text is None or period_text is None:
                return None, None
            parsed = parse_cfs(quota_text, period_text)
    except ValueError as exc:
        return None, f"{directory}: {exc}"
    if parsed is None:
        return None, None
    return CpuQuota(parsed[0], parsed[1], version, directory), None


def cgroup_quota(root: Path | str = "/") -> tuple[CpuQuota | None, tuple[str, ...]]:
    """The tightest CPU quota over this process's cgroups (v1 and v2) and their ancestors.

    Returns ``(quota or None, notes)``. On a hybrid system both hierarchies are
    read: the ``cpu`` controller lives in one of them, and the other has no
    quota file there.
    """
    base = Path(root)
    membership_text = _read(_inside(base, PROC_CGROUP))
    mountinfo_text = _read(_inside(base, PROC_MOUNTINFO))
    if membership_text is None or mountinfo_text is None:
        return None, ()
    membership = parse_proc_cgroup(membership_text)
    mounts = parse_mountinfo(mountinfo_text)
    found: list[CpuQuota] = []
    notes: list[str] = []
    for version, path in (("v2", membership.v2), ("v1", membership.v1_cpu)):
        mount = find_cgroup_mount(mounts, version) if path is not None else None
        if mount is None or path is None:
            continue
        for directory in cgroup_directories(mount, path):
            quota, note = _quota_in(base, directory, version)
            if quota is not None:
                found.append(quota)
            if note is not None:
                notes.append(note)
    if not found:
        return None, tuple(notes)
    # Tightest in CPU time, not in whole CPUs: 1.5 beats 1.9 though both round to 1.
    return min(found, key=lambda q: q.quota_us / q.period_us), tuple(notes)


def affinity_count() -> int | None:
    """The CPUs the affinity mask allows, or None where there is no mask."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    return len(getaffinity(0))


def usable_cpus(root: Path | str = "/", *, affinity: int | None = -1) -> UsableCpus:
    """How many CPUs this process may use, and where the number came from.

    ``root`` stands for ``/`` (tests build a fake tree). ``affinity`` defaults
    to this process's mask; tests pass a number, or None for "no mask".
    """
    mask = affinity_count() if affinity == -1 else affinity
    quota, notes = cgroup_quota(root)
    return decide(mask, quota, notes)


__all__ = [
    "CgroupMembership",
    "CpuQuota",
    "Mount",
    "UsableCpus",
    "affinity_count",
    "cgroup_directories",
    "cgroup_quota",
    "decide",
    "find_cgroup_mount",
    "parse_cfs",
    "parse_cpu_max",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "usable_cpus",
]
