"""Fixtures shared by the client's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """HTTP mocked at the transport adapter; every registered answer must be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mocked:
        yield mocked
