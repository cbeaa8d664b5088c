"""Gauges of exited workers: their files go, and a scrape survives it (issue 22, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from workflow_sdk.supervisor.exposition import multiproc


def _write(directory: Path, name: str, metric: str, value: float) -> None:
    values = MmapedDict(str(directory / name))
    values.write_value(mmap_key(metric, metric, [], [], "help"), value, 0.0)
    values.close()


def _names(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.db")}


def test_forget_gauges_deletes_every_gauge_mode_of_one_worker_only(tmp_path: Path) -> None:
    """Pins: nothing deleted a dead worker's gauge files (and mark_process_dead
    would delete only live* gauges, named by pid, not by slot)."""
    for name in (
        "gauge_all_worker3.db",
        "gauge_livesum_worker3.db",
        "gauge_max_worker3.db",
        "gauge_all_worker13.db",
        "gauge_all_worker30.db",
        "counter_worker3.db",
        "histogram_worker3.db",
        "gauge_livesum_supervisor.db",
    ):
        _write(tmp_path, name, "m", 1.0)
    removed = multiproc.forget_gauges(str(tmp_path), multiproc.worker_identifier(3))
    assert removed == 3
    assert _names(tmp_path) == {
        "gauge_all_worker13.db",
        "gauge_all_worker30.db",
        "counter_worker3.db",  # counters and histograms keep their totals
        "histogram_worker3.db",
        "gauge_livesum_supervisor.db",
    }
    assert multiproc.forget_gauges(str(tmp_path), "worker3") == 0


def test_a_scrape_survives_a_gauge_file_vanishing_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's gauge files are deleted while /metrics may be read: the
    plain collector raises for a vanished non-live gauge file; ours reads
    the directory again."""
    _write(tmp_path, "gauge_all_worker1.db", "left", 7.0)
    _write(tmp_path, "gauge_all_worker2.db", "gone", 9.0)
    _write(tmp_path, "counter_worker1.db", "jobs", 3.0)
    real = MmapedDict.read_all_values_from_file
    deleted: list[str] = []

    def vanishing(filename: str) -> object:
        if filename.endswith("gauge_all_worker2.db") and not deleted:
            deleted.append(filename)
            Path(filename).unlink()  # as forget_gauges, between glob and read
        return real(filename)

    monkeypatch.setattr(MmapedDict, "read_all_values_from_file", staticmethod(vanishing))
    registry = CollectorRegistry()
    multiproc.scrape_tolerant_collector()(registry, path=str(tmp_path))
    assert registry.get_sample_value("left", {"pid": "worker1"}) == 7.0
    assert registry.get_sample_value("gone", {"pid": "worker2"}) is None
    assert registry.get_sample_value("jobs") == 3.0
    assert deleted
