"""The values chatd keeps and passes around: lines of history, accounts, bans.

Plain value types with no storage in them, so that the hub, the events and the
front ends can use them without importing a store (SQLite or Redis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

BAN_KINDS = frozenset({"alias", "ip", "cidr"})


class HistoryEntry(NamedTuple):
    """One line said (``"say"``) or acted (``"act"``) in a room, at epoch seconds ``at``.

    A named tuple, in the order of the table's columns, because one is made for
    every chat line: it is several times cheaper to build than a frozen
    dataclass. A store keeps it as a :data:`PendingRow` until it is written. Its
    kind is checked where it enters the store (:meth:`IChatStore.append_history`).
    """

    room: str
    kind: str
    alias: str
    text: str
    at: float


@dataclass(frozen=True, slots=True)
class Account:
    """A registered alias; ``password_hash`` is opaque here (hashing is done elsewhere)."""

    alias: str
    password_hash: str
    created_at: float
    ignores: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban on an alias, an IP address or a CIDR block; ``expires_at`` None is forever."""

    mask: str
    kind: str
    reason: str
    set_by: str
    created_at: float
    expires_at: float | None

    def __post_init__(self) -> None:
        if self.kind not in BAN_KINDS:
            raise ValueError(f"ban kind must be 'alias', 'ip' or 'cidr', not {self.kind!r}")


@dataclass(frozen=True)
class SharedState:
    """What a hub takes up from the store at start, and again after a cluster's link
    was down: what other nodes changed meanwhile was not heard (see
    :func:`chatd.sharedstate.load_shared_state`)."""

    topics: dict[str, str]
    history: dict[str, list[HistoryEntry]]
    bans: list[Ban]
    motd: str | None


class WaitingMessage(NamedTuple):
    """A private message kept for a registered alias while it is offline (``/msg``).

    ``sender`` is the alias it came from, ``at`` when it was sent (epoch
    seconds); ``handle`` is the store's own name for it, given by the store when
    it is read, to drop it once delivered ("" before it is stored).
    """

    sender: str
    text: str
    at: float
    handle: str = ""


# What a store answers when asked to keep a waiting message.
KEPT = "kept"
# The recipient's box holds as many as it may: the message is not kept.
BOX_FULL = "box-full"
# The sender has as many waiting in that box as one sender may: not kept.
SENDER_FULL = "sender-full"
