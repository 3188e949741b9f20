"""Tests for chatd.text: sanitising untrusted text and the alias rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.text import (
    AliasRefused,
    alias_key,
    check_alias,
    clean_text,
    decode_line,
    duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain text", "plain text"),
        ("\x1b[2Jcleared", "cleared"),
        ("\x1b[1;31mred\x1b[0m", "red"),
        ("\x1b]0;new title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1bPq#0;2;0;0;0\x1b\\dcs", "dcs"),
        ("\x9b2Jeight-bit csi", "eight-bit csi"),
        ("\x9d0;title\x9cosc", "osc"),
        ("\x1bcreset", "reset"),
        ("\x1b(Bcharset", "charset"),
        ("bell\x07 and back\x08space", "bell and backspace"),
        ("del\x7fete", "delete"),
        ("c1\x85next", "c1next"),
        ("a\tb", "a b"),
        ("\u202eevil\u202c", "evil"),
        ("\u2067isolate\u2069", "isolate"),
        ("trailing   ", "trailing"),
        ("  leading kept", "  leading kept"),
        ("\x1b]0;unterminated title", ""),
        ("\x1b[", ""),
        ("\x00\x01\x02", ""),
        ("naïve café ☕ 日本", "naïve café ☕ 日本"),
    ],
)
def test_clean_text(raw: str, expected: str) -> None:
    """Escape sequences and control characters are removed whole; printable text stays."""
    assert clean_text(raw) == expected


@given(st.text())
def test_clean_text_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    """Whatever goes in, no C0/C1 control or bidi override comes out."""
    cleaned = clean_text(text)
    assert not any(
        ord(c) < 0x20
        or 0x7F <= ord(c) <= 0x9F
        or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
        for c in cleaned
    )


@given(st.text())
def test_clean_text_is_idempotent(text: str) -> None:
    """Cleaning clean text changes nothing, so double sanitising is harmless."""
    once = clean_text(text)
    assert clean_text(once) == once


def test_decode_line_replaces_invalid_utf8() -> None:
    """Invalid UTF-8 becomes U+FFFD instead of raising."""
    assert decode_line(b"ok \xff\xfe \xc3(") == "ok \ufffd\ufffd \ufffd("


@pytest.mark.parametrize("alias", ["a", "alice", "Bob_2", "x.y-z", "9lives", "a" * 24])
def test_check_alias_accepts(alias: str) -> None:
    """Aliases within the documented rule are accepted unchanged."""
    assert check_alias(alias) == alias


@pytest.mark.parametrize(
    ("alias", "why"),
    [
        ("", "empty"),
        ("a" * 25, "at most 24"),
        ("has space", "Invalid alias"),
        ("_under", "Invalid alias"),
        ("-dash", "Invalid alias"),
        ("emoji☕", "Invalid alias"),
        ("\x1b[2J", "Invalid alias"),
        ("/quit", "Invalid alias"),
        ("Server", "reserved"),
        ("ADMIN", "reserved"),
    ],
)
def test_check_alias_refuses(alias: str, why: str) -> None:
    """Aliases outside the rule are refused with a reason naming the problem."""
    with pytest.raises(AliasRefused, match=why):
        check_alias(alias)


def test_alias_key_ignores_case() -> None:
    """Aliases differing only in case compare equal."""
    assert alias_key("Alice") == alias_key("aLICE")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2H", 7200), ("1d", 86400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Durations take an optional unit: s, m, h, d or w."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "1.5h", "10 m", "forever", "9999999999"])
def test_parse_duration_refuses(text: str) -> None:
    """Anything but a positive whole number with an optional unit is refused."""
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(5, "5s"), (65, "1m05s"), (3725, "1h02m"), (90000, "1d01h")]
)
def test_duration(seconds: float, shown: str) -> None:
    """Durations are shown in their two largest units."""
    assert duration(seconds) == shown
