"""Turning untrusted input into text that is safe to show on someone else's terminal.

Everything a user types ends up on other people's terminals, so anything a terminal
would interpret rather than print is removed here: C0/C1 control characters, whole
ANSI/VT escape sequences (CSI, OSC, DCS, ...), and the Unicode controls that reorder
the rest of a line (bidi overrides). This is the single gate every front end uses.
"""

from __future__ import annotations

import re
import time

MAX_ALIAS_CHARS = 24
ALIAS_RULE = (
    f"1-{MAX_ALIAS_CHARS} characters: ASCII letters, digits, '_', '-' and '.', "
    "starting with a letter or digit"
)
_ALIAS_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Compared case-insensitively; names that could pass for the server speaking.
RESERVED_ALIASES = frozenset(
    {
        "admin",
        "administrator",
        "all",
        "chatd",
        "everyone",
        "mod",
        "moderator",
        "nobody",
        "oper",
        "operator",
        "root",
        "server",
        "staff",
        "sysop",
        "system",
    }
)

_UNSAFE = re.compile(
    # CSI (7-bit ESC [ or 8-bit U+009B): parameters, intermediates, final byte.
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    # OSC, DCS, SOS, PM, APC: a string up to its terminator (BEL, ESC \ or ST),
    # or to the end of the line when the terminator never comes.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    # Any other escape sequence: ESC, intermediates, one final character.
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
    # Lone controls: C0 (tab is handled before), DEL, C1, and bidi embeddings,
    # overrides and isolates.
    r"|[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)


class AliasRefused(ValueError):
    """An alias breaks the naming rules; the message says which, for the user."""


def clean_text(text: str) -> str:
    """Return ``text`` with everything a terminal would act on removed.

    Tabs become single spaces (so pasted code keeps its shape) and trailing
    white space is dropped, so a line that held only controls comes back empty.
    """
    if not text.isprintable():
        text = _UNSAFE.sub("", text.replace("\t", " "))
    return text.rstrip()


def decode_line(raw: bytes) -> str:
    """Decode bytes from the wire; invalid UTF-8 becomes U+FFFD, never an error."""
    return raw.decode("utf-8", "replace")


def alias_key(alias: str) -> str:
    """The form under which aliases are compared: case-insensitive."""
    return alias.lower()


def is_valid_name(name: str) -> bool:
    """Whether ``name`` follows the alias rule (reserved names aside)."""
    return len(name) <= MAX_ALIAS_CHARS and _ALIAS_PATTERN.fullmatch(name) is not None


def check_alias(alias: str) -> str:
    """Return ``alias`` if it follows the naming rule, else raise AliasRefused."""
    if not alias:
        raise AliasRefused("An alias cannot be empty.")
    if len(alias) > MAX_ALIAS_CHARS:
        raise AliasRefused(f"An alias is at most {MAX_ALIAS_CHARS} characters.")
    if not _ALIAS_PATTERN.fullmatch(alias):
        raise AliasRefused(f"Invalid alias: use {ALIAS_RULE}.")
    if alias_key(alias) in RESERVED_ALIASES:
        raise AliasRefused(f"The alias {alias!r} is reserved.")
    return alias


ROOM_RULE = f"'#' and then {ALIAS_RULE}"


class RoomRefused(ValueError):
    """A room name breaks the naming rule; the message says which, for the user."""


def check_room(name: str) -> str:
    """Return ``name`` if it is a valid room name (``#`` plus the alias rule), else raise."""
    body = name[1:]
    if (
        not name.startswith("#")
        or not body
        or len(body) > MAX_ALIAS_CHARS
        or not _ALIAS_PATTERN.fullmatch(body)
    ):
        raise RoomRefused(f"Invalid room name: use {ROOM_RULE}.")
    return name


room_key = alias_key


def duration(seconds: float) -> str:
    """A short human duration: 45s, 5m03s, 2h07m, 3d04h."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02}h"
    if hours:
        return f"{hours}h{minutes:02}m"
    if minutes:
        return f"{minutes}m{secs:02}s"
    return f"{secs}s"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d{1,9})([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit (s, m, h, d, w), like 10m or 2d."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 10m, 2h, 1d)")
    return float(int(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"])


def utc_stamp(at: float) -> str:
    """Epoch seconds as a UTC date and time: 2026-11-24 10:32:05Z."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
