"""Consuming telnet option negotiation so it never reaches the chat.

A telnet client may open with IAC (0xFF) sequences: WILL/WONT/DO/DONT option
offers and SB ... IAC SE subnegotiations. chatd negotiates nothing, so these
bytes are dropped here, before line splitting; an escaped IAC IAC is dropped
too, since a lone 0xFF byte is never valid UTF-8 anyway. Sequences may be split
across TCP segments, so the filter keeps its state between chunks.
"""

from __future__ import annotations

IAC = 0xFF
SE = 0xF0
SB = 0xFA
_OPTION_VERBS = frozenset({0xFB, 0xFC, 0xFD, 0xFE})  # WILL, WONT, DO, DONT

_DATA, _COMMAND, _OPTION, _SUBNEG, _SUBNEG_IAC = range(5)


class TelnetFilter:
    """Strip telnet commands from a byte stream, chunk by chunk."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = _DATA

    def feed(self, data: bytes) -> bytes:
        """Return ``data`` without the telnet commands it holds or continues."""
        if self._state == _DATA and IAC not in data:
            return data
        out = bytearray()
        state = self._state
        for byte in data:
            if state == _DATA:
                if byte == IAC:
                    state = _COMMAND
                else:
                    out.append(byte)
            elif state == _COMMAND:
                if byte in _OPTION_VERBS:
                    state = _OPTION
                elif byte == SB:
                    state = _SUBNEG
                else:  # a two-byte command, or IAC IAC
                    state = _DATA
            elif state == _OPTION:
                state = _DATA
            elif state == _SUBNEG:
                if byte == IAC:
                    state = _SUBNEG_IAC
            elif byte == SE:  # _SUBNEG_IAC
                state = _DATA
            else:
                state = _SUBNEG
        self._state = state
        return bytes(out)
