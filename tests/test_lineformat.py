"""Tests for chatd.fronts.lineformat: how events read on the line protocol."""

from __future__ import annotations

import pytest

from chatd.events import Comings, History, RoomList
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


def test_a_replay_rendered_again_is_the_same_and_follows_new_lines() -> None:
    """The replay kept per room is reused only for the same lines: another line, or
    another room with the same lines, is rendered for what it is."""
    said = [HistoryEntry("#lobby", "say", "alice", f"hello {n}", float(n)) for n in range(4)]
    first = encode(History("#lobby", tuple(said[:3])))
    assert encode(History("#lobby", tuple(said[:3]))) == first
    assert first.count(b"hello") == 3
    later = encode(History("#lobby", tuple(said[1:])))
    assert b"hello 0" not in later and b"hello 3" in later
    elsewhere = encode(History("#den", tuple(said[1:])))
    assert elsewhere.startswith(b"*** History of #den (3 lines):")
    assert elsewhere.split(b"\r\n")[1:] == later.split(b"\r\n")[1:]


@pytest.mark.parametrize(
    ("joined", "left", "line"),
    [
        (
            ("ann", "bob"),
            (),
            "*** 2 joined in the last 5s: ann, bob (120 here; /who lists everyone)",
        ),
        (
            (),
            ("carl",),
            "*** 1 left in the last 5s: carl (120 here; /who lists everyone)",
        ),
        (
            ("ann",),
            ("carl",),
            "*** 1 joined, 1 left in the last 5s: ann joined; carl left"
            " (120 here; /who lists everyone)",
        ),
    ],
)
def test_comings_are_one_line(joined: tuple[str, ...], left: tuple[str, ...], line: str) -> None:
    """A summary of a big room's arrivals and departures reads as one line."""
    event = Comings("#lobby", len(joined), len(left), joined, left, 120, 5.0)
    assert encode(event) == f"{line}\r\n".encode()


def test_comings_count_those_not_named() -> None:
    """Names past those listed are counted: "and N more"."""
    event = Comings("#lobby", 37, 12, ("ann", "bob"), ("carl",), 1204, 5.0)
    assert encode(event) == (
        b"*** 37 joined, 12 left in the last 5s: ann, bob and 35 more joined;"
        b" carl and 11 more left (1204 here; /who lists everyone)\r\n"
    )


def test_a_room_list_cut_short_says_how_many_rooms_it_leaves_out() -> None:
    """/rooms past its bound counts every room in its heading and the unlisted at the end."""
    listed = RoomList((("#lobby", 9, None), ("#rust", 4, "crabs")), more=37)
    assert encode(listed).decode().split("\r\n") == [
        "*** Rooms (39):",
        "***   #lobby (9)",
        "***   #rust (4): crabs",
        "***   and 37 smaller rooms not listed",
        "",
    ]
