"""The seams of chatd, as zope interfaces that mypy (with mypy-zope) checks.

Each names what one side of a seam may rely on of the other: the hub of its
members (:class:`IMember`), of its store (:class:`IChatStore`), of whoever
listens to what happens in it (:class:`IHubListener`, the cluster's bus) and of
whoever knows the members elsewhere (:class:`IDirectory`, the cluster's roster).
Test doubles and real implementations are checked against the same interface
with ``zope.interface.verify.verifyObject``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from zope.interface import Interface

from chatd.events import Event
from chatd.model import Ban

# --- the hub and its members (owned by the session work) ---------------------


class IMember(Interface):
    """A session as the hub sees it.

    ``encode`` must be the same object for every member of one front end (a plain
    function, not a bound method): the hub uses it as the key under which it
    encodes each broadcast event once and hands the same bytes to all of them.
    """

    # The alias the hub gave the member (on join and rename); None before it joined.
    alias: str | None
    # The peer's IP address, for IP bans; None where there is none (a UNIX socket).
    host: str | None
    # Where the member connects from, for the log (e.g. 192.0.2.1:50312).
    peer: str
    encode: Callable[[Event], bytes]

    def send(data: bytes) -> None:
        """Queue ``data`` for the member's connection; never blocks, never raises."""

    def disconnect(reason: str) -> None:
        """Close the member's connection after what was already sent."""


# --- the store (owned by the stores work) -----------------------------------


# --- the hub's listener and directory (owned by the hub and cluster work) ---


class IHubListener(Interface):
    """Told by the hub what actually happened here, once it has happened (the cluster's
    bus publishes it to the other nodes).

    Only what local members did is told: what the hub hears from other nodes (its
    ``remote_*`` methods) is not told back. A member passed in is online here; the
    listener may ask the hub about it (:meth:`chatd.hub.Hub.presence_of`).
    """

    def joined(member: IMember) -> None:
        """``member`` came online here (registered: :meth:`chatd.hub.Hub.is_registered`).

        Claiming the alias can fail (another node took it in the same instant):
        the listener then gives it up with :meth:`chatd.hub.Hub.lost_alias`.
        """

    def left(alias: str, reason: str) -> None:
        """The member ``alias`` went offline here, for ``reason`` (as shown to its room)."""

    def moved(member: IMember, came_from: str) -> None:
        """``member`` went from room ``came_from`` to the room it is in now."""

    def renamed(member: IMember, old: str) -> None:
        """``member``, formerly ``old``, has the alias it has now.

        If another node took the new alias in the same instant, the listener
        takes the member back to ``old`` with :meth:`chatd.hub.Hub.rename_back`.
        """

    def said(alias: str, room: str, text: str, at: float) -> None:
        """``alias`` said ``text`` in ``room`` at ``at`` (epoch seconds): the hot path."""

    def acted(alias: str, room: str, text: str, at: float) -> None:
        """``alias`` did ``/me text`` in ``room`` at ``at``."""

    def topic_set(alias: str, room: str, topic: str | None) -> None:
        """``alias`` set the topic of ``room`` to ``topic`` (None: cleared it)."""

    def away_set(member: IMember) -> None:
        """``member`` went away or came back (its presence says which)."""

    def registered(alias: str, member: IMember | None) -> None:
        """``alias`` was just registered; ``member`` is still online under it, or None
        (gone, or renamed, meanwhile: the alias is registered either way)."""

    def banned(ban: Ban, by: str) -> None:
        """The operator online as ``by`` set ``ban`` (saved, and enforced here)."""

    def unbanned(mask: str) -> None:
        """The ban on ``mask`` was lifted."""

    def muted(alias: str, until: float | None) -> None:
        """``alias`` is muted until ``until`` (clock seconds), or until unmuted (None)."""

    def unmuted(alias: str) -> None:
        """``alias`` was unmuted."""

    def motd_set(text: str | None) -> None:
        """An operator set the message of the day (None: back to --motd FILE's)."""


class IRemoteMember(Interface):
    """A member online on another node, as a directory knows them."""

    alias: str
    room: str
    # Clock seconds: when they came online, and when they last said something.
    since: float
    active_at: float
    away: str | None
    registered: bool


class IDirectory(Interface):
    """What the hub asks about members elsewhere (the cluster's roster).

    Aliases are unique across every node; rooms span them. With no cluster the
    hub asks an empty directory, where nobody is elsewhere.
    """

    def taken(alias: str, account: str | None) -> bool:
        """Whether ``alias`` is held elsewhere (or still reserved for a change of alias
        not yet confirmed); the owner of a registered alias, ``account`` (its alias
        key), may take it from a session of theirs elsewhere."""

    def renaming(alias: str) -> bool:
        """Whether the member known here as ``alias`` awaits the answer to a change of
        alias (another is refused until then)."""

    def take_over(alias: str) -> None:
        """The owner of registered ``alias`` logged in here: forget their session
        elsewhere, without announcing it (its node ends it)."""

    def find(alias: str) -> IRemoteMember | None:
        """The member online elsewhere as ``alias`` (in any case), if any."""

    def aliases() -> Iterable[str]:
        """Every alias online elsewhere."""

    def names_in(room: str) -> Iterable[str]:
        """The aliases in ``room`` (in any case) elsewhere."""

    def count_in(room: str) -> int:
        """How many are in ``room`` (in any case) elsewhere: the hot part of an arrival."""

    def rooms() -> Iterable[tuple[str, int]]:
        """The rooms in use elsewhere: each with the name it was opened with, and its count."""

    def room_name(room: str) -> str | None:
        """The name ``room`` was opened with elsewhere, if it is in use elsewhere."""

    def whisper(sender: str, recipient: str, text: str) -> bool:
        """Send a private message to ``recipient`` elsewhere; False if it cannot be sent now."""

    def kick(alias: str, by: str, operator: str, reason: str) -> bool:
        """Have ``alias`` kicked by their node (``by``: the kicker's alias, ``operator``:
        their operator name); False if it cannot be reached now."""
