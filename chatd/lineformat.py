"""How events look on the line protocol: one CRLF-terminated UTF-8 line each.

The prefixes let people and scripts tell lines apart at a glance:
``<alias> text`` is chat, ``* alias text`` an action, ``*alias* text`` a private
message, ``*** `` a server notice and ``!!! `` an error meant for you alone.
"""

from __future__ import annotations

from functools import singledispatch

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

CRLF = "\r\n"


def encode(event: Event) -> bytes:
    """Render ``event`` as the bytes of one or more complete protocol lines."""
    return (_render(event) + CRLF).encode("utf-8")


def notice_line(text: str) -> bytes:
    """A server notice line, for front-end messages that are not hub events."""
    return encode(Notice(text))


def error_line(text: str) -> bytes:
    """An error line, for front-end refusals that are not hub events."""
    return encode(Error(text))


def _who(online: tuple[str, ...]) -> str:
    return f"Online ({len(online)}): {', '.join(online)}"


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
def _(event: Whispered) -> str:
    return f"*{event.sender}* {event.text}"


@_render.register
def _(event: WhisperSent) -> str:
    return f"-> *{event.recipient}* {event.text}"


@_render.register
def _(event: Joined) -> str:
    return f"*** {event.alias} has joined ({event.online} online)"


@_render.register
def _(event: Left) -> str:
    return f"*** {event.alias} has left ({event.reason})"


@_render.register
def _(event: Renamed) -> str:
    return f"*** {event.old} is now known as {event.new}"


@_render.register
def _(event: Welcome) -> str:
    online = f"Online ({event.total}): {', '.join(event.online)}"
    if event.total > len(event.online):
        online += f" and {event.total - len(event.online)} more (/who lists everyone)"
    return f"*** Welcome, {event.alias}! {online}{CRLF}*** Type /help for commands."


@_render.register
def _(event: Roster) -> str:
    return f"*** {_who(event.online)}"


@_render.register
def _(event: Notice) -> str:
    return CRLF.join(f"*** {line}" for line in event.text.split("\n"))


@_render.register
def _(event: Error) -> str:
    return f"!!! {event.text}"
