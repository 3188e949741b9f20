"""Tests for chatd.fronts.jsonformat: the JSON the WebSocket speaks, one object per event."""

from __future__ import annotations

import json

from chatd.events import Comings, Error, History, Joined, Left, RoomList, Said
from chatd.fronts.jsonformat import TYPES, encode
from chatd.model import HistoryEntry


def decoded(data: bytes) -> dict[str, object]:
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    return json.loads(data)  # type: ignore[no-any-return]


def test_each_event_is_one_line_with_its_type_and_fields() -> None:
    assert decoded(encode(Said("alice", "héllo <b>"))) == {
        "type": "message",
        "sender": "alice",
        "text": "héllo <b>",
    }
    assert decoded(encode(Joined("bob", "#lobby", 2)))["type"] == "join"
    assert decoded(encode(Left("bob", "Quit")))["reason"] == "Quit"
    assert decoded(encode(Error("nope"))) == {"type": "error", "text": "nope"}


def test_history_and_room_lists_become_lists_of_objects() -> None:
    entry = HistoryEntry("#lobby", "act", "alice", "waves", 1764000000.0)
    assert decoded(encode(History("#lobby", (entry,))))["entries"] == [
        {"kind": "act", "alias": "alice", "text": "waves", "at": 1764000000.0}
    ]
    assert decoded(encode(RoomList((("#lobby", 3, None),))))["rooms"] == [
        {"name": "#lobby", "members": 3, "topic": None}
    ]


def test_comings_carry_counts_and_names() -> None:
    """A big room's summary of arrivals and departures is one "comings" object."""
    event = Comings("#lobby", 3, 1, ("ann", "bob"), ("carl",), 120, 5.0)
    assert decoded(encode(event)) == {
        "type": "comings",
        "room": "#lobby",
        "joined": 3,
        "left": 1,
        "joined_names": ["ann", "bob"],
        "left_names": ["carl"],
        "present": 120,
        "seconds": 5.0,
    }


def test_every_event_type_has_a_json_type() -> None:
    from chatd import events

    # A Mentioned copy of a line takes the type of its line.
    event_classes = {cls for cls in vars(events).values() if isinstance(cls, type)} - {
        events.HistoryEntry,
        events.Mentioned,
    }
    assert event_classes == set(TYPES)
