"""What the hub tells members, independent of how any front end puts it on the wire.

Each front end renders these into its own format (the line protocol in
:mod:`chatd.lineformat`). All text in an event has already been through
:func:`chatd.text.clean_text` and all aliases follow the alias rule, so a
renderer never needs to sanitise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Said:
    """A chat line from ``sender`` to everyone else."""

    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class Acted:
    """A ``/me`` action by ``sender``."""

    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class Whispered:
    """A private message to the one member who receives this event."""

    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class WhisperSent:
    """Confirmation to the sender that a private message was delivered."""

    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Joined:
    """``alias`` came online; ``online`` counts everyone, the newcomer included."""

    alias: str
    online: int


@dataclass(frozen=True, slots=True)
class Left:
    """``alias`` went away; ``reason`` says how (a quit message, a timeout ...)."""

    alias: str
    reason: str


@dataclass(frozen=True, slots=True)
class Renamed:
    """``old`` is now known as ``new``."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """Sent to a member once their alias is accepted.

    ``online`` names at most a screenful of those present (see
    :data:`chatd.hub.WELCOME_NAMES`); ``total`` counts everyone.
    """

    alias: str
    online: tuple[str, ...]
    total: int


@dataclass(frozen=True, slots=True)
class Roster:
    """Everyone online, in display order, as asked for with ``/who``."""

    online: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    """Information from the server to one member or to all; may span lines (``\\n``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """Something the member asked for was refused; only they see it."""

    text: str


Event = (
    Said
    | Acted
    | Whispered
    | WhisperSent
    | Joined
    | Left
    | Renamed
    | Welcome
    | Roster
    | Notice
    | Error
)
