"""Suite-wide checks, and the tiers' ``slow`` marker."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_sdk import reporting

TESTS = Path(__file__).resolve().parent
#: Tiers that start processes, threads against real engines or brokers, or
#: scripts: every test in them is ``slow``, so ``scripts/test --fast``
#: (``-m "not slow"``) runs the unit and contract tiers only, whatever a
#: file remembers to mark.
SLOW_TIERS = ("process", "e2e", "kafka", "smoke")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue  # not under tests/ (a path given on the command line)
        if tier in SLOW_TIERS:
            item.add_marker(pytest.mark.slow)


#: The start of the DeprecationWarning Python 3.12+ emits when os.fork() runs
#: in a process that has other threads (the child may deadlock).
FORK_WARNING = "This process"


@pytest.fixture(autouse=True)
def no_fork_while_threaded() -> Iterator[None]:
    """Fail any test during which this process forked while multi-threaded.

    Turning the warning into an error does not work: CPython swallows an
    exception raised by that warning inside os.fork(). So it is recorded and
    checked instead. Processes the tests start get PYTHONWARNINGS from
    scripts/test and are checked through their logs (tests/process).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=FORK_WARNING, category=DeprecationWarning)
        yield
    forks = [w for w in caught if "use of fork()" in str(w.message)]
    for other in caught:
        if other not in forks:
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    assert not forks, f"forked while multi-threaded: {forks[0].message}"


@pytest.fixture(autouse=True)
def fresh_in_flight_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no report of any job in flight: the registry is
    process-wide, and job ids repeat across tests."""
    monkeypatch.setattr(reporting, "IN_FLIGHT", reporting.InFlightReports())
