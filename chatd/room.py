"""A room: the members who hear each other, and the lines they hear together.

Broadcasts to a room are coalesced per reactor turn: everything said during one
turn is encoded once and reaches each member as a single write when the hub
flushes at the end of the turn. Under load a turn carries many lines, so the cost
per recipient is paid per turn rather than per line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatd.events import Event
from chatd.text import alias_key

if TYPE_CHECKING:
    from chatd.hub import Member


class Presence:
    """What the hub knows of one member besides its alias."""

    __slots__ = (
        "account",
        "active_at",
        "away",
        "ignores",
        "operator",
        "replay",
        "room",
        "since",
    )

    def __init__(self, room: Room, now: float, account: str | None, replay: bool) -> None:
        self.room = room
        self.since = now
        self.active_at = now
        self.away: str | None = None
        # Alias keys whose chat lines and actions this member does not see.
        self.ignores: set[str] = set()
        # The alias key of the registered account whose password this member gave.
        self.account = account
        # Whether a room's recent history is shown on entering it (bots say no).
        self.replay = replay
        # The operator name this member logged in with (/oper), if any.
        self.operator: str | None = None


class Room:
    """Members of one room (in the order they came in) and this turn's broadcasts."""

    __slots__ = ("_batch", "members", "name", "topic")

    def __init__(self, name: str, topic: str | None = None) -> None:
        self.name = name
        self.topic = topic
        # In the order they came in: the longest present first.
        self.members: dict[Member, Presence] = {}
        # Each event with the member it skips and the alias key of who said it.
        self._batch: list[tuple[Event, Member | None, str | None]] = []

    def __len__(self) -> int:
        return len(self.members)

    def names(self) -> tuple[str, ...]:
        """The aliases present, sorted case-insensitively."""
        return tuple(sorted((m.alias for m in self.members), key=alias_key))  # type: ignore[misc]

    def queue(
        self, event: Event, exclude: Member | None = None, speaker: str | None = None
    ) -> bool:
        """Add ``event`` to this turn's batch; True if the batch was empty before.

        ``speaker`` is the alias key of whoever said it, for those who ignore them.
        """
        self._batch.append((event, exclude, speaker))
        return len(self._batch) == 1

    def flush(self) -> None:
        """Deliver this turn's batch: one write per member.

        The batch is encoded once per wire format. Members who skip none of its
        events (everyone but this turn's speakers, and those ignoring somebody) all
        get the same bytes object; the others get their own selection of it.
        """
        batch, self._batch = self._batch, []
        if not batch:
            return
        skipping = {skipped for _, skipped, _ in batch if skipped is not None}
        encoded: dict[Callable[[Event], bytes], list[bytes]] = {}
        joined: dict[Callable[[Event], bytes], bytes] = {}
        # A snapshot: a recipient may drop (and leave) during the loop.
        for member, presence in list(self.members.items()):
            encode = member.encode
            lines = encoded.get(encode)
            if lines is None:
                lines = encoded[encode] = [encode(event) for event, _, _ in batch]
                joined[encode] = b"".join(lines)
            if member in skipping or presence.ignores:
                ignores = presence.ignores
                data = b"".join(
                    line
                    for line, (_, skipped, speaker) in zip(lines, batch, strict=True)
                    if skipped is not member and speaker not in ignores
                )
                if data:
                    member.send(data)
            else:
                member.send(joined[encode])
