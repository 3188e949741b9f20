"""The seams of chatd, as zope interfaces that mypy (with mypy-zope) checks.

Each names what one side of a seam may rely on of the other: the hub of its
members (:class:`IMember`), of its store (:class:`IChatStore`), of whoever
listens to what happens in it (:class:`IHubListener`, the cluster's bus) and of
whoever knows the members elsewhere (:class:`IDirectory`, the cluster's roster).
Test doubles and real implementations are checked against the same interface
with ``zope.interface.verify.verifyObject``.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from chatd.model import Account, Ban, HistoryEntry

# --- the hub and its members (owned by the session work) ---------------------


class IMember(Interface):
    """A chatter as the hub sees one: someone it can send to and disconnect.

    The hub sets :attr:`alias` when a member joins or is renamed; the rest is
    the member's own.
    """

    alias = Attribute("str | None: the alias taken, or None before one is.")
    host = Attribute("str | None: the peer's address (IPv4-mapped as IPv4), for bans.")
    peer = Attribute("str: the peer as the log shows it (host:port).")
    encode = Attribute("Callable[[Event], bytes]: an event in this member's wire format.")

    def send(data: bytes) -> None:
        """Deliver ``data`` (made by :attr:`encode`), bounded by the member's send queue."""

    def disconnect(reason: str) -> None:
        """Close after what was sent has gone out; ``reason`` is for the log."""


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


# --- the hub's listener and directory (owned by the hub and cluster work) ---
