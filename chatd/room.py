"""A room: the members who hear each other, and the lines they hear together.

Broadcasts to a room are coalesced per reactor turn: everything said during one
turn is encoded once and reaches each member as a single write when the hub
flushes at the end of the turn. Under load a turn carries many lines, so the cost
per recipient is paid per turn rather than per line.

A line that mentions members (see :mod:`chatd.mentions`) reaches each of them as
their own copy (:class:`chatd.events.Mentioned`: marked, and a bell if they
want one), in its place among the others; the rest of the room gets the same
bytes as ever, so a turn in which nobody is mentioned costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from chatd.counters import Counters
from chatd.events import Event, Mentioned
from chatd.text import alias_key

if TYPE_CHECKING:
    from chatd.interfaces import IMember as Member


# This turn's broadcasts: each event with the member it skips, the alias key of
# whoever said it, and the members it mentions with the copy each of them gets.
MentionCopies = dict["Member", Mentioned]
Batch = list[tuple[Event, "Member | None", "str | None", "MentionCopies | None"]]
# Per wire format, each member's copy of a line that mentions them, encoded.
Copies = dict[Callable[[Event], bytes], dict[Mentioned, bytes]]
log = Logger(namespace="chatd.room")


def deliver(member: Member, data: bytes, failed: list[Member]) -> bool:
    """Hand ``data`` to ``member``; a member whose front end raises goes into ``failed``.

    A front end must never raise out of a delivery; if one does anyway (a bug),
    it costs that one member, who is cut off by the hub, and never the others of
    the room or the rooms flushed after it.
    """
    try:
        member.send(data)
    except Exception:
        delivery_failed(member, failed)
        return False
    return True


def delivery_failed(member: Member, failed: list[Member]) -> None:
    """Log the exception a delivery to ``member`` raised, and note them in ``failed``."""
    log.failure("delivery to {peer} ({alias}) failed", peer=member.peer, alias=member.alias)
    failed.append(member)


class Presence:
    """What the hub knows of one member online."""

    __slots__ = (
        "account",
        "active_at",
        "alias",
        "away",
        "bell",
        "bell_rests_until",
        "ignores",
        "operator",
        "replay",
        "room",
        "since",
    )

    def __init__(
        self, room: Room, now: float, account: str | None, replay: bool, alias: str
    ) -> None:
        self.room = room
        # The member's alias as the hub knows it (the hub also sets member.alias).
        self.alias = alias
        self.since = now
        self.active_at = now
        self.away: str | None = None
        # Alias keys whose chat lines and actions this member does not see.
        self.ignores: set[str] = set()
        # Whether a line that mentions this member rings their terminal (/bell).
        self.bell = True
        # Until when the bell stays quiet, having rung (see chatd.hub.BELL_INTERVAL_SECONDS).
        self.bell_rests_until = 0.0
        # The alias key of the registered account whose password this member gave.
        self.account = account
        # Whether a room's recent history is shown on entering it (bots say no).
        self.replay = replay
        # The operator name this member logged in with (/oper), if any.
        self.operator: str | None = None


class Comers:
    """Who came into and went from a big room since its last summary (see
    :class:`chatd.events.Comings`), and the one timer that will announce them."""

    __slots__ = ("call", "joined", "left")

    def __init__(self, call: IDelayedCall) -> None:
        self.call = call
        # Alias key -> alias, in the order they came (or went).
        self.joined: dict[str, str] = {}
        self.left: dict[str, str] = {}

    def came(self, alias: str) -> None:
        """``alias`` came in: back from having gone (then neither), or new."""
        key = alias_key(alias)
        if self.left.pop(key, None) is None:
            self.joined[key] = alias

    def went(self, alias: str) -> None:
        """``alias`` went: having just come (then neither), or someone who was there."""
        key = alias_key(alias)
        if self.joined.pop(key, None) is None:
            self.left[key] = alias

    def renamed(self, old: str, new: str) -> bool:
        """Whether ``old`` came in since the last summary (and is now listed as ``new``)."""
        if self.joined.pop(alias_key(old), None) is None:
            return False
        self.joined[alias_key(new)] = new
        return True

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class Room:
    """Members of one room (in the order they came in) and this turn's broadcasts."""

    __slots__ = (
        "_batch",
        "_copies",
        "_counters",
        "_encoded",
        "_mentioned",
        "_served",
        "comers",
        "failed",
        "members",
        "name",
        "topic",
    )

    def __init__(
        self,
        name: str,
        topic: str | None = None,
        counters: Counters | None = None,
        failed: list[Member] | None = None,
    ) -> None:
        self.name = name
        self.topic = topic
        self._counters = counters if counters is not None else Counters()
        # In the order they came in: the longest present first.
        self.members: dict[Member, Presence] = {}
        self._batch: Batch = []
        # The batch encoded so far, per wire format (see Member.encode).
        self._encoded: dict[Callable[[Event], bytes], list[bytes]] = {}
        # Members some line of the batch mentions, and their copies encoded so far.
        self._mentioned: set[Member] = set()
        self._copies: Copies = {}
        # Members who must not get the start of the batch: how many of its events
        # they already had (caught up) or came in after (arrived mid-turn).
        self._served: dict[Member, int] = {}
        # Members whose delivery raised, for the hub to cut off (see deliver); the
        # hub shares one list between its rooms.
        self.failed: list[Member] = failed if failed is not None else []
        # In a big room, arrivals and departures waiting for their summary (see the hub).
        self.comers: Comers | None = None

    def __len__(self) -> int:
        return len(self.members)

    def names(self) -> tuple[str, ...]:
        """The aliases present, sorted case-insensitively."""
        return tuple(sorted((p.alias for p in self.members.values()), key=alias_key))

    def queue(
        self,
        event: Event,
        exclude: Member | None = None,
        speaker: str | None = None,
        mentions: MentionCopies | None = None,
    ) -> bool:
        """Add ``event`` to this turn's batch; True if the batch was empty before.

        ``speaker`` is the alias key of whoever said it, for those who ignore them;
        ``mentions`` gives the members it mentions their own copy of it instead.
        """
        self._batch.append((event, exclude, speaker, mentions))
        if mentions:
            self._mentioned.update(mentions)
        return len(self._batch) == 1

    def enter(self, member: Member, presence: Presence) -> None:
        """Add ``member``, who hears only what is queued from now on.

        The batch is not flushed for a newcomer: in a busy room many arrive in one
        turn, and flushing for each would cost a write per member per arrival.
        """
        self.members[member] = presence
        if self._batch:
            self._served[member] = len(self._batch)

    def exit(self, member: Member) -> None:
        """Remove ``member``, after giving them what was queued for them before they went."""
        self.catch_up(member)
        del self.members[member]
        self._served.pop(member, None)

    def catch_up(self, member: Member) -> None:
        """Send ``member`` now their share of the batch so far, and only them.

        Lets the hub tell one member something in order with the room's broadcasts
        without flushing the room for everyone.
        """
        batch = self._batch
        start = self._served.get(member, 0)
        if start == len(batch):
            return
        self._served[member] = len(batch)
        encode = member.encode
        lines = _encoded(batch, self._encoded, encode)
        copies = self._copies.setdefault(encode, {})
        data = _selection(member, self.members[member], batch, lines, start, encode, copies)
        if data and deliver(member, data, self.failed):
            self._counters.delivered(data)

    def flush(self) -> None:
        """Deliver this turn's batch: one write per member.

        The batch is encoded once per wire format. Members who skip none of its
        events and are mentioned by none (everyone but this turn's speakers, the
        mentioned, those ignoring somebody, and those caught up or arrived
        mid-turn) all get the same bytes object; the others get their own
        selection of it. What is queued while this runs (a recipient cut off and
        leaving) goes into the next batch.
        """
        batch, encoded, served, copies = self._batch, self._encoded, self._served, self._copies
        if not batch:
            return
        self._batch, self._encoded, self._served, self._copies = [], {}, {}, {}
        skipping = {skipped for _, skipped, _, _ in batch if skipped is not None}
        if self._mentioned:
            skipping |= self._mentioned
            self._mentioned = set()
        # Per wire format: the whole batch encoded, and how many got it.
        whole: dict[Callable[[Event], bytes], list[Any]] = {}
        counters = self._counters
        # A snapshot: a recipient may drop (and leave) during the loop.
        for member, presence in list(self.members.items()):
            encode = member.encode
            if member in skipping or presence.ignores or member in served:
                lines = _encoded(batch, encoded, encode)
                start = served.get(member, 0)
                own = copies.setdefault(encode, {})
                data = _selection(member, presence, batch, lines, start, encode, own)
                if data and deliver(member, data, self.failed):
                    counters.delivered(data)
                continue
            sent = whole.get(encode)
            if sent is None:
                sent = whole[encode] = [b"".join(_encoded(batch, encoded, encode)), 0]
            try:
                member.send(sent[0])
            except Exception:  # deliver, inlined: this loop is the hot path
                delivery_failed(member, self.failed)
                continue
            sent[1] += 1
        for data, recipients in whole.values():
            counters.delivered(data, recipients)


def _encoded(
    batch: Batch,
    encoded: dict[Callable[[Event], bytes], list[bytes]],
    encode: Callable[[Event], bytes],
) -> list[bytes]:
    """``batch`` encoded with ``encode``, each event once (cached in ``encoded``)."""
    lines = encoded.setdefault(encode, [])
    if len(lines) < len(batch):
        lines.extend(encode(event) for event, _, _, _ in batch[len(lines) :])
    return lines


def _selection(
    member: Member,
    presence: Presence,
    batch: Batch,
    lines: list[bytes],
    start: int,
    encode: Callable[[Event], bytes],
    copies: dict[Mentioned, bytes],
) -> bytes:
    """What ``member`` gets of ``batch`` from ``start``: not its own lines, not the
    ignored, and its own copy of each line that mentions it.

    ``lines`` is the batch encoded with ``encode``; ``copies`` keeps the mentioned
    copies it encodes, shared by the members who get the same one (the copies
    are at most two per line: with the bell and without).
    """
    ignores = presence.ignores
    selected = []
    for line, (_, skipped, speaker, mentions) in zip(lines[start:], batch[start:], strict=True):
        if skipped is member or speaker in ignores:
            continue
        copy = mentions.get(member) if mentions is not None else None
        if copy is not None:
            if copy not in copies:
                copies[copy] = encode(copy)
            line = copies[copy]
        selected.append(line)
    return b"".join(selected)
