"""Tests for chatd.cluster.messages and the node's reading of them: typed messages, the
same JSON on the wire as before they were typed, and nothing malformed let through."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from chatd.cluster.messages import (
    LATEST_TIME,
    Act,
    Away,
    Banned,
    Gone,
    Join,
    Kick,
    Leave,
    MalformedMessage,
    Motd,
    Move,
    Mute,
    PresenceRecord,
    Registered,
    Rename,
    Replace,
    Say,
    Sync,
    Topic,
    Unbanned,
    UnknownMessage,
    Unmute,
    Whisper,
    envelope,
    open_envelope,
    parse,
)
from chatd.cluster.node import Cluster
from chatd.hub import MAX_TOPIC_CHARS, Hub
from chatd.model import Ban
from chatd.text import clean_text, parse_duration, utc_stamp

RECORD = PresenceRecord("alice", "a", "#lobby", 1.5, "lunch", True)
RECORD_JSON = {
    "alias": "alice",
    "node": "a",
    "room": "#lobby",
    "since": 1.5,
    "away": "lunch",
    "registered": True,
}
BAN = Ban("mallory", "alias", "spam", "root", 2.0, None)

# Each message type, and the JSON object it was built as (by hand) before it was typed.
WIRE: list[tuple[Any, dict[str, Any]]] = [
    (Join(RECORD), {"t": "join", **RECORD_JSON}),
    (Leave("alice", "Quit"), {"t": "leave", "alias": "alice", "reason": "Quit"}),
    (
        Gone("b", ("bob",), "Their server shut down"),
        {"t": "gone", "node": "b", "aliases": ["bob"], "reason": "Their server shut down"},
    ),
    (Move("alice", "#rust"), {"t": "move", "alias": "alice", "room": "#rust"}),
    (Rename("alice", "alicia"), {"t": "rename", "old": "alice", "new": "alicia"}),
    (
        Say("alice", "#lobby", "hi", 3.0),
        {"t": "say", "alias": "alice", "room": "#lobby", "text": "hi", "at": 3.0},
    ),
    (
        Act("alice", "#lobby", "waves", 3.0),
        {"t": "act", "alias": "alice", "room": "#lobby", "text": "waves", "at": 3.0},
    ),
    (Away("alice", "lunch"), {"t": "away", "alias": "alice", "away": "lunch"}),
    (Registered("alice"), {"t": "registered", "alias": "alice"}),
    (
        Topic("alice", "#lobby", "welcome"),
        {"t": "topic", "alias": "alice", "room": "#lobby", "topic": "welcome"},
    ),
    (
        Whisper("b", "alice", "bob", "psst"),
        {"t": "whisper", "to": "b", "from": "alice", "recipient": "bob", "text": "psst"},
    ),
    (
        Kick("b", "op", "root", "bob", "spam"),
        {"t": "kick", "to": "b", "by": "op", "operator": "root", "alias": "bob", "reason": "spam"},
    ),
    (Replace("b", "alice"), {"t": "replace", "to": "b", "alias": "alice"}),
    (Mute("bob", None), {"t": "mute", "alias": "bob", "until": None}),
    (Unmute("bob"), {"t": "unmute", "alias": "bob"}),
    (
        Banned("op", BAN),
        {
            "t": "ban",
            "by": "op",
            "mask": "mallory",
            "kind": "alias",
            "reason": "spam",
            "set_by": "root",
            "created_at": 2.0,
            "expires_at": None,
        },
    ),
    (Unbanned("mallory"), {"t": "unban", "mask": "mallory"}),
    (Motd("hello"), {"t": "motd", "text": "hello"}),
    (Sync((RECORD,)), {"t": "sync", "members": [RECORD_JSON]}),
]


@pytest.mark.parametrize(("message", "wire"), WIRE, ids=lambda m: type(m).__name__)
def test_each_message_goes_on_the_wire_as_before_and_comes_back_the_same(
    message: Any, wire: dict[str, Any]
) -> None:
    """Every type writes the JSON fields nodes of the older, untyped version read and
    write, and reads back into an equal message."""
    assert message.to_json() == wire
    assert parse(json.loads(json.dumps(wire))) == message


def test_what_the_lua_scripts_write_is_read() -> None:
    """cjson writes an empty list as {}: a node gone with nobody is still a gone message."""
    gone = parse({"t": "gone", "node": "b", "aliases": {}, "reason": "Their server shut down"})
    assert gone == Gone("b", (), "Their server shut down")


def test_a_record_without_away_or_registered_is_read_with_defaults() -> None:
    """Optional fields of a presence record may be missing (or empty)."""
    join = parse({"t": "join", "alias": "bob", "node": "b", "room": "#lobby", "since": 0})
    assert join == Join(PresenceRecord("bob", "b", "#lobby", 0.0, None, False))


@pytest.mark.parametrize(
    "item",
    [
        None,
        7,
        [],
        {"t": "say", "alias": "bob", "room": "#lobby", "text": "hi"},  # no "at"
        {"t": "say", "alias": 7, "room": "#lobby", "text": "hi", "at": 0},
        {"t": "say", "alias": "bob", "room": "#lobby", "text": "hi", "at": "0"},
        {"t": "say", "alias": "bob", "room": "#lobby", "text": "hi", "at": True},
        {"t": "join", "alias": "bob", "node": "b", "room": "#lobby"},  # no "since"
        {"t": "gone", "node": "b", "aliases": [1], "reason": "x"},
        {
            "t": "ban",
            "by": "op",
            "mask": "m",
            "kind": "nick",
            "reason": "r",
            "set_by": "s",
            "created_at": 0,
        },
        {"t": "mute", "alias": "bob", "until": "later"},
        {"t": "sync", "members": None},
        {"t": "topic", "alias": "bob", "room": "#lobby", "topic": ["x"]},
    ],
)
def test_a_malformed_message_is_refused(item: Any) -> None:
    """Wrong types, missing fields, unknown ban kinds: refused, never half-read."""
    with pytest.raises(MalformedMessage):
        parse(item)


SAY = {"t": "say", "alias": "bob", "room": "#lobby", "text": "hi", "at": 3.0}
JOIN = {"t": "join", **RECORD_JSON}
BAN_JSON = Banned("op", BAN).to_json()


@pytest.mark.parametrize(
    "item",
    [
        # Times that no clock shows: they would break every stamp and duration made of them.
        {**SAY, "at": float("nan")},
        {**SAY, "at": float("inf")},
        {**SAY, "at": 1e300},
        {**SAY, "at": -1.0},
        {**SAY, "at": 10**400},  # JSON's integers have no bound; float() would overflow
        {**JOIN, "since": float("nan")},
        {"t": "mute", "alias": "bob", "until": float("inf")},
        {"t": "mute", "alias": "bob", "until": 1e300},
        {**BAN_JSON, "created_at": float("nan")},
        {**BAN_JSON, "expires_at": 1e300},
        # Aliases that break the alias rule, where they are shown or become someone's.
        {**JOIN, "alias": "bad alias"},
        {**JOIN, "alias": "x" * 1000},
        {"t": "rename", "old": "bob", "new": "b b"},
        {"t": "whisper", "to": "a", "from": "x\x1by", "recipient": "alice", "text": "hi"},
        {"t": "topic", "alias": "\x1b[2J", "room": "#lobby", "topic": "t"},
        {"t": "kick", "to": "a", "by": "b\nb", "operator": "o", "alias": "alice", "reason": "r"},
        {**BAN_JSON, "by": "op\n"},
        # Rooms that break the room rule.
        {**JOIN, "room": "lobby"},
        {**SAY, "room": "#lob by"},
        {"t": "move", "alias": "bob", "room": "#"},
        {"t": "topic", "alias": "bob", "room": "#x\n", "topic": "t"},
        # Bans whose mask is not one of their kind (enforcing them would raise).
        {**BAN_JSON, "mask": "not-an-ip", "kind": "ip"},
        {**BAN_JSON, "mask": "10.0.0.0/99", "kind": "cidr"},
        {**BAN_JSON, "mask": "10.0.0.0/8", "kind": "ip"},
        {**BAN_JSON, "mask": "Mallory", "kind": "alias"},
        # Lines that are blank once cleaned (a member's blank line is never sent).
        {**SAY, "text": "\x1b[2J"},
        {"t": "act", "alias": "bob", "room": "#lobby", "text": " ", "at": 3.0},
        {"t": "whisper", "to": "a", "from": "bob", "recipient": "alice", "text": "\x07"},
    ],
)
def test_a_message_whose_fields_break_the_rules_is_refused(item: Any) -> None:
    """Nodes check aliases, rooms, times and ban masks as they check what their own
    members give them: a message breaking those rules is refused, not acted on."""
    with pytest.raises(MalformedMessage):
        parse(item)


def test_control_characters_in_text_are_removed_and_topics_cut() -> None:
    """Text from another node passes clean_text as a local member's does, and a topic or
    away message is cut where a local one would be."""
    dirty = "hi\x1b[2J\x07 there\r\n"
    clean = clean_text(dirty)
    assert "\x1b" not in clean
    assert parse({**SAY, "text": dirty}) == Say("bob", "#lobby", clean, 3.0)
    assert parse({"t": "motd", "text": dirty}) == Motd(clean)
    assert parse({"t": "leave", "alias": "bob", "reason": dirty}) == Leave("bob", clean)
    whisper = parse({"t": "whisper", "to": "a", "from": "bob", "recipient": "al", "text": dirty})
    assert whisper == Whisper("a", "bob", "al", clean)
    kick = {"t": "kick", "to": "a", "by": "op", "operator": "root", "alias": "al", "reason": dirty}
    assert parse(kick) == Kick("a", "op", "root", "al", clean)
    long = "x" * (MAX_TOPIC_CHARS + 50)
    topic = parse({"t": "topic", "alias": "bob", "room": "#lobby", "topic": long + "\x1b"})
    assert topic == Topic("bob", "#lobby", "x" * MAX_TOPIC_CHARS)
    assert parse({"t": "away", "alias": "bob", "away": long}) == Away("bob", "x" * MAX_TOPIC_CHARS)
    assert parse({**JOIN, "away": "\x1b"}) == Join(replace(RECORD, away=None))
    banned = parse({**BAN_JSON, "reason": dirty})
    assert isinstance(banned, Banned) and banned.ban.reason == clean


def test_an_unknown_type_is_told_apart() -> None:
    """A type this node does not know (a newer node's?) is refused as unknown."""
    with pytest.raises(UnknownMessage):
        parse({"t": "teleport"})
    with pytest.raises(UnknownMessage):
        parse({"alias": "bob"})


def test_a_bad_record_in_a_sync_spoils_only_itself() -> None:
    """A sync carries the records it can read, and keeps aside the rest (to be logged)."""
    sync = parse({"t": "sync", "members": [RECORD_JSON, {"alias": "x"}, 7]})
    assert isinstance(sync, Sync)
    assert sync.members == (RECORD,)
    assert sync.unreadable == ({"alias": "x"}, 7)


def test_envelopes_are_compact_and_checked() -> None:
    """A batch is {"n": node, "m": [...]} in compact JSON; anything else is refused."""
    text = envelope("a", [Unmute("bob").to_json()])
    assert text == '{"n":"a","m":[{"t":"unmute","alias":"bob"}]}'
    assert open_envelope(text) == ("a", [{"t": "unmute", "alias": "bob"}])
    for garbage in ("not json", "[]", '{"n":"x","m":null}', '{"n":7,"m":[]}', '{"m":[]}'):
        with pytest.raises(MalformedMessage):
            open_envelope(garbage)


class IdleLink:
    """A link the cluster is wired to, that never connects (only messages are fed)."""

    address = "redis://127.0.0.1:1/0"
    up = False

    def __init__(self) -> None:
        self.channels: list[str] = []
        self.client_name = ""
        self.on_message: Any = None
        self.on_up: Any = None
        self.on_down: Any = None


def test_a_malformed_message_from_the_bus_is_one_log_line_and_the_next_is_heard() -> None:
    """Malformed, unknown or unreadable: each is one warning (no traceback), and the
    batch's other messages are still acted on."""
    clock = Clock()
    cluster = Cluster(IdleLink(), node="a", clock=clock)  # type: ignore[arg-type]
    hub = Hub(clock, listener=cluster.bus, directory=cluster.roster)
    cluster.attach(hub)
    batch = [
        {"t": "say", "alias": 7},
        {"t": "teleport"},
        "not an object",
        {"t": "join", "alias": "bob", "node": "b", "room": "#lobby", "since": 0},
    ]
    with capturedLogs() as events:
        cluster._received("chatd:events", json.dumps({"n": "b", "m": batch}))
        cluster._received("chatd:events", "not json")
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 4
    assert not any(e.get("log_failure") for e in events)
    assert hub.online() == ("bob",)
    assert cluster.items_received == 4


def test_a_batch_claiming_to_come_from_this_node_is_ignored() -> None:
    """Only this node speaks for itself: a batch under its name that it did not write
    (not byte for byte its own) is one warning, and none of it is acted on."""
    clock = Clock()
    cluster = Cluster(IdleLink(), node="a", clock=clock)  # type: ignore[arg-type]
    hub = Hub(clock, listener=cluster.bus, directory=cluster.roster)
    cluster.attach(hub)
    join = {"t": "join", "alias": "bob", "node": "b", "room": "#lobby", "since": 0}
    with capturedLogs() as events:
        cluster._received("chatd:events", json.dumps({"n": "a", "m": [join]}))
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert hub.online() == ()


def test_the_longest_mute_or_ban_an_operator_can_give_crosses_the_bus() -> None:
    """/mute and /ban take up to 999999999 weeks: their end is a time other nodes take
    (and can show), however far it is."""
    longest = 2.0e9 + parse_duration("999999999w")
    assert parse(Mute("bob", longest).to_json()) == Mute("bob", longest)
    ban = Ban("mallory", "alias", "spam", "root", 2.0e9, longest)
    assert parse(Banned("op", ban).to_json()) == Banned("op", ban)
    assert longest <= LATEST_TIME
    utc_stamp(LATEST_TIME)  # shown in /bans and mute notices
