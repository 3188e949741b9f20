"""The messages nodes send each other on the bus, typed, with their JSON form.

On the wire (see docs/cluster.md) a node publishes ``{"n": node, "m": [items]}``,
each item a JSON object whose ``"t"`` names its type. Each type is one frozen
dataclass here: :meth:`to_json` gives the object as it goes on the wire, and
:func:`parse` reads one back, refusing (:class:`MalformedMessage`) whatever is
not one, so the handlers only ever see well-formed messages. Nodes trust each
other, but a message is held to the rules a node holds its own members to:
aliases and rooms follow their rules, times are times a clock can show, a ban's
mask is one of its kind, and text passes :func:`~chatd.text.clean_text` (a topic
or away message cut as a local one is). Two types are also
written by the Lua scripts in :mod:`chatd.cluster.node` (``replace`` and
``gone``); presence records (:class:`PresenceRecord`) are what Redis keeps of
each member, and what ``join`` and ``sync`` carry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from chatd.bans import BanRefused, ban_target
from chatd.hub import MAX_TOPIC_CHARS
from chatd.model import BAN_KINDS, Ban
from chatd.text import check_room, clean_text, is_valid_name

# A message as JSON, before or after its trip.
Json = dict[str, Any]
# The latest time a message may carry (epoch seconds, about the year 31 million):
# past the end of the longest mute or ban (999999999 weeks from now), and within
# what time.gmtime shows (utc_stamp), as the node that set it shows it too.
LATEST_TIME = 1e15


class MalformedMessage(ValueError):
    """Something on the bus that is not a message (or a record) of its type."""


class UnknownMessage(MalformedMessage):
    """A message of a type this node does not know (sent by a newer version?)."""


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f"{key!r} is not a string")
    return value


def _optional_str(item: Mapping[str, Any], key: str) -> str | None:
    """A string or nothing; an empty string is nothing too."""
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"{key!r} is not a string")
    return value or None


def _alias(item: Mapping[str, Any], key: str) -> str:
    """An alias that follows the alias rule (where it is shown, or becomes someone's)."""
    value = _str(item, key)
    if not is_valid_name(value):
        raise MalformedMessage(f"{key!r} breaks the alias rule")
    return value


def _room(item: Mapping[str, Any], key: str) -> str:
    """A room name that follows the room rule."""
    value = _str(item, key)
    try:
        return check_room(value)
    except ValueError as refusal:
        raise MalformedMessage(f"{key!r} breaks the room rule") from refusal


def _text(item: Mapping[str, Any], key: str) -> str:
    """Text a member gave, cleaned as the hub cleans what its own members give."""
    return clean_text(_str(item, key))


def _line(item: Mapping[str, Any], key: str) -> str:
    """A line a member said or whispered: text that is not blank once cleaned."""
    value = _text(item, key)
    if not value:
        raise MalformedMessage(f"{key!r} is blank")
    return value


def _optional_text(item: Mapping[str, Any], key: str, cut: int | None = None) -> str | None:
    """Text or nothing (an empty string, or one that cleans to nothing, is nothing),
    cut to ``cut`` characters if given."""
    value = _optional_str(item, key)
    return (clean_text(value)[:cut] or None) if value is not None else None


def _time(item: Mapping[str, Any], key: str) -> float:
    """Seconds since the epoch (or on the clock), from 0 to LATEST_TIME."""
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(f"{key!r} is not a number")
    if not 0 <= value <= LATEST_TIME:  # NaN compares false; a huge int is not converted
        raise MalformedMessage(f"{key!r} is no time")
    return float(value)


def _optional_time(item: Mapping[str, Any], key: str) -> float | None:
    return None if item.get(key) is None else _time(item, key)


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    """One member's presence, as Redis keeps it under their alias key (and as ``join``
    and ``sync`` carry it): the Lua scripts read its ``node`` and ``alias``."""

    alias: str
    node: str
    room: str
    since: float
    away: str | None = None
    registered: bool = False

    def to_json(self) -> Json:
        return {
            "alias": self.alias,
            "node": self.node,
            "room": self.room,
            "since": self.since,
            "away": self.away,
            "registered": self.registered,
        }

    @classmethod
    def from_json(cls, item: Any) -> PresenceRecord:
        if not isinstance(item, dict):
            raise MalformedMessage("a presence record is an object")
        return cls(
            alias=_alias(item, "alias"),
            node=_str(item, "node"),
            room=_room(item, "room"),
            since=_time(item, "since"),
            away=_optional_text(item, "away", MAX_TOPIC_CHARS),
            registered=bool(item.get("registered")),
        )

    @classmethod
    def from_text(cls, raw: str | bytes) -> PresenceRecord:
        """A record as read from Redis (its JSON text)."""
        try:
            return cls.from_json(json.loads(raw))
        except ValueError as problem:  # MalformedMessage, or not JSON at all
            raise MalformedMessage(str(problem)) from problem


@dataclass(frozen=True, slots=True)
class Join:
    """A member came online on the node of its record."""

    TYPE: ClassVar[str] = "join"
    record: PresenceRecord

    def to_json(self) -> Json:
        return {"t": self.TYPE, **self.record.to_json()}

    @classmethod
    def from_json(cls, item: Json) -> Join:
        return cls(PresenceRecord.from_json(item))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return (self.record.alias,)


@dataclass(frozen=True, slots=True)
class Leave:
    """A member of the sending node went offline."""

    TYPE: ClassVar[str] = "leave"
    alias: str
    reason: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias, "reason": self.reason}

    @classmethod
    def from_json(cls, item: Json) -> Leave:
        return cls(_str(item, "alias"), _text(item, "reason"))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return (self.alias,)


@dataclass(frozen=True, slots=True)
class Gone:
    """A node left (or was reaped) with its members (written by REAP_SCRIPT)."""

    TYPE: ClassVar[str] = "gone"
    node: str
    aliases: tuple[str, ...]
    reason: str

    def to_json(self) -> Json:
        return {
            "t": self.TYPE,
            "node": self.node,
            "aliases": list(self.aliases),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, item: Json) -> Gone:
        aliases = item.get("aliases") or []  # Lua's cjson writes an empty list as {}
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise MalformedMessage("'aliases' is not a list of strings")
        return cls(_str(item, "node"), tuple(aliases), _text(item, "reason"))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return self.aliases


@dataclass(frozen=True, slots=True)
class Move:
    """A member of the sending node went to another room."""

    TYPE: ClassVar[str] = "move"
    alias: str
    room: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias, "room": self.room}

    @classmethod
    def from_json(cls, item: Json) -> Move:
        return cls(_str(item, "alias"), _room(item, "room"))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return (self.alias,)


@dataclass(frozen=True, slots=True)
class Rename:
    """A member of the sending node changed alias."""

    TYPE: ClassVar[str] = "rename"
    old: str
    new: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "old": self.old, "new": self.new}

    @classmethod
    def from_json(cls, item: Json) -> Rename:
        return cls(_str(item, "old"), _alias(item, "new"))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return (self.old, self.new)


@dataclass(frozen=True, slots=True)
class _Spoken:
    """A line (:class:`Say` or :class:`Act`) a member of the sending node spoke in
    ``room`` at ``at`` (epoch seconds): the two differ in their type alone."""

    TYPE: ClassVar[str]
    alias: str
    room: str
    text: str
    at: float

    def to_json(self) -> Json:
        return {
            "t": self.TYPE,
            "alias": self.alias,
            "room": self.room,
            "text": self.text,
            "at": self.at,
        }

    @classmethod
    def from_json(cls: type[_SpokenT], item: Json) -> _SpokenT:
        return cls(
            _str(item, "alias"), _room(item, "room"), _line(item, "text"), _time(item, "at")
        )


_SpokenT = TypeVar("_SpokenT", bound=_Spoken)


@dataclass(frozen=True, slots=True)
class Say(_Spoken):
    """A member of the sending node said ``text`` in ``room`` at ``at``."""

    TYPE: ClassVar[str] = "say"


@dataclass(frozen=True, slots=True)
class Act(_Spoken):
    """A member of the sending node did ``/me text`` in ``room`` at ``at``."""

    TYPE: ClassVar[str] = "act"


@dataclass(frozen=True, slots=True)
class Away:
    """A member of the sending node went away (``away``) or came back (None)."""

    TYPE: ClassVar[str] = "away"
    alias: str
    away: str | None

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias, "away": self.away}

    @classmethod
    def from_json(cls, item: Json) -> Away:
        return cls(_str(item, "alias"), _optional_text(item, "away", MAX_TOPIC_CHARS))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return (self.alias,)


@dataclass(frozen=True, slots=True)
class Registered:
    """``alias`` was registered on the sending node (its maker may have gone since)."""

    TYPE: ClassVar[str] = "registered"
    alias: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias}

    @classmethod
    def from_json(cls, item: Json) -> Registered:
        return cls(_str(item, "alias"))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return (self.alias,)


@dataclass(frozen=True, slots=True)
class Topic:
    """``alias`` set the topic of ``room`` (None: cleared it)."""

    TYPE: ClassVar[str] = "topic"
    alias: str
    room: str
    topic: str | None

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias, "room": self.room, "topic": self.topic}

    @classmethod
    def from_json(cls, item: Json) -> Topic:
        return cls(
            _alias(item, "alias"),
            _room(item, "room"),
            _optional_text(item, "topic", MAX_TOPIC_CHARS),
        )


@dataclass(frozen=True, slots=True)
class Whisper:
    """A private message from ``sender`` to ``recipient``, a member of node ``to``."""

    TYPE: ClassVar[str] = "whisper"
    to: str
    sender: str
    recipient: str
    text: str

    def to_json(self) -> Json:
        return {
            "t": self.TYPE,
            "to": self.to,
            "from": self.sender,
            "recipient": self.recipient,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, item: Json) -> Whisper:
        return cls(
            _str(item, "to"), _alias(item, "from"), _str(item, "recipient"), _line(item, "text")
        )


@dataclass(frozen=True, slots=True)
class Kick:
    """Operator ``operator`` (online as ``by``) kicks ``alias``, a member of node ``to``."""

    TYPE: ClassVar[str] = "kick"
    to: str
    by: str
    operator: str
    alias: str
    reason: str

    def to_json(self) -> Json:
        return {
            "t": self.TYPE,
            "to": self.to,
            "by": self.by,
            "operator": self.operator,
            "alias": self.alias,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, item: Json) -> Kick:
        return cls(
            _str(item, "to"),
            _alias(item, "by"),
            _text(item, "operator"),
            _str(item, "alias"),
            _text(item, "reason"),
        )


@dataclass(frozen=True, slots=True)
class Replace:
    """The owner of registered ``alias`` logged in elsewhere: node ``to`` ends their
    session there (written by CLAIM_SCRIPT)."""

    TYPE: ClassVar[str] = "replace"
    to: str
    alias: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "to": self.to, "alias": self.alias}

    @classmethod
    def from_json(cls, item: Json) -> Replace:
        return cls(_str(item, "to"), _str(item, "alias"))


@dataclass(frozen=True, slots=True)
class Mute:
    """``alias`` is muted until ``until`` (clock seconds), or until unmuted (None)."""

    TYPE: ClassVar[str] = "mute"
    alias: str
    until: float | None

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias, "until": self.until}

    @classmethod
    def from_json(cls, item: Json) -> Mute:
        return cls(_str(item, "alias"), _optional_time(item, "until"))


@dataclass(frozen=True, slots=True)
class Unmute:
    """``alias`` was unmuted."""

    TYPE: ClassVar[str] = "unmute"
    alias: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "alias": self.alias}

    @classmethod
    def from_json(cls, item: Json) -> Unmute:
        return cls(_str(item, "alias"))


@dataclass(frozen=True, slots=True)
class Banned:
    """The operator online as ``by`` set ``ban``."""

    TYPE: ClassVar[str] = "ban"
    by: str
    ban: Ban

    def to_json(self) -> Json:
        ban = self.ban
        return {
            "t": self.TYPE,
            "by": self.by,
            "mask": ban.mask,
            "kind": ban.kind,
            "reason": ban.reason,
            "set_by": ban.set_by,
            "created_at": ban.created_at,
            "expires_at": ban.expires_at,
        }

    @classmethod
    def from_json(cls, item: Json) -> Banned:
        mask, kind = _str(item, "mask"), _str(item, "kind")
        if kind not in BAN_KINDS:
            raise MalformedMessage(f"no ban kind {kind!r}")
        try:
            canonical = ban_target(mask)
        except BanRefused as refusal:
            raise MalformedMessage(str(refusal)) from refusal
        if canonical != (mask, kind):  # as /ban makes them, or enforcing it would fail
            raise MalformedMessage(f"{mask!r} is no {kind} mask")
        ban = Ban(
            mask,
            kind,
            _text(item, "reason"),
            _text(item, "set_by"),
            _time(item, "created_at"),
            _optional_time(item, "expires_at"),
        )
        return cls(_alias(item, "by"), ban)


@dataclass(frozen=True, slots=True)
class Unbanned:
    """The ban on ``mask`` was lifted."""

    TYPE: ClassVar[str] = "unban"
    mask: str

    def to_json(self) -> Json:
        return {"t": self.TYPE, "mask": self.mask}

    @classmethod
    def from_json(cls, item: Json) -> Unbanned:
        return cls(_str(item, "mask"))


@dataclass(frozen=True, slots=True)
class Motd:
    """An operator set the message of the day (None: back to each node's --motd FILE)."""

    TYPE: ClassVar[str] = "motd"
    text: str | None

    def to_json(self) -> Json:
        return {"t": self.TYPE, "text": self.text}

    @classmethod
    def from_json(cls, item: Json) -> Motd:
        return cls(_optional_text(item, "text"))


@dataclass(frozen=True, slots=True)
class Sync:
    """The sending node (re)joined the cluster with these members.

    A record in it that is not one is kept aside in ``unreadable`` (to be logged),
    not allowed to spoil the others.
    """

    TYPE: ClassVar[str] = "sync"
    members: tuple[PresenceRecord, ...]
    unreadable: tuple[Any, ...] = field(default=(), compare=False)

    def to_json(self) -> Json:
        return {"t": self.TYPE, "members": [record.to_json() for record in self.members]}

    @classmethod
    def from_json(cls, item: Json) -> Sync:
        members = item.get("members")
        if not isinstance(members, list):
            raise MalformedMessage("'members' is not a list")
        records, unreadable = [], []
        for member in members:
            try:
                records.append(PresenceRecord.from_json(member))
            except MalformedMessage:
                unreadable.append(member)
        return cls(tuple(records), tuple(unreadable))

    def touched(self) -> tuple[str, ...]:
        """The aliases this news is about."""
        return tuple(record.alias for record in self.members)


Message = (
    Join
    | Leave
    | Gone
    | Move
    | Rename
    | Say
    | Act
    | Away
    | Registered
    | Topic
    | Whisper
    | Kick
    | Replace
    | Mute
    | Unmute
    | Banned
    | Unbanned
    | Motd
    | Sync
)
# Messages that change who is where: a roster read in flight must not undo them.
PresenceMessage = Join | Leave | Gone | Move | Rename | Away | Registered | Sync
PRESENCE_MESSAGES = (Join, Leave, Gone, Move, Rename, Away, Registered, Sync)

_PARSERS: dict[str, Callable[[Json], Message]] = {
    kind.TYPE: kind.from_json
    for kind in (
        Join,
        Leave,
        Gone,
        Move,
        Rename,
        Say,
        Act,
        Away,
        Registered,
        Topic,
        Whisper,
        Kick,
        Replace,
        Mute,
        Unmute,
        Banned,
        Unbanned,
        Motd,
        Sync,
    )
}


def parse(item: Any) -> Message:
    """The message ``item`` (one JSON object of a batch) is; raises MalformedMessage
    (UnknownMessage for a type this node does not know)."""
    if not isinstance(item, dict):
        raise MalformedMessage("a message is an object")
    kind = item.get("t")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise UnknownMessage(f"no message type {kind!r}")
    return parser(item)


def envelope(node: str, items: list[Json]) -> str:
    """What a node publishes: its name, then its batch of messages (as JSON)."""
    return to_text({"n": node, "m": items})


def open_envelope(text: str) -> tuple[str, list[Any]]:
    """The sending node and the items of a published batch; raises MalformedMessage."""
    try:
        batch = json.loads(text)
        node, items = batch["n"], batch["m"]
    except (ValueError, KeyError, TypeError) as problem:
        raise MalformedMessage(f"not a batch: {problem}") from problem
    if not isinstance(node, str) or not isinstance(items, list):
        raise MalformedMessage("not a node name and a list of items")
    return node, items


def to_text(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is (the Lua scripts decode it with cjson)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
