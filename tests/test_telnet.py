"""Tests for chatd.fronts.telnet: telnet negotiation is consumed, never relayed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatd.fronts.telnet import TelnetFilter

IAC, WILL, DO, SB, SE, NOP = b"\xff", b"\xfb", b"\xfd", b"\xfa", b"\xf0", b"\xf1"


def test_plain_data_passes_unchanged() -> None:
    """Data without IAC bytes is returned as it came."""
    assert TelnetFilter().feed(b"hello\r\n") == b"hello\r\n"


def test_option_negotiation_is_dropped() -> None:
    """WILL/DO option offers disappear, the text around them stays."""
    data = IAC + WILL + b"\x01" + b"hi" + IAC + DO + b"\x03" + b"\n"
    assert TelnetFilter().feed(data) == b"hi\n"


def test_subnegotiation_is_dropped() -> None:
    """An SB ... IAC SE block vanishes whole, even with IAC IAC inside it."""
    data = b"a" + IAC + SB + b"\x18\x00xterm" + IAC + IAC + IAC + SE + b"b"
    assert TelnetFilter().feed(data) == b"ab"


def test_two_byte_commands_and_escaped_iac_are_dropped() -> None:
    """IAC NOP and IAC IAC leave no byte behind (0xFF is never valid UTF-8)."""
    assert TelnetFilter().feed(b"x" + IAC + NOP + b"y" + IAC + IAC + b"z") == b"xyz"


def test_sequences_split_across_chunks() -> None:
    """A command cut between two reads is still recognised."""
    telnet = TelnetFilter()
    assert telnet.feed(b"one" + IAC) == b"one"
    assert telnet.feed(WILL) == b""
    assert telnet.feed(b"\x01two") == b"two"


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=64)))
def test_chunking_does_not_change_the_result(data: bytes, cuts: list[int]) -> None:
    """Feeding a stream in any pieces gives the same output as feeding it whole."""
    whole = TelnetFilter().feed(data)
    telnet = TelnetFilter()
    pieces, rest = [], data
    for cut in cuts:
        pieces.append(telnet.feed(rest[:cut]))
        rest = rest[cut:]
    pieces.append(telnet.feed(rest))
    assert b"".join(pieces) == whole
    assert b"\xff" not in whole
