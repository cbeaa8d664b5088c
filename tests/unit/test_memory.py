"""workflow_sdk.memory: RSS, PSS and USS from smaps_rollup text.

A forked child sharing a big buffer is measured for real in
tests/process/test_resource_probes.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from workflow_sdk.memory import (
    MemoryReadError,
    ProcessMemory,
    parse_smaps_rollup,
    read_memory,
    smaps_rollup_supported,
)

SAMPLE = """\
5598260ba000-7ffef0c5a000 ---p 00000000 00:00 0                          [rollup]
Rss:                1688 kB
Pss:                 295 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Pss_File:            183 kB
Pss_Shmem:             0 kB
Shared_Clean:       1536 kB
Shared_Dirty:          0 kB
Private_Clean:        40 kB
Private_Dirty:       112 kB
Referenced:         1688 kB
Anonymous:           112 kB
Swap:                 12 kB
SwapPss:               0 kB
Locked:                0 kB
"""


def test_parse_a_rollup() -> None:
    assert parse_smaps_rollup(SAMPLE) == ProcessMemory(
        rss=1688 * 1024, pss=295 * 1024, uss=152 * 1024, swap=12 * 1024
    )


def test_missing_fields_are_none() -> None:
    # A zombie or a kernel thread has an empty file; an old kernel may lack Swap.
    assert parse_smaps_rollup("") == ProcessMemory(None, None, None, None)
    only_rss = "Rss: 8 kB\nPrivate_Dirty: 4 kB\n"
    assert parse_smaps_rollup(only_rss) == ProcessMemory(8192, None, None, None)


def test_lines_that_are_not_figures_are_skipped() -> None:
    text = "Rss: lots kB\nPss: 4 MB\nPss_Dirty 4 kB\nVmFlags: rd wr\nUss Guess: 1 kB\nRss: 2 kB\n"
    assert parse_smaps_rollup(text) == ProcessMemory(2048, None, None, None)


@pytest.mark.skipif(not smaps_rollup_supported(), reason="needs Linux 4.14+ (smaps_rollup)")
def test_read_this_process() -> None:
    memory = read_memory()
    assert memory.rss is not None and memory.pss is not None and memory.uss is not None
    assert 0 < memory.uss <= memory.rss
    assert memory.pss <= memory.rss
    assert read_memory(os.getpid()).rss is not None


def test_a_process_that_has_exited_is_a_clear_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid is free
    with pytest.raises(MemoryReadError, match="has exited") as caught:
        read_memory(child.pid)
    assert caught.value.errno in (errno.ENOENT, errno.ESRCH)


def test_a_missing_file_of_a_live_process_points_at_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel older than 4.14: /proc/PID is there, smaps_rollup is not."""
    monkeypatch.setattr(
        "workflow_sdk.memory.smaps_rollup_path", lambda pid="self": f"/proc/{pid}/no_such_file"
    )
    with pytest.raises(MemoryReadError, match=r"Linux 4\.14\+.*memory_info\(\)\.rss"):
        read_memory(os.getpid())
    assert isinstance(MemoryReadError(errno.ENOENT, "x"), OSError)
