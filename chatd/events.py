"""What the hub tells members, independent of how any front end puts it on the wire.

Each front end renders these into its own format (the line protocol in
:mod:`chatd.fronts.lineformat`). All text in an event has already been through
:func:`chatd.text.clean_text` and all aliases follow the alias rule, so a
renderer never needs to sanitise.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatd.model import HistoryEntry


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
    """``alias`` came into ``room`` (``came_from`` another room, or newly online).

    ``present`` counts the room's members, the newcomer included.
    """

    alias: str
    room: str
    present: int
    came_from: str | None = None


@dataclass(frozen=True, slots=True)
class Departed:
    """``alias`` moved from this room to room ``went_to``."""

    alias: str
    went_to: str


@dataclass(frozen=True, slots=True)
class Left:
    """``alias`` went offline; ``reason`` says how (a quit message, a timeout ...)."""

    alias: str
    reason: str


@dataclass(frozen=True, slots=True)
class Comings:
    """Who came into and went from a big room over the last ``seconds``, in one event.

    In a room of more than ``--quiet-joins-above`` members, arrivals and
    departures are not announced one by one (each would be a line to everyone
    there) but summed up once per interval. ``joined`` and ``left`` count them;
    ``joined_names`` and ``left_names`` list at most the first
    :data:`chatd.hub.LISTED_NAMES` of each, in the order they came or went. Someone
    who came and went (or went and came back) within the interval is in neither.
    """

    room: str
    joined: int
    left: int
    joined_names: tuple[str, ...]
    left_names: tuple[str, ...]
    present: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Renamed:
    """``old`` is now known as ``new``."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class InRoom:
    """Tells a member the room they are now in: on arrival (with ``welcome``) or a move.

    ``names`` lists at most a screenful of those present (see
    :data:`chatd.hub.LISTED_NAMES`); ``present`` counts everyone.
    """

    room: str
    names: tuple[str, ...]
    present: int
    topic: str | None
    welcome: str | None = None


@dataclass(frozen=True, slots=True)
class Roster:
    """The answer to ``/who``: those in ``room``, or everyone online if it is None."""

    room: str | None
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoomList:
    """The answer to ``/rooms``: name, member count and topic of each room in use.

    At most :data:`chatd.hub.LISTED_ROOMS`, the busiest, in name order; ``more``
    counts the rooms left out (each one's topic may be 300 characters, and a list
    of thousands would overflow the asker's send queue and cut them off).
    """

    rooms: tuple[tuple[str, int, str | None], ...]
    more: int = 0


@dataclass(frozen=True, slots=True)
class TopicChanged:
    """``alias`` set the room's topic (or cleared it, when ``topic`` is None)."""

    alias: str
    topic: str | None


@dataclass(frozen=True, slots=True)
class Whois:
    """The answer to ``/whois``: where someone is, for how long, and if they are away."""

    alias: str
    room: str
    online_seconds: float
    idle_seconds: float
    registered: bool
    away: str | None


@dataclass(frozen=True, slots=True)
class History:
    """Recent lines of ``room``, oldest first, shown on arrival or asked for with /history.

    ``reader`` is the alias of the one member it is shown to, so that a format
    that marks mentions (JSON) can mark the lines that mention them; replayed
    lines never ring a bell.
    """

    room: str
    entries: tuple[HistoryEntry, ...]
    reader: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Information from the server to one member or to all; may span lines (``\\n``)."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """Something the member asked for was refused; only they see it."""

    text: str


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    """A private message ``sender`` left at ``at`` (epoch seconds) while its recipient,
    the member who receives this event, was offline: delivered at their next login."""

    sender: str
    text: str
    at: float


@dataclass(frozen=True, slots=True)
class Mentions:
    """The answer to ``/mentions``: the lines that mentioned the member while away,
    oldest first, each with its room."""

    entries: tuple[HistoryEntry, ...]


@dataclass(frozen=True, slots=True)
class Mentioned:
    """``line`` as the one member it mentions gets it (see :mod:`chatd.mentions`).

    Everyone else in the room gets ``line`` itself; this copy is marked (the
    web page and the client highlight it) and, if ``bell``, rings the member's
    terminal (``/bell off`` turns that off, the mark stays).
    """

    line: Said | Acted
    bell: bool


Event = (
    Said
    | Acted
    | Whispered
    | WhisperSent
    | Joined
    | Departed
    | Left
    | Comings
    | Renamed
    | InRoom
    | Roster
    | RoomList
    | TopicChanged
    | Whois
    | History
    | Notice
    | Error
    | OfflineMessage
    | Mentions
    | Mentioned
)
