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

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from chatd.events import Event
from chatd.model import Account, Ban, HistoryEntry, WaitingMessage

# --- the hub and its members (owned by the session work) ---------------------


class IMember(Interface):
    """A session as the hub sees it: someone it can send to and disconnect.

    The hub sets :attr:`alias` when a member joins or is renamed; the rest is the
    member's own. ``encode`` should be the same object for every member of one front
    end (a plain function, not a bound method): the hub uses it as the key under
    which it encodes each broadcast event once and hands the same bytes to all of them.
    A format that depends on its recipient (IRC's: the nick, the channel) gives each
    member an encoder object of its own, called in the order the member receives
    what it makes; its members then cost an encoding each.
    """

    # The alias the hub gave the member (on join and rename); None before it joined.
    alias: str | None
    # The peer's IP address (IPv4-mapped as IPv4), for IP bans; None where there is
    # none (a UNIX socket).
    host: str | None
    # Where the member connects from, for the log (e.g. 192.0.2.1:50312).
    peer: str
    # An event in this member's wire format.
    encode: Callable[[Event], bytes]

    def send(data: bytes) -> None:
        """Queue ``data`` (made by :attr:`encode`) for the member's connection, bounded
        by its send queue; never blocks, never raises."""

    def disconnect(reason: str) -> None:
        """Close after what was sent has gone out; ``reason`` is for the log."""


class IFormatSwitch(Interface):
    """A member whose connection ``/format`` may switch to another wire format.

    Apart from :class:`IMember` because the hub never switches anyone's format:
    the command does, for its sender.
    """

    def switch_format(name: str) -> None:
        """Tell the member its format (``name`` empty), or switch to format ``name``
        and confirm in it; refuse a name its connection cannot speak."""


class IConnection(Interface):
    """A front end's connection, as its :class:`~chatd.session.ChatSession` uses it.

    The front end turns its wire into whole lines for the session and gives it
    a consumer for its output; the session decides when the connection ends.
    """

    address = Attribute("IAddress: the peer's address.")
    consumer = Attribute(
        "IConsumer: where the session's output goes. The session's send queue writes"
        " to it and registers with it as a streaming producer, which it pauses while"
        " the peer does not read."
    )

    def close() -> None:
        """Close once what was written has been sent."""

    def abort() -> None:
        """Close now, dropping whatever has not been sent (a stuck or hostile peer)."""

    def discard_pending_input() -> int:
        """Forget input received but not yet handed over as lines; return how many lines
        that was (an unfinished one included: the rest of it is skipped when it comes)."""


# --- the store (owned by the stores work) -----------------------------------

# The defaults of the bounded start-up reads, part of the contract: however many
# rooms ever spoke or have a topic, a hub warms its cache with this many.
HISTORY_ROOMS_AT_START = 100
TOPICS_AT_START = 100


class IChatStore(Interface):
    """What outlives a connection: room history, accounts, SSH keys, bans, settings, topics.

    Implemented by :class:`chatd.stores.sqlite.SQLiteStore` (one server) and
    :class:`chatd.stores.redis.RedisStore` (a cluster). Every call but
    :meth:`append_history` answers with a Deferred; a store is used from the
    reactor thread and never blocks it. Life cycle: :meth:`start` once; any use
    before raises ``StoreNotStarted`` at once (a wiring mistake); after
    :meth:`stop` the Deferreds fail with ``StoreClosed`` (a race with shutdown,
    which callers handle like any storage error). Aliases are compared in any
    case (:func:`chatd.text.alias_key`).
    """

    location: str = Attribute(
        "Where the data is, for the log: the database file, or the Redis URL without its password."
    )
    history_per_room: int = Attribute("Lines kept per room (the newest).")
    history_max_age_seconds: float | None = Attribute(
        "Age past which lines are dropped; None keeps them however old."
    )
    batches_written: int = Attribute("History batches written so far, for the metrics.")
    write_seconds: float = Attribute(
        "Seconds the history batches took from hand-over to stored, in all, for the metrics."
    )

    # Life cycle.

    def start() -> Deferred[None]:
        """Open the storage; calls made before the Deferred fires run after the opening."""

    def stop() -> Deferred[None]:
        """Write pending history (best effort), close, and refuse any later use.

        Never fails (what goes wrong is logged); harmless when called again or
        without a start.
        """

    def flush() -> Deferred[None]:
        """Write every pending history line now; fails if the write does (the lines are kept)."""

    # History.

    def append_history(entry: HistoryEntry) -> None:
        """Keep ``entry`` (kind "say" or "act") for the next write; cheap, for every chat line.

        Never raises once started: after :meth:`stop` the entry is dropped (with one warning).
        """

    def recent_history(
        room: str, limit: int, before: float | None = None
    ) -> Deferred[list[HistoryEntry]]:
        """The newest ``limit`` lines of ``room``, oldest first, written or not.

        With ``before``, only lines strictly older than that time (for paging back).
        """

    def recent_history_by_room(
        per_room: int, max_rooms: int = HISTORY_ROOMS_AT_START
    ) -> Deferred[dict[str, list[HistoryEntry]]]:
        """The newest ``per_room`` lines, oldest first, of the ``max_rooms`` rooms
        spoken in most recently (lines not yet written count, and rank first)."""

    # Accounts and their SSH keys.

    def get_account(alias: str) -> Deferred[Account | None]:
        """The account registered under ``alias`` in any case, or None."""

    def registered_keys() -> Deferred[set[str]]:
        """The alias keys of every account, so the hub can tell registered aliases at once."""

    def create_account(alias: str, password_hash: str) -> Deferred[bool]:
        """Register ``alias``; False if it (in any case) is registered already."""

    def set_password_hash(alias: str, new_hash: str) -> Deferred[bool]:
        """Replace the password hash; False if ``alias`` is not registered."""

    def set_ignores(alias: str, ignores: Iterable[str]) -> Deferred[None]:
        """Replace the ignore list of ``alias``; fails with NoSuchAccount if unregistered."""

    def add_ssh_key(alias: str, fingerprint: str, public_key: str) -> Deferred[bool]:
        """Bind an SSH key to registered ``alias``; False if bound already.

        Fails for an alias nobody registered: NoSuchAccount from Redis, the
        foreign key's ``sqlite3.IntegrityError`` from SQLite.
        """

    def remove_ssh_key(alias: str, fingerprint: str) -> Deferred[bool]:
        """Unbind the SSH key with ``fingerprint`` from ``alias``; False if it was not bound."""

    def ssh_keys(alias: str) -> Deferred[list[tuple[str, str]]]:
        """The (fingerprint, public key) pairs bound to ``alias``, oldest first."""

    # Bans.

    def add_ban(ban: Ban) -> Deferred[None]:
        """Record ``ban``, replacing any ban on the same mask (compared case-insensitively)."""

    def remove_ban(mask: str) -> Deferred[bool]:
        """Lift the ban on ``mask``; False if there was none."""

    def active_bans(now: float) -> Deferred[list[Ban]]:
        """The bans in force at ``now``, oldest first; expired ones are deleted on the way."""

    # Settings (the MOTD, ...) and room topics.

    def get_setting(key: str) -> Deferred[str | None]:
        """The value of setting ``key``, or None if it is not set."""

    def set_setting(key: str, value: str | None) -> Deferred[None]:
        """Set ``key`` to ``value``; None deletes it."""

    def set_topic(room: str, topic: str | None, set_by: str) -> Deferred[None]:
        """Set the topic of ``room``; None clears it."""

    def topics(max_rooms: int = TOPICS_AT_START) -> Deferred[dict[str, str]]:
        """The topics of the ``max_rooms`` rooms whose topic was set last, newest first."""

    def topic(room: str) -> Deferred[str | None]:
        """The topic of ``room`` (in any case), or None if it has none."""

    # What waits for a registered alias while it is offline or away (see chatd.offline).
    # Aliases are compared case-insensitively; times are epoch seconds; what is older
    # than ``not_before`` is never answered and is deleted on the way.

    def keep_message(
        recipient: str,
        message: WaitingMessage,
        per_recipient: int,
        per_sender: int,
        not_before: float,
        sender_key: str | None = None,
    ) -> Deferred[str]:
        """Keep ``message`` for ``recipient`` unless their box holds ``per_recipient``
        messages or ``per_sender`` from its sender: answers KEPT, BOX_FULL or
        SENDER_FULL (chatd.model), checked and kept in one atomic step.

        ``sender_key`` says who the sender is counted as (by default the alias key
        of ``message.sender``): the hub passes what a new alias does not change."""

    def waiting_messages(recipient: str, not_before: float) -> Deferred[list[WaitingMessage]]:
        """The messages kept for ``recipient``, oldest first, each with its handle."""

    def drop_messages(recipient: str, handles: Iterable[str]) -> Deferred[None]:
        """Delete the messages of ``recipient`` with these handles (delivered); others stay."""

    def add_mention(
        account: str, entry: HistoryEntry, limit: int, not_before: float
    ) -> Deferred[None]:
        """Keep ``entry``, a line that mentioned ``account`` while away; the newest
        ``limit`` are kept."""

    def mentions_of(account: str, not_before: float) -> Deferred[list[HistoryEntry]]:
        """The lines kept as mentioning ``account``, oldest first."""

    def clear_mentions(account: str) -> Deferred[None]:
        """Forget the lines kept as mentioning ``account``."""

    def set_away_room(account: str, room: str | None, since: float) -> Deferred[None]:
        """Note that ``account`` went offline from ``room`` at ``since``; None: it is back."""

    def away_rooms() -> Deferred[dict[str, tuple[str, float]]]:
        """Every account offline with the room it left and when: account key -> (room, since)."""


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
