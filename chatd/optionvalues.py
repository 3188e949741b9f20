"""The values ``twistd chatd``'s options take: each parsed, checked and documented.

Each parser is an :class:`OptionValue`: a function from the text given to the
value, carrying the line ``twistd chatd --help`` shows under the option
(``usage.Options`` reads it as ``coerceDoc``). A value that does not parse raises
ValueError saying why, which ``usage.Options`` turns into a one-line usage error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet import endpoints
from twisted.python import usage

from chatd.cluster.address import RedisAddress
from chatd.hub import HISTORY_KEPT
from chatd.offline import MAX_OFFLINE_MESSAGES
from chatd.text import ROOM_RULE, RoomRefused, check_room, parse_duration

T = TypeVar("T")


class OptionValue(Generic[T]):
    """A parser for ``usage.Options``' ``coerce`` slot, with its ``--help`` line."""

    def __init__(self, parse: Callable[[str], T], doc: str) -> None:
        self._parse = parse
        self.coerceDoc = doc

    def __call__(self, value: str) -> T:
        return self._parse(value)


DEFAULT_INTERFACE = "127.0.0.1"


def endpoint_description(port: str) -> str:
    """Expand a bare port number to a TCP endpoint on the default interface.

    Anything else is taken as a Twisted endpoint description (``tcp:``, ``ssl:``,
    ``unix:`` ...) and returned unchanged.
    """
    if port.isdigit():
        return f"tcp:{port}:interface={DEFAULT_INTERFACE}"
    return port


def _number(kind: type[int] | type[float], value: str) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(
            f"not a whole number: {value}" if kind is int else f"not a number: {value}"
        ) from None


def positive(kind: type[int] | type[float]) -> OptionValue[int | float]:
    """A count or a number of seconds that must be above 0 (a limit that cannot be off)."""

    def convert(value: str) -> int | float:
        number = _number(kind, value)
        if number <= 0:
            raise ValueError(f"must be greater than 0, not {value}")
        return number

    return OptionValue(convert, "Must be greater than 0.")


def not_negative(kind: type[int] | type[float]) -> OptionValue[int | float]:
    """A limit that 0 turns off."""

    def convert(value: str) -> int | float:
        number = _number(kind, value)
        if number < 0:
            raise ValueError(f"must be 0 or more, not {value}")
        return number

    return OptionValue(convert, "0 turns it off.")


def with_tls_files(ports: list[str], cert: str | None, key: str | None) -> list[str]:
    """``ports`` with --tls-cert and --tls-key filled into the ssl: ones that name no files.

    So that ``--port ssl:55556 --tls-cert cert.pem --tls-key key.pem`` is enough.
    """
    if not (cert and key):
        raise usage.UsageError("give both --tls-cert and --tls-key, or neither")
    if not any(port.startswith("ssl:") for port in ports):
        raise usage.UsageError(
            "--tls-cert and --tls-key need a --port ssl:PORT (or --irc ssl:PORT) to serve"
        )
    files = f"certKey={_escape(cert)}:privateKey={_escape(key)}"
    return [
        f"{port}:{files}" if port.startswith("ssl:") and not names_tls_files(port) else port
        for port in ports
    ]


def names_tls_files(port: str) -> bool:
    """Whether endpoint description ``port`` names its certificate or key itself."""
    return "privateKey=" in port or "certKey=" in port


def _escape(path: str) -> str:
    """A path as a value in an endpoint description, where ':' separates fields."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _endpoint(value: str) -> str:
    """The endpoint description ``value`` stands for, once its syntax is checked.

    Parsing only: the endpoint is built again, with the real reactor, when the
    service starts. No reactor is needed to check the syntax.
    """
    description = endpoint_description(value)
    try:
        endpoints.serverFromString(None, description)
    except Exception as problem:  # the parsers raise whatever they like
        raise ValueError(f"{value!r}: {problem}") from problem
    return description


endpoint = OptionValue(_endpoint, "A port or a Twisted endpoint description.")


def _redis_url(value: str) -> str:
    RedisAddress.from_url(value)  # raises RedisURLRefused (a ValueError) saying why
    return value


redis_url = OptionValue(_redis_url, "redis://[:password@]host[:port][/db]")


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, not {value}")
    return value


LOG_FORMATS = ("text", "json")
log_format = OptionValue(_log_format, "text or json.")


def _history_replay(value: str) -> int:
    lines = int(_number(int, value))
    if not 0 <= lines <= HISTORY_KEPT:
        raise ValueError(f"must be from 0 to {HISTORY_KEPT}, not {value}")
    return lines


history_replay = OptionValue(_history_replay, f"From 0 to {HISTORY_KEPT}.")


def _history_keep(value: str) -> int:
    lines = int(_number(int, value))
    if lines < 0:
        raise ValueError(f"must be 0 or more, not {value}")
    return lines


history_keep = OptionValue(_history_keep, "0 keeps no history at all.")


def _offline_messages(value: str) -> int:
    messages = int(_number(int, value))
    if not 0 <= messages <= MAX_OFFLINE_MESSAGES:
        raise ValueError(f"must be from 0 to {MAX_OFFLINE_MESSAGES}, not {value}")
    return messages


offline_messages = OptionValue(_offline_messages, f"From 0 (none kept) to {MAX_OFFLINE_MESSAGES}.")


duration = OptionValue(
    parse_duration, "A number with an optional unit: s, m, h, d or w (90s, 12h, 30d)."
)


def _room_name(value: str) -> str:
    try:
        return check_room(value)
    except RoomRefused as refusal:
        raise ValueError(str(refusal)) from None


room_name = OptionValue(_room_name, f"A room name: {ROOM_RULE}.")
