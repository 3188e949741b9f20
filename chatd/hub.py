"""Who is online and who hears what: the one place that decides delivery.

The hub knows aliases and members, never sockets or bytes formats. Any front end
(the line protocol today; TLS, WebSocket or SSH sessions tomorrow) joins its
sessions here as :class:`Member` objects, and a multi-node bus can later sit
behind the same methods. All user text passes :func:`chatd.text.clean_text`
here, so no front end can forget to sanitise.

Broadcasts are coalesced per reactor turn: everything said during one turn is
encoded once and reaches each member as a single write at the end of the turn.
Under load a turn carries many lines, so the cost per recipient is paid per turn
rather than per line. Anything sent to one member alone, and any change of
membership, first flushes what is pending, so each member still sees events in
the order they happened.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from chatd.events import (
    Acted,
    Error,
    Event,
    Joined,
    Left,
    Notice,
    Renamed,
    Roster,
    Said,
    Welcome,
    Whispered,
    WhisperSent,
)
from chatd.text import AliasRefused, alias_key, check_alias, clean_text

# How many names a newcomer is shown. In a big room, listing everyone on every join
# would cost a line of O(members) per join, O(members^2) in all, for a list
# nobody reads; /who gives the whole list on request.
WELCOME_NAMES = 30


class Member(Protocol):
    """A session as the hub sees it.

    ``encode`` must be the same object for every member of one front end (a plain
    function, not a bound method): the hub uses it as the key under which it
    encodes each broadcast event once and hands the same bytes to all of them.
    """

    alias: str | None
    encode: Callable[[Event], bytes]

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the member's connection; never blocks, never raises."""

    def disconnect(self, reason: str) -> None:
        """Close the member's connection after what was already sent."""


class Hub:
    """The set of members online under unique, case-insensitive aliases."""

    log = Logger()

    def __init__(self, clock: IReactorTime | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        # Public so that front ends schedule their timers on the same clock.
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self._members: dict[str, Member] = {}
        self._closing = False
        # Broadcasts of this reactor turn: each event with the member it skips.
        self._batch: list[tuple[Event, Member | None]] = []
        self._flush_call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._members)

    def is_online(self, member: Member) -> bool:
        """Whether ``member`` has joined and not yet left."""
        alias = member.alias
        return alias is not None and self._members.get(alias_key(alias)) is member

    def online(self) -> tuple[str, ...]:
        """Every alias online, sorted case-insensitively."""
        return tuple(sorted((m.alias for m in self._members.values()), key=alias_key))  # type: ignore[misc]

    def _welcome(self, alias: str) -> Welcome:
        total = len(self._members)
        if total <= WELCOME_NAMES:
            return Welcome(alias, self.online(), total)
        # The longest present first: dicts keep insertion (joining) order.
        earliest = islice(self._members.values(), WELCOME_NAMES)
        return Welcome(alias, tuple(m.alias for m in earliest), total)  # type: ignore[misc]

    def check_available(self, alias: str) -> str:
        """Return ``alias`` if a newcomer may take it now, else raise AliasRefused."""
        check_alias(alias)
        if alias_key(alias) in self._members:
            raise AliasRefused(f"The alias {alias} is taken.")
        return alias

    def join(self, member: Member, alias: str) -> None:
        """Put ``member`` online as ``alias``, welcome it and tell everyone else.

        Raises AliasRefused (and changes nothing) if the alias may not be taken.
        """
        self.check_available(alias)
        self.flush()  # what was said before the newcomer arrived is not theirs
        member.alias = alias
        self._members[alias_key(alias)] = member
        self.log.info("{alias} joined", alias=alias)
        self.tell(member, self._welcome(alias))
        self._broadcast(Joined(alias, len(self._members)), exclude=member)

    def leave(self, member: Member, reason: str) -> None:
        """Take ``member`` offline and announce it, once, however often it is called."""
        if not self.is_online(member):
            return
        alias = member.alias
        assert alias is not None
        del self._members[alias_key(alias)]
        reason = clean_text(reason) or "left"
        self.log.info("{alias} left ({reason})", alias=alias, reason=reason)
        if not self._closing:
            self._broadcast(Left(alias, reason), exclude=member)

    def say(self, member: Member, text: str) -> None:
        """Relay a chat line to everyone but its sender; blank lines are dropped."""
        text = clean_text(text)
        if text:
            self._broadcast(Said(self._alias_of(member), text), exclude=member)

    def act(self, member: Member, text: str) -> None:
        """Relay a ``/me`` action to everyone but its sender."""
        text = clean_text(text)
        if text:
            self._broadcast(Acted(self._alias_of(member), text), exclude=member)

    def whisper(self, member: Member, recipient_alias: str, text: str) -> None:
        """Deliver a private message to one member and confirm it to the sender."""
        sender = self._alias_of(member)
        recipient = self._members.get(alias_key(recipient_alias))
        text = clean_text(text)
        if recipient is None:
            self.tell(member, Error(f"No such user: {clean_text(recipient_alias)}"))
        elif not text:
            self.tell(member, Error("Empty private message not sent."))
        else:
            self.tell(recipient, Whispered(sender, text))
            self.tell(member, WhisperSent(recipient.alias, text))  # type: ignore[arg-type]

    def rename(self, member: Member, new_alias: str) -> None:
        """Change ``member``'s alias, freeing the old one, and tell everyone.

        Raises AliasRefused if the new alias may not be taken. A change of case
        only (alice to Alice) is allowed: the name stays the member's own.
        """
        old = self._alias_of(member)
        if new_alias == old:
            raise AliasRefused(f"You are already known as {old}.")
        if alias_key(new_alias) == alias_key(old):
            check_alias(new_alias)
        else:
            self.check_available(new_alias)
        del self._members[alias_key(old)]
        member.alias = new_alias
        self._members[alias_key(new_alias)] = member
        self.log.info("{old} is now known as {new}", old=old, new=new_alias)
        self._broadcast(Renamed(old, new_alias))

    def roster(self, member: Member) -> None:
        """Tell ``member`` who is online."""
        self.tell(member, Roster(self.online()))

    def announce(self, text: str) -> None:
        """Send a server notice to everyone online."""
        self._broadcast(Notice(text))

    def close(self, reason: str) -> None:
        """Tell everyone the hub is closing and disconnect them, without leave notices.

        Announcing each departure to everyone still online would cost a write per
        pair of members, for news nobody will read.
        """
        self._closing = True
        self.announce(reason)
        self.flush()
        for member in list(self._members.values()):
            member.disconnect(reason)

    def tell(self, member: Member, event: Event) -> None:
        """Deliver ``event`` to ``member`` alone, after anything already broadcast."""
        self.flush()
        member.send(member.encode(event))

    def flush(self) -> None:
        """Deliver every broadcast of this turn now: one write per member.

        The batch is encoded once per wire format. Members who skip none of its
        events (everyone but this turn's speakers) all get the same bytes object;
        a speaker gets the batch without their own lines.
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        skipping = {skipped for _, skipped in batch if skipped is not None}
        encoded: dict[Callable[[Event], bytes], list[bytes]] = {}
        joined: dict[Callable[[Event], bytes], bytes] = {}
        # A snapshot: a recipient may drop (and leave) during the loop.
        for member in list(self._members.values()):
            encode = member.encode
            lines = encoded.get(encode)
            if lines is None:
                lines = encoded[encode] = [encode(event) for event, _ in batch]
                joined[encode] = b"".join(lines)
            if member in skipping:
                data = b"".join(
                    line
                    for line, (_, skipped) in zip(lines, batch, strict=True)
                    if skipped is not member
                )
                if data:
                    member.send(data)
            else:
                member.send(joined[encode])

    def _alias_of(self, member: Member) -> str:
        if not self.is_online(member):
            raise LookupError("member is not online")
        return member.alias  # type: ignore[return-value]

    def _broadcast(self, event: Event, exclude: Member | None = None) -> None:
        self._batch.append((event, exclude))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)
