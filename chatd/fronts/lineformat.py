"""How events look on the line protocol: one CRLF-terminated UTF-8 line each.

The prefixes let people and scripts tell lines apart at a glance:
``<alias> text`` is chat, ``* alias text`` an action, ``*alias* text`` a private
message, ``*** `` a server notice and ``!!! `` an error meant for you alone.

A chat line or action that mentions you ends in a BEL (``\a``, before the CRLF)
unless you said ``/bell off``: the terminal of an nc, telnet or SSH user beeps
once the line is shown, and the prefix stays the first thing on the line.
"""

from __future__ import annotations

from functools import lru_cache, singledispatch

from chatd.events import (
    Acted,
    Comings,
    Departed,
    Error,
    Event,
    History,
    InRoom,
    Joined,
    Left,
    Mentioned,
    Mentions,
    Notice,
    OfflineMessage,
    Renamed,
    RoomList,
    Roster,
    Said,
    TopicChanged,
    Whispered,
    WhisperSent,
    Whois,
)
from chatd.model import HistoryEntry
from chatd.text import count_of, duration, utc_stamp

CRLF = "\r\n"
BEL = "\a"


def encode(event: Event) -> bytes:
    """Render ``event`` as the bytes of one or more complete protocol lines."""
    return (_render(event) + CRLF).encode("utf-8")


def _names(names: tuple[str, ...], present: int) -> str:
    listed = f"({present}): {', '.join(names)}"
    if present > len(names):
        listed += f" and {present - len(names)} more (/who lists everyone)"
    return listed


@singledispatch
def _render(event: Event) -> str:
    raise TypeError(f"no line format for {event!r}")


@_render.register
def _(event: Said) -> str:
    return f"<{event.sender}> {event.text}"


@_render.register
def _(event: Acted) -> str:
    return f"* {event.sender} {event.text}"


@_render.register
def _(event: Mentioned) -> str:
    line = _render(event.line)
    return line + BEL if event.bell else line


@_render.register
def _(event: Whispered) -> str:
    return f"*{event.sender}* {event.text}"


@_render.register
def _(event: WhisperSent) -> str:
    return f"-> *{event.recipient}* {event.text}"


@_render.register
def _(event: Joined) -> str:
    came_from = f" from {event.came_from}" if event.came_from else ""
    return f"*** {event.alias} has joined {event.room}{came_from} ({event.present} here)"


@_render.register
def _(event: Departed) -> str:
    return f"*** {event.alias} has gone to {event.went_to}"


@_render.register
def _(event: Left) -> str:
    return f"*** {event.alias} has left ({event.reason})"


@_render.register
def _(event: Comings) -> str:
    counts = [
        f"{event.joined} joined" if event.joined else "",
        f"{event.left} left" if event.left else "",
    ]
    listed = [
        _listed(event.joined_names, event.joined, "joined" if event.left else ""),
        _listed(event.left_names, event.left, "left" if event.joined else ""),
    ]
    return (
        f"*** {', '.join(filter(None, counts))} in the last {duration(event.seconds)}:"
        f" {'; '.join(filter(None, listed))} ({event.present} here; /who lists everyone)"
    )


def _listed(names: tuple[str, ...], count: int, what: str) -> str:
    """``names`` of ``count`` who came or went: ann, bob and 3 more ``what``."""
    if not count:
        return ""
    listed = ", ".join(names)
    if count > len(names):
        listed += f" and {count - len(names)} more"
    return f"{listed} {what}" if what else listed


@_render.register
def _(event: Renamed) -> str:
    return f"*** {event.old} is now known as {event.new}"


@_render.register
def _(event: InRoom) -> str:
    names = _names(event.names, event.present)
    if event.welcome:
        lines = [f"*** Welcome, {event.welcome}! You are in {event.room} {names}"]
    else:
        lines = [f"*** You are now in {event.room} {names}"]
    if event.topic:
        lines.append(f"*** Topic: {event.topic}")
    if event.welcome:
        lines.append("*** Type /help for commands.")
    return CRLF.join(lines)


@_render.register
def _(event: Roster) -> str:
    where = f"In {event.room}" if event.room else "Online"
    return f"*** {where} ({len(event.names)}): {', '.join(event.names)}"


@_render.register
def _(event: RoomList) -> str:
    lines = [f"*** Rooms ({len(event.rooms) + event.more}):"]
    for name, present, topic in event.rooms:
        lines.append(f"***   {name} ({present})" + (f": {topic}" if topic else ""))
    if event.more:
        lines.append(f"***   and {count_of(event.more, 'smaller room')} not listed")
    return CRLF.join(lines)


@_render.register
def _(event: TopicChanged) -> str:
    if event.topic is None:
        return f"*** {event.alias} cleared the topic"
    return f"*** {event.alias} set the topic: {event.topic}"


@_render.register
def _(event: Whois) -> str:
    registered = "registered" if event.registered else "not registered"
    line = (
        f"*** {event.alias} is in {event.room}, online {duration(event.online_seconds)}, "
        f"idle {duration(event.idle_seconds)}, {registered}"
    )
    if event.away is not None:
        line += f"{CRLF}*** {event.alias} is away: {event.away}"
    return line


def _stamp(at: float) -> str:
    return f"[{utc_stamp(at)}]"


# The replay last rendered in each room (by name), at most this many rooms: every
# arrival replays the same lines until the next is said, and comparing them (a
# tuple's elements are compared by identity first) costs far less than rendering.
MAX_REPLAYS_KEPT = 256
_replays: dict[str, tuple[tuple[HistoryEntry, ...], str]] = {}


@_render.register
def _(event: History) -> str:
    if not event.entries:
        return f"*** No history in {event.room}."
    kept = _replays.get(event.room)
    if kept is not None and kept[0] == event.entries:
        return kept[1]
    lines = [f"*** History of {event.room} ({count_of(len(event.entries), 'line')}):"]
    lines.extend(_history_line(entry) for entry in event.entries)
    lines.append("*** End of history.")
    text = CRLF.join(lines)
    if len(_replays) >= MAX_REPLAYS_KEPT:
        _replays.clear()
    _replays[event.room] = (event.entries, text)
    return text


@lru_cache(maxsize=4096)
def _history_line(entry: HistoryEntry) -> str:
    """One line of history; cached, since every arrival in a room replays the same ones."""
    if entry.kind == "act":
        return f"{_stamp(entry.at)} * {entry.alias} {entry.text}"
    return f"{_stamp(entry.at)} <{entry.alias}> {entry.text}"


@_render.register
def _(event: Notice) -> str:
    return CRLF.join(f"*** {line}" for line in event.text.split("\n"))


@_render.register
def _(event: Error) -> str:
    return f"!!! {event.text}"


@_render.register
def _(event: OfflineMessage) -> str:
    return f"{_stamp(event.at)} *{event.sender}* {event.text}"


@_render.register
def _(event: Mentions) -> str:
    if not event.entries:
        return "*** No lines mentioned you while you were away."
    lines = [f"*** Lines that mentioned you while you were away ({len(event.entries)}):"]
    lines.extend(f"{entry.room} {_history_line(entry)}" for entry in event.entries)
    lines.append("*** End of mentions ('/mentions clear' forgets them).")
    return CRLF.join(lines)
