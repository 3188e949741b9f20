"""Fixtures shared by the integration and end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, start_chatd


@pytest.fixture
def chatd(tmp_path: Path) -> Iterator[Daemon]:
    """A real ``twistd -n chatd`` on a free loopback port, stopped after the test."""
    daemon = start_chatd(tmp_path)
    try:
        yield daemon
    finally:
        daemon.stop()
