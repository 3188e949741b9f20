"""Tests for chatd.text: sanitising untrusted text and the alias rule."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.text import (
    MAX_COMBINING_MARKS,
    AliasRefused,
    RoomRefused,
    alias_key,
    check_alias,
    check_room,
    clean_text,
    decode_line,
    duration,
    is_valid_name,
    parse_duration,
)

JOINERS = "\u200c\u200d"
BLANK_LETTERS = "\u115f\u1160\u17b4\u17b5\u3164\uffa0"
# One of each kind of character clean_text must remove (joiners aside: they depend on
# their neighbours).
INVISIBLE = [
    "\u2028",  # line separator
    "\u2029",  # paragraph separator
    "\u200e",  # left-to-right mark
    "\u200f",  # right-to-left mark
    "\u061c",  # Arabic letter mark
    "\u202e",  # right-to-left override
    "\u2067",  # right-to-left isolate
    "\u206a",  # inhibit symmetric swapping (deprecated format character)
    "\u200b",  # zero-width space
    "\u2060",  # word joiner
    "\u2061",  # function application
    "\u2062",  # invisible times
    "\u2063",  # invisible separator
    "\u2064",  # invisible plus
    "\ufeff",  # byte order mark / zero-width no-break space
    "\u180e",  # Mongolian vowel separator
    "\u00ad",  # soft hyphen
    "\ufff9",  # interlinear annotation anchor
    "\ufffa",  # interlinear annotation separator
    "\ufffb",  # interlinear annotation terminator
    "\U000e0000",  # unassigned tag character
    "\U000e0001",  # language tag
    "\U000e0fff",  # unassigned, reserved for invisible characters
    "\u2065",  # unassigned, reserved for invisible characters
    "\ufff0",  # unassigned, reserved for invisible characters
    "\U000e0041",  # tag latin capital letter A
    "\U000e007f",  # cancel tag
    "\U00013430",  # Egyptian hieroglyph vertical joiner (format, above U+FFFF)
    "\U0001d173",  # musical symbol begin beam (format, above U+FFFF)
    *BLANK_LETTERS,
]
MARKS = ["\u0301", "\u0489", "\u20dd", "\ufe0f", "\U0001d167", "\U000e0100"]


def is_stripped(char: str) -> bool:
    """Whether ``char`` is of a class clean_text never lets through (joiners aside)."""
    category = unicodedata.category(char)
    return char not in JOINERS and (
        category in ("Cc", "Cf", "Zl", "Zp", "Cs") or char in BLANK_LETTERS
    )


def is_mark(char: str) -> bool:
    """Whether ``char`` is a combining mark, or a joiner, which counts towards the cap."""
    return char in JOINERS or unicodedata.category(char) in ("Mn", "Me")


def longest_mark_run(text: str) -> int:
    """The length of the longest run of combining marks and joiners in ``text``."""
    longest = run = 0
    for char in text:
        run = run + 1 if is_mark(char) else 0
        longest = max(longest, run)
    return longest


def has_stray_joiner(text: str) -> bool:
    """Whether a joiner in ``text`` lacks a visible (non-space) character on either side."""
    return any(
        char in JOINERS
        and not (
            0 < i < len(text) - 1
            and all(not c.isspace() and c not in JOINERS for c in (text[i - 1], text[i + 1]))
        )
        for i, char in enumerate(text)
    )


# Text rich in what clean_text has to deal with, so that hypothesis meets it often.
hostile_text = st.text(
    st.one_of(
        st.sampled_from([*INVISIBLE, *MARKS, *JOINERS, "a", "\U0001f469", " ", "\t", "\x1b", "["]),
        st.characters(),
    )
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
        ("\x1bOAup arrow", "up arrow"),
        ("\x1bNxshift", "shift"),
        ("\x8fPeight-bit ss3", "eight-bit ss3"),
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


@pytest.mark.parametrize("char", INVISIBLE)
def test_clean_text_removes_invisible_characters(char: str) -> None:
    """Separators, bidi marks, zero-width and tag characters, annotations and blank
    letters are removed wherever they stand."""
    assert clean_text(f"{char}pay{char}{char}pal {char} x{char}") == "paypal  x"


def test_clean_text_removes_lone_surrogates() -> None:
    """A lone surrogate, which UTF-8 cannot encode, is removed."""
    assert clean_text("a\ud800b\udfff").encode("utf-8") == b"ab"


@pytest.mark.parametrize(
    "text",
    [
        "naïve café ☕ 日本 안녕하세요 สวัสดี",
        "cafe\u0301 and re\u0301sume\u0301",  # accents as combining marks
        "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",  # Arabic, Hebrew letters
        # Hebrew with points and a cantillation mark
        "\u05d1\u05bc\u05b0\u05e8\u05b5\u05d0\u05e9\u05b4\u05c1\u0596\u05d9\u05ea",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ inside a word
        "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ after a virama
        "\U0001f469\u200d\U0001f4bb",  # woman technologist
        "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # family
        "\U0001f3f3\ufe0f\u200d\U0001f308",  # rainbow flag
        "\U0001f441\ufe0f\u200d\U0001f5e8\ufe0f",  # eye in speech bubble
        "\U0001f469\U0001f3fd\u200d\U0001f52c",  # woman scientist, skin tone
        "#\ufe0f\u20e3 \U0001f44d\U0001f3fd \U0001f1eb\U0001f1f7",  # keycap, tone, flag
        "e" + "\u0301" * MAX_COMBINING_MARKS,  # up to the cap
        "\U00011000\U00011038\U00011046",  # Brahmi, marks above U+FFFF
    ],
)
def test_clean_text_keeps_legitimate_text(text: str) -> None:
    """Accents, emoji sequences, joiners inside words, and every script pass unchanged."""
    assert clean_text(text) == text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\u200dstart", "start"),
        ("end\u200c", "end"),
        ("\u200d", ""),
        ("a \u200db", "a b"),
        ("a\u200d b", "a b"),
        ("a\u200d\u200db", "ab"),
        ("a\u200c\u200db", "ab"),
        ("a\u200d\u200bb", "a\u200db"),  # judged once the invisible are gone
        ("\x1b[m\u200db", "b"),
        ("\U0001f469\u200d\u200d\u200d\U0001f4bb", "\U0001f469\U0001f4bb"),
    ],
)
def test_clean_text_removes_stray_joiners(raw: str, expected: str) -> None:
    """A joiner at either end, next to a space, or beside another joiner is removed."""
    assert clean_text(raw) == expected


@pytest.mark.parametrize("mark", MARKS)
def test_clean_text_caps_combining_marks(mark: str) -> None:
    """A run of combining marks keeps its first MAX_COMBINING_MARKS ("Zalgo" text)."""
    assert clean_text(f"Z{mark * 50}a{mark * 9}") == f"Z{mark * 4}a{mark * 4}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\u0301\u0302\u200d\u0303\u0304\u0305b", "a\u0301\u0302\u200d\u0303b"),
        ("a\u0301\u0302\u0303\u200b\u0304\u0305b", "a\u0301\u0302\u0303\u0304b"),
        ("a\u0301\u0302\x1b[0m\u0303\u0304\u0305b", "a\u0301\u0302\u0303\u0304b"),
    ],
)
def test_clean_text_caps_marks_through_joiners_and_removed_characters(
    raw: str, expected: str
) -> None:
    """Joiners count towards the cap, and marks that become one run once the characters
    between them are removed are capped as one run."""
    assert clean_text(raw) == expected


def test_clean_text_knows_every_mark_and_format_character() -> None:
    """Every format character, separator and surrogate of the Unicode database is removed
    and every combining mark capped, in all seventeen planes."""
    for code_point in range(sys.maxunicode + 1):
        char = chr(code_point)
        if is_stripped(char) and unicodedata.category(char) != "Cc":  # controls: above
            assert clean_text(f"a{char}b") == "ab", hex(code_point)
        elif char not in JOINERS and is_mark(char):
            assert clean_text(f"a{char * 6}") == f"a{char * 4}", hex(code_point)


@given(hostile_text)
def test_clean_text_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    """Whatever goes in, no control, format character, separator, surrogate or blank
    letter comes out, no stray joiner, and no run of marks longer than the cap."""
    cleaned = clean_text(text)
    assert not any(is_stripped(c) for c in cleaned)
    assert not has_stray_joiner(cleaned)
    assert longest_mark_run(cleaned) <= MAX_COMBINING_MARKS
    cleaned.encode("utf-8")


@given(st.one_of(hostile_text, st.text()))
def test_clean_text_is_idempotent(text: str) -> None:
    """Cleaning clean text changes nothing, so double sanitising is harmless."""
    once = clean_text(text)
    assert clean_text(once) == once


@pytest.mark.parametrize("char", [*INVISIBLE, *JOINERS])
def test_decoded_invisible_characters_are_removed(char: str) -> None:
    """Each problem character, arriving as UTF-8 bytes, leaves nothing behind."""
    raw = f"{char}x {char}y{char}".encode()
    assert clean_text(decode_line(raw)) == "x y"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xc0\x9b2J", "\ufffd\ufffd2J"),  # overlong ESC... as two bad bytes
        (b"\xe0\x80\xae", "\ufffd\ufffd\ufffd"),  # overlong encoding
        (b"\xed\xa0\x80x", "\ufffd\ufffd\ufffdx"),  # an encoded surrogate
        (b"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"),  # above U+10FFFF
        (b"\xf8\x88\x80\x80\x80", "\ufffd" * 5),  # five-byte form
        (b"\xe2\x80", "\ufffd"),  # cut short
        (b"\xe2\x80\xae", ""),  # U+202E, well formed
    ],
)
def test_decoded_invalid_utf8_is_safe(raw: bytes, expected: str) -> None:
    """Invalid UTF-8 becomes U+FFFD, never a control or an invisible character."""
    assert clean_text(decode_line(raw)) == expected


@given(st.binary())
def test_any_bytes_decode_to_safe_text(raw: bytes) -> None:
    """Any bytes, decoded and cleaned, are encodable text with nothing stripped left."""
    cleaned = clean_text(decode_line(raw))
    assert not any(is_stripped(c) for c in cleaned)
    cleaned.encode("utf-8")


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


@pytest.mark.parametrize("char", [*INVISIBLE, *JOINERS, *MARKS, "\u00e9", "\u3000"])
def test_names_cannot_hold_unicode(char: str) -> None:
    """Aliases and room names are ASCII only, so no invisible character can reach them."""
    assert not is_valid_name(f"ab{char}")
    with pytest.raises(AliasRefused):
        check_alias(f"ab{char}")
    with pytest.raises(RoomRefused):
        check_room(f"#ab{char}")


@given(st.text(st.sampled_from(["a", "Z", "0", "_", ".", *INVISIBLE, *JOINERS, *MARKS])))
def test_valid_names_are_printable_ascii(name: str) -> None:
    """Whatever a name holds, it is valid only if it is printable ASCII."""
    if is_valid_name(name):
        assert name.isascii() and name.isprintable()


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
    with pytest.raises(ValueError, match="Not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(5, "5s"), (65, "1m05s"), (3725, "1h02m"), (90000, "1d01h")]
)
def test_duration(seconds: float, shown: str) -> None:
    """Durations are shown in their two largest units."""
    assert duration(seconds) == shown
