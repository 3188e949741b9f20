"""Tests for chatd.fronts.lineformat: how events read on the line protocol."""

from __future__ import annotations

import pytest

from chatd.events import History
from chatd.fronts.lineformat import encode
from chatd.model import HistoryEntry


@pytest.mark.parametrize(("count", "heading"), [(1, "1 line"), (2, "2 lines")])
def test_history_counts_its_lines_in_good_english(count: int, heading: str) -> None:
    """A history of one line says "1 line", of more "N lines"."""
    entries = tuple(
        HistoryEntry("#lobby", "say", "alice", f"hello {n}", float(n)) for n in range(count)
    )
    first = encode(History("#lobby", entries)).split(b"\r\n")[0]
    assert first == f"*** History of #lobby ({heading}):".encode()
