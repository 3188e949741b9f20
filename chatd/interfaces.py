"""The seams of chatd, as zope interfaces that mypy (with mypy-zope) checks.

Each names what one side of a seam may rely on of the other: the hub of its
members (:class:`IMember`), of its store (:class:`IChatStore`), of whoever
listens to what happens in it (:class:`IHubListener`, the cluster's bus) and of
whoever knows the members elsewhere (:class:`IDirectory`, the cluster's roster).
Test doubles and real implementations are checked against the same interface
with ``zope.interface.verify.verifyObject``.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

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


# --- the hub's listener and directory (owned by the hub and cluster work) ---
