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

from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from chatd.counters import Counters
from chatd.events import Event, Mentioned
from chatd.text import alias_key

if TYPE_CHECKING:
    from chatd.interfaces import IMember as Member


# The members a line mentions, with the copy each of them gets.
MentionCopies = dict["Member", Mentioned]
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
        "_marks",
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
        # This turn's broadcasts (who skips or gets their own copy of each: _marks).
        self._batch: list[Event] = []
        # The batch encoded so far, per wire format (see Member.encode).
        self._encoded: dict[Callable[[Event], bytes], list[bytes]] = {}
        # Where in the batch members skip or get their own copy of an event.
        self._marks = Marks()
        # Copies of lines mentioning members, encoded so far, per wire format.
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
        batch = self._batch
        self._marks.add(len(batch), exclude, speaker, mentions)
        batch.append(event)
        return len(batch) == 1

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
        runs = Runs(lines)
        data = self._marks.selection(member, self.members[member], start, runs, encode, copies)
        if data and deliver(member, data, self.failed):
            self._counters.delivered(data)

    def flush(self) -> None:
        """Deliver this turn's batch: one write per member.

        The batch is encoded once per wire format. Members who skip none of its
        events and are mentioned by none (everyone but this turn's speakers, the
        mentioned, those ignoring somebody, and those caught up or arrived
        mid-turn) all get the same bytes object; the others get their own
        selection of it, cut from that same encoding at the events they skip
        (see :class:`Marks`). What is queued while this runs (a recipient cut
        off and leaving) goes into the next batch.
        """
        batch, encoded, served, copies = self._batch, self._encoded, self._served, self._copies
        if not batch:
            return
        marks = self._marks
        self._batch, self._encoded, self._served, self._copies = [], {}, {}, {}
        self._marks = Marks()
        skipping = marks.members()
        # Per wire format: the whole batch encoded, and how many got it.
        whole: dict[Callable[[Event], bytes], list[Any]] = {}
        # Per wire format, for those who get a selection: the batch to cut it from.
        cut: dict[Callable[[Event], bytes], Runs] = {}
        counters = self._counters
        # A snapshot: a recipient may drop (and leave) during the loop.
        for member, presence in list(self.members.items()):
            encode = member.encode
            if member in skipping or presence.ignores or member in served:
                runs = cut.get(encode)
                if runs is None:
                    sent = whole.get(encode)
                    lines = _encoded(batch, encoded, encode)
                    if sent is None:
                        sent = whole[encode] = [b"".join(lines), 0]
                    runs = cut[encode] = Runs(lines, sent[0])
                start = served.get(member, 0)
                own = copies.setdefault(encode, {})
                data = marks.selection(member, presence, start, runs, encode, own)
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
            if recipients:
                counters.delivered(data, recipients)


class Runs:
    """A batch encoded in one wire format, to cut members' selections from.

    Given the lines ``joined`` (at the end of the turn, the bytes everyone else
    gets) it keeps the offset of each line in them, so a run of lines between
    two skipped events costs a slice, whatever its length; otherwise (catching
    one member up mid-turn) runs are joined from the lines.
    """

    __slots__ = ("_joined", "_lines", "_offsets", "_view")

    def __init__(self, lines: list[bytes], joined: bytes | None = None) -> None:
        self._lines = lines
        self._joined = joined
        self._view: memoryview | None = None
        self._offsets: list[int] = []
        if joined is not None:
            self._view = memoryview(joined)
            self._offsets = list(accumulate(map(len, lines), initial=0))

    def extend(self, pieces: list[Any], start: int, stop: int) -> None:
        """Add to ``pieces`` the lines from ``start`` up to (not including) ``stop``."""
        if start >= stop:
            return
        view = self._view
        if view is None:
            pieces.extend(self._lines[start:stop])
        else:
            offsets = self._offsets
            pieces.append(view[offsets[start] : offsets[stop]])

    def rest(self, pieces: list[Any], start: int) -> bytes:
        """``pieces`` and then the lines from ``start`` to the end, as one bytes object."""
        if not pieces:
            if not start and self._joined is not None:
                # Nothing skipped: the very bytes the rest of the room gets.
                return self._joined
            if self._view is None:
                return b"".join(self._lines[start:])
        self.extend(pieces, start, len(self._lines))
        return b"".join(pieces)


class Marks:
    """Where in one turn's batch members skip an event or get their own copy of it.

    Indexed as the batch is queued, so that what a member gets costs in
    proportion to the events it skips or is mentioned in, never to the batch
    times the members who skip something (under churn, a busy room's turn holds
    many speakers, arrivals and departures, each of whom gets a selection).
    """

    __slots__ = ("excluded", "mentioned", "spoken")

    def __init__(self) -> None:
        # Per member, the indexes of the events it does not get (its own lines).
        self.excluded: dict[Member, list[int]] = {}
        # Per member, the indexes of the events that mention it, and its copies.
        self.mentioned: dict[Member, list[tuple[int, Mentioned]]] = {}
        # Per speaker's alias key, the indexes of what they said (for ignores).
        self.spoken: dict[str, list[int]] = {}

    def add(
        self,
        index: int,
        exclude: Member | None,
        speaker: str | None,
        mentions: MentionCopies | None,
    ) -> None:
        """Note the marks of the event queued at ``index``."""
        if exclude is not None:
            self.excluded.setdefault(exclude, []).append(index)
        if speaker is not None:
            self.spoken.setdefault(speaker, []).append(index)
        if mentions:
            for member, copy in mentions.items():
                self.mentioned.setdefault(member, []).append((index, copy))

    def members(self) -> set[Member]:
        """The members who skip an event or are mentioned (not counting ignores)."""
        return self.excluded.keys() | self.mentioned.keys()

    def selection(
        self,
        member: Member,
        presence: Presence,
        start: int,
        runs: Runs,
        encode: Callable[[Event], bytes],
        copies: dict[Mentioned, bytes],
    ) -> bytes:
        """What ``member`` gets of the batch in ``runs`` from ``start``: not its own
        lines, not the ignored, and its own copy of each line that mentions it.

        ``copies`` keeps the mentioned copies encoded with ``encode``, shared by
        the members who get the same one (at most two per line: with the bell
        and without).
        """
        mentions = self.mentioned.get(member)
        excluded = self.excluded.get(member, ())
        pieces: list[Any] = []
        at = start
        if mentions is None and not presence.ignores:
            # The usual selection under churn: a speaker, or an arrival mid-turn.
            for index in _from_index(excluded, start):
                runs.extend(pieces, at, index)
                at = index + 1
            return runs.rest(pieces, at)
        # Index -> the copy the member gets there, or None where it gets nothing.
        own: dict[int, Mentioned | None] = {}
        for index, mentioned in _from(mentions or (), start):
            own[index] = mentioned
        for index in _from_index(excluded, start):
            own[index] = None
        spoken = self.spoken
        for key in presence.ignores:
            for index in _from_index(spoken.get(key, ()), start):
                own[index] = None
        for index in sorted(own):
            runs.extend(pieces, at, index)
            copy = own[index]
            if copy is not None:
                line = copies.get(copy)
                if line is None:
                    line = copies[copy] = encode(copy)
                pieces.append(line)
            at = index + 1
        return runs.rest(pieces, at)


def _from_index(indexes: Sequence[int], start: int) -> Sequence[int]:
    """The ascending ``indexes`` from ``start`` on."""
    return indexes[bisect_left(indexes, start) :] if start else indexes


def _from(marks: Sequence[tuple[int, Mentioned]], start: int) -> Sequence[tuple[int, Mentioned]]:
    """The ``marks`` (ascending by index) from index ``start`` on."""
    if not start:
        return marks
    return marks[bisect_left(marks, start, key=itemgetter(0)) :]


def _encoded(
    batch: list[Event],
    encoded: dict[Callable[[Event], bytes], list[bytes]],
    encode: Callable[[Event], bytes],
) -> list[bytes]:
    """``batch`` encoded with ``encode``, each event once (cached in ``encoded``)."""
    lines = encoded.setdefault(encode, [])
    if len(lines) < len(batch):
        lines.extend(map(encode, batch[len(lines) :]))
    return lines
