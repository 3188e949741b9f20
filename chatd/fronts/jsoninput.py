"""JSON read from a connection in JSON format (``/format json``, ``--json-port``): bot mode.

The other way round from :mod:`chatd.fronts.jsonformat`: each received line is
one JSON object with a ``type``, and becomes the line a user would have typed,
so the session applies exactly the rules it applies to typed lines (alias
rules, commands, flood control, cleaning). The types are few, and where the
server sends the same kind of thing they have the same name::

    {"type": "alias", "alias": "bot1"}             choose an alias
    {"type": "password", "password": "..."}        answer the password prompt
    {"type": "message", "text": "hi"}              say (a leading / is said, not run)
    {"type": "action", "text": "waves"}            /me waves
    {"type": "private", "to": "bob", "text": "x"}  /msg bob x
    {"type": "command", "text": "/join #rust"}     any command (/format line goes back)

Other fields are ignored. Each type fits one moment (an alias before there is
one, a password when it is asked for, chat after), so a line can never be
taken for something else: a message sent too early is refused, not taken as
an alias, and a command at the password prompt is refused, not taken as the
password. Everything refused gets an ``error`` event saying why: a line that
is not JSON (or not an object, or nested too deeply for the parser), an unknown
type, a field that is missing or not a string. NaN and Infinity are not JSON;
numbers are never used, so they are not even converted (a number of a million
digits costs nothing).
"""

from __future__ import annotations

import json
from typing import Any

from chatd.text import clean_text, is_valid_name
from chatd.wireformats import Expecting, InputRefused

# Field each type must have, as strings (``private`` has two).
FIELDS: dict[str, tuple[str, ...]] = {
    "alias": ("alias",),
    "password": ("password",),
    "message": ("text",),
    "action": ("text",),
    "private": ("to", "text"),
    "command": ("text",),
}
# The types that fit each moment (see read_line).
FITTING: dict[Expecting, frozenset[str]] = {
    "alias": frozenset({"alias", "command"}),
    "password": frozenset({"password"}),
    "chat": frozenset({"message", "action", "private", "command"}),
}
HOW = (
    'This connection reads JSON, one object per line, such as {"type":"message","text":"hi"}'
    ' ({"type":"command","text":"/format line"} switches back to lines).'
)
SHOWN_TYPE_CHARS = 32


class _Number:
    """What every JSON number is read as: bot mode uses none, so none is converted."""


_NUMBER = _Number()


def _number(text: str) -> _Number:
    return _NUMBER


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_line(line: str, expecting: Expecting) -> str | None:
    """The typed line that JSON ``line`` stands for while the session expects ``expecting``.

    None for a blank line (a keep-alive); raises InputRefused with what to tell the sender.
    """
    if not line.strip():
        return None
    if not line.lstrip().startswith("{"):
        raise InputRefused(HOW)
    record = _parse(line)
    kind = record.get("type")
    if not isinstance(kind, str) or kind not in FIELDS:
        shown = clean_text(kind)[:SHOWN_TYPE_CHARS] if isinstance(kind, str) else None
        named = f"Unknown type {shown!r}" if shown is not None else 'No "type" string'
        raise InputRefused(f"{named}: send one of {', '.join(FIELDS)}.")
    values = [_string(record, kind, name) for name in FIELDS[kind]]
    if kind not in FITTING[expecting]:
        raise InputRefused(_unfitting(kind, expecting))
    return _typed(kind, *values)


def _parse(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line, parse_int=_number, parse_float=_number, parse_constant=_constant)
    except json.JSONDecodeError as problem:
        raise InputRefused(f"Not valid JSON ({problem.msg}, column {problem.colno}).") from None
    except ValueError as problem:  # NaN or Infinity (see _constant)
        raise InputRefused(f"Not valid JSON ({problem}).") from None
    except RecursionError:
        raise InputRefused("Not valid JSON here (nested too deeply).") from None
    if not isinstance(record, dict):
        raise InputRefused(HOW)
    return record


def _string(record: dict[str, Any], kind: str, name: str) -> str:
    """Field ``name`` of a ``kind`` object, with any lone surrogate made U+FFFD.

    JSON can spell a lone surrogate (``"\\ud800"``), which UTF-8 cannot carry:
    it would fail wherever the text is encoded (a password being hashed), so
    it is replaced as undecodable bytes are on a line.
    """
    value = record.get(name)
    if not isinstance(value, str):
        raise InputRefused(f'A "{kind}" object needs "{name}" as a string.')
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _unfitting(kind: str, expecting: Expecting) -> str:
    if expecting == "alias":
        return 'Choose an alias first: {"type":"alias","alias":"..."}.'
    if expecting == "password":
        return 'The password is asked for: {"type":"password","password":"..."}.'
    if kind == "alias":
        return 'You have an alias; to change it, {"type":"command","text":"/nick NEW"}.'
    return "No password is asked for now."


def _typed(kind: str, *values: str) -> str:
    """The line a user would have typed for a ``kind`` object with these field values."""
    if kind == "message":
        text = clean_text(values[0]).lstrip()
        # A typed line starting with / is a command: a message's / is doubled, to be said.
        return "/" + text if text.startswith("/") else values[0]
    if kind == "action":
        return "/me " + values[0]
    if kind == "private":
        to, text = values
        if not is_valid_name(to):
            raise InputRefused('"to" must be an alias.')
        return f"/msg {to} {text}"
    if kind == "command":
        text = clean_text(values[0]).lstrip()
        if not text.startswith("/") or text.startswith("//"):
            raise InputRefused('A command starts with one /, such as "/who".')
        return text
    if kind == "alias" and values[0].lstrip().startswith("/"):
        raise InputRefused('An alias, not a command: send {"type":"command","text":"/..."}.')
    return values[0]  # an alias, a password: as typed
