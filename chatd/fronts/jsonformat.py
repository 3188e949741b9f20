"""Events as JSON, for the WebSocket front end and the bots that use it.

Each event becomes one JSON object on one line, with a ``type`` and the event's
fields; a WebSocket message carries one or more of them (everything a room said
in one reactor turn), one per line. The text in them is already clean (see
:mod:`chatd.events`); the page that shows them still escapes it.

A chat line or action that mentions its recipient carries ``"mention": true``
(as do the history entries that mention the member they are shown to), for
the page and for bots to highlight; there is no bell in JSON.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from chatd.events import (
    Acted,
    Comings,
    Departed,
    Error,
    Event,
    History,
    InRoom,
    Joined,
    Left,
    Mentioned,
    Mentions,
    Notice,
    OfflineMessage,
    Renamed,
    RoomList,
    Roster,
    Said,
    TopicChanged,
    Whispered,
    WhisperSent,
    Whois,
)
from chatd.mentions import mentions
from chatd.text import alias_key

TYPES: dict[type, str] = {
    Said: "message",
    Acted: "action",
    Whispered: "private",
    WhisperSent: "private_sent",
    Joined: "join",
    Departed: "leave",
    Left: "leave",
    Comings: "comings",
    Renamed: "nick",
    InRoom: "room",
    Roster: "who",
    RoomList: "rooms",
    TopicChanged: "topic",
    Whois: "whois",
    History: "history",
    Notice: "notice",
    Error: "error",
    OfflineMessage: "offline_message",
    Mentions: "mentions",
}


def as_json(event: Event) -> dict[str, Any]:
    """The JSON object for ``event``: its type and its fields."""
    if isinstance(event, Mentioned):
        return {**as_json(event.line), "mention": True}
    record: dict[str, Any] = {"type": TYPES[type(event)]}
    for field in fields(event):
        record[field.name] = getattr(event, field.name)
    if isinstance(event, History):
        del record["reader"]
        record["entries"] = _history_entries(event)
    elif isinstance(event, Mentions):
        record["entries"] = [
            {"room": e.room, "kind": e.kind, "alias": e.alias, "text": e.text, "at": e.at}
            for e in event.entries
        ]
    elif isinstance(event, RoomList):
        record["rooms"] = [
            {"name": name, "members": members, "topic": topic}
            for name, members, topic in event.rooms
        ]
    return record


def encode(event: Event) -> bytes:
    """``event`` as one line of JSON, newline included."""
    return json.dumps(as_json(event), ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _history_entries(event: History) -> list[dict[str, Any]]:
    """The lines of ``event``, each marked that mentions its reader (and is not theirs)."""
    reader = event.reader
    own = alias_key(reader) if reader is not None else None
    entries = []
    for e in event.entries:
        record: dict[str, Any] = {"kind": e.kind, "alias": e.alias, "text": e.text, "at": e.at}
        if reader is not None and own != alias_key(e.alias) and mentions(e.text, reader):
            record["mention"] = True
        entries.append(record)
    return entries
