"""IRC messages on the wire (RFC 1459/2812, IRCv3 message tags): parsing and formatting.

Nothing here knows chatd: :func:`parse` turns one line a client sent into a
:class:`Message`, :func:`line` builds one line the server sends. The limits are
the protocol's: a message is at most 512 bytes with its CRLF, and the tags in
front of it at most 8191 more (IRCv3 message-tags).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 1459 2.3: a message, CRLF included, without the tags in front of it.
MAX_MESSAGE_BYTES = 512
# IRCv3 message-tags: the tags in front of a message, '@' and the space after them included.
MAX_TAG_BYTES = 8191
# RFC 2812 2.3: a command has at most 15 parameters.
MAX_PARAMS = 15
CRLF = "\r\n"


@dataclass(frozen=True, slots=True)
class Message:
    """A client's message: its command (upper case) and parameters; tags and prefix dropped.

    chatd has no use for the tags clients send (it relays none) nor for their
    prefix (a client's prefix is ignored by servers, RFC 2812 2.3).
    """

    command: str
    params: tuple[str, ...]


# mIRC formatting: bold, italics, underline, strike-through, monospace, reverse, reset,
# and colours with their numbers (\x03 fg[,bg]; \x04 hex fg[,bg]).
_FORMATTING = re.compile(
    r"[\x02\x0f\x11\x16\x1d\x1e\x1f]"
    r"|\x03(?:\d{1,2}(?:,\d{1,2})?)?"
    r"|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
)


def strip_formatting(text: str) -> str:
    """``text`` without mIRC formatting codes, colour numbers included.

    clean_text would remove the control characters but leave a colour's numbers
    stuck to the text ("04red"); chatd's other users see plain text.
    """
    return _FORMATTING.sub("", text) if _FORMATTING.search(text) else text


class TooLong(ValueError):
    """The line breaks the protocol's length limits."""


def check_length(raw: bytes) -> None:
    """Raise TooLong if ``raw`` (one line without its line end) breaks the length limits:
    tags over :data:`MAX_TAG_BYTES`, or a message over :data:`MAX_MESSAGE_BYTES`
    with its CRLF."""
    if raw.startswith(b"@"):
        tags, _, raw = raw.partition(b" ")
        if len(tags) + 1 > MAX_TAG_BYTES:
            raise TooLong("tags")
    if len(raw.lstrip(b" ")) + 2 > MAX_MESSAGE_BYTES:
        raise TooLong("message")


def parse(text: str) -> Message | None:
    """The message in ``text`` (one line without its line end), or None for a blank line."""
    if text.startswith("@"):
        text = text.partition(" ")[2]
    text = text.lstrip(" ")
    if text.startswith(":"):
        text = text.partition(" ")[2].lstrip(" ")
    text, trailing_mark, trailing = text.partition(" :")
    words = text.split(" ")
    words = [word for word in words if word]
    if not words:
        return None
    params = words[1:]
    if trailing_mark:
        params.append(trailing)
    if len(params) > MAX_PARAMS:
        params = [*params[: MAX_PARAMS - 1], " ".join(params[MAX_PARAMS - 1 :])]
    return Message(words[0].upper(), tuple(params))


def line(prefix: str | None, command: str, *params: str, tags: str | None = None) -> str:
    """One protocol line, CRLF included: ``@tags :prefix COMMAND params :last``.

    The last parameter is always sent as the trailing one (text may be empty, or
    have spaces, or start with ':'; clients parse a trailing nick or channel
    alike), cut if need be so that the message fits in :data:`MAX_MESSAGE_BYTES`
    (a topic of 300 characters can be 1200 bytes); the others are single words by
    construction (aliases, room names, numbers).
    """
    parts = [f":{prefix}"] if prefix else []
    parts.append(command)
    if params:
        parts.extend(params[:-1])
        parts.append(f":{params[-1]}")
    message = " ".join(parts)
    if len(message) * 4 > MAX_MESSAGE_BYTES - 2:  # it may not fit: measure it
        encoded = message.encode("utf-8")
        if len(encoded) > MAX_MESSAGE_BYTES - 2:
            message = split_text(message, MAX_MESSAGE_BYTES - 2)[0]
    return (f"@{tags} " if tags else "") + message + CRLF


def split_text(text: str, limit_bytes: int) -> list[str]:
    """``text`` cut into pieces of at most ``limit_bytes`` bytes of UTF-8, between characters.

    A line a line-protocol user sends may be longer than an IRC message holds;
    it reaches IRC clients as several messages rather than cut off.
    """
    encoded = text.encode("utf-8")
    if len(encoded) <= limit_bytes:
        return [text]
    limit_bytes = max(limit_bytes, 4)  # room for any one character
    pieces = []
    while encoded:
        cut = min(limit_bytes, len(encoded))
        while cut < len(encoded) and (encoded[cut] & 0xC0) == 0x80:
            cut -= 1  # not inside a character
        pieces.append(encoded[:cut].decode("utf-8"))
        encoded = encoded[cut:]
    return pieces
