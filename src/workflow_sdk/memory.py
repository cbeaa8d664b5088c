"""A process's RSS, PSS and USS from ``/proc/PID/smaps_rollup``, in one read.

Why not RSS alone: pages shared between processes (a model loaded before a
fork server forks its workers, copy-on-write) count in full in the RSS of
every process that maps them. With 4 workers sharing a 200 MB model, each
worker's RSS shows the 200 MB, their sum says 800 MB, and a per-worker limit
on RSS recycles workers for memory they do not own. So:

- **RSS** (``Rss:``): every resident page the process maps, shared or not.
- **PSS** (``Pss:``): each page divided by the number of processes that map
  it. The PSS of all processes adds up to the memory they really use
  together: the number for totals and gauges.
- **USS** (``Private_Clean:`` + ``Private_Dirty:``): pages only this process
  maps, what its exit would give back: the number for a per-process limit.

``/proc/PID/smaps_rollup`` (Linux 4.14+) sums ``/proc/PID/smaps`` over all
mappings in the kernel: one small read, no per-mapping text to parse. The
kernel still walks the page tables to produce it, so it costs far more than
``statm`` (psutil's RSS) for a big process: measured 0.4 ms for a small
Python process and about 28 ms per GiB resident in 4 KiB pages. Fine every
few seconds per worker, not per job.

``read_memory(pid)`` raises ``MemoryReadError`` (an ``OSError``, errno kept)
when the file cannot be read: the process is gone (``ENOENT`` / ``ESRCH``), the
kernel is older than 4.14 (``ENOENT`` while ``/proc/PID`` exists), or access
is denied (another user's process). ``smaps_rollup_supported()`` says once
whether this kernel has the file; where it does not, the caller falls back
to psutil's ``memory_info().rss`` (RSS only). A field missing from the text
(a kernel thread or a zombie has an empty file) comes back as None. This
module does not decide anything about limits and keeps no state.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

KIB = 1024


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of one process, in bytes; None where the kernel gave no figure."""

    rss: int | None
    pss: int | None
    uss: int | None
    swap: int | None = None


class MemoryReadError(OSError):
    """``/proc/PID/smaps_rollup`` could not be read (message says why; ``errno`` kept)."""


def parse_smaps_rollup(text: str) -> ProcessMemory:
    """The figures of a ``smaps_rollup`` text (``Name:   123 kB`` lines), in bytes.

    USS is ``Private_Clean + Private_Dirty`` and is None unless both are
    present. Lines that are not ``Name: number kB`` (the first line names the
    address range) are skipped.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or " " in name:
            continue
        fields = rest.split()
        if len(fields) != 2 or fields[1] != "kB" or not fields[0].isdigit():
            continue
        values[name] = int(fields[0]) * KIB
    clean, dirty = values.get("Private_Clean"), values.get("Private_Dirty")
    return ProcessMemory(
        rss=values.get("Rss"),
        pss=values.get("Pss"),
        uss=clean + dirty if clean is not None and dirty is not None else None,
        swap=values.get("Swap"),
    )


def smaps_rollup_path(pid: int | str = "self") -> str:
    return f"/proc/{pid}/smaps_rollup"


def read_memory(pid: int | str = "self") -> ProcessMemory:
    """RSS, PSS and USS of process ``pid`` (default: this one). Raises ``MemoryReadError``."""
    path = smaps_rollup_path(pid)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise MemoryReadError(exc.errno, _why(exc, pid), path) from exc
    return parse_smaps_rollup(data.decode("ascii", "replace"))


def _why(exc: OSError, pid: int | str) -> str:
    detail = exc.strerror or str(exc)
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        if os.path.isdir(f"/proc/{pid}"):
            return (
                f"cannot read memory of process {pid}: {detail} "
                "(smaps_rollup needs Linux 4.14+; fall back to psutil's memory_info().rss)"
            )
        return f"cannot read memory of process {pid}: it has exited"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read memory of process {pid}: {detail} (another user's process?)"
    return f"cannot read memory of process {pid}: {detail}"


def smaps_rollup_supported() -> bool:
    """Whether this kernel has ``/proc/self/smaps_rollup`` (Linux 4.14+)."""
    return os.path.exists(smaps_rollup_path())


__all__ = [
    "MemoryReadError",
    "ProcessMemory",
    "parse_smaps_rollup",
    "read_memory",
    "smaps_rollup_supported",
]
