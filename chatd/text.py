"""Turning untrusted input into text that is safe to show on someone else's terminal.

Everything a user types ends up on other people's terminals, so :func:`clean_text`, the
single gate every front end uses, removes whatever a terminal would act on, or a reader
would not see, rather than print:

- C0/C1 control characters and whole ANSI/VT escape sequences (CSI, OSC, DCS, ...): they
  move the cursor, clear screens, retitle windows and worse.
- Every Unicode format character (category Cf): bidi embeddings, overrides, isolates and
  marks (U+202A..U+202E, U+2066..U+2069, LRM/RLM/ALM) reorder the rest of a line; zero-width
  spaces, word joiners, invisible operators, the BOM, the Mongolian vowel separator, soft
  hyphens and interlinear annotations are invisible, so they make two different strings look
  alike or hide text; tag characters (U+E0000..U+E007F) carry invisible ASCII (and with
  them go the rare subdivision flags, which fall back to a plain black flag). So do the
  unassigned code points Unicode keeps for more of these (U+2065, U+FFF0..U+FFF8, plane 14).
- Line and paragraph separators (U+2028, U+2029): terminals and clients break lines there,
  so one message could pass for two, the second seemingly from someone else.
- Lone surrogates: they cannot be encoded to UTF-8 at all.
- Letters that render as nothing (Hangul fillers U+115F, U+1160, U+3164, U+FFA0 and the
  Khmer inherent vowels U+17B4, U+17B5), a staple of blank-looking spoofs.
- Zero-width joiners and non-joiners (U+200D, U+200C) unless they sit between two visible
  characters, where emoji sequences and Persian or Indic words need them.
- Combining marks (Mn, Me) past the first :data:`MAX_COMBINING_MARKS` of a run ("Zalgo"
  text piles hundreds onto one letter and smears them over the lines around it). Joiners in
  the run count towards the cap, so interleaving them cannot stack more.

Accents, emoji, CJK, Hangul syllables and right-to-left letters are printed as sent; only the
invisible controls around them go. Aliases and room names are ASCII by rule, so none of this
can reach them.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable
from itertools import chain, compress

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
        "nickserv",  # who the IRC front end speaks as about passwords
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

MAX_COMBINING_MARKS = 4

_JOINERS = "\u200c\u200d"
# Letters that render as nothing: Hangul fillers (Lo), Khmer inherent vowels (Mn).
_BLANK_LETTERS = "\u115f\u1160\u17b4\u17b5\u3164\uffa0"
# Unicode assigns marks and format characters in planes 0, 1 and 14 only (2 and 3 hold
# ideographs, 15 and 16 private use), so scanning these costs ~20 ms at import instead of
# ~180 ms for all of them; a test checks the result against a full scan.
_SCANNED_CODE_POINTS = (range(0x20000), range(0xE0000, 0xE1000))
# Unicode reserves these for future invisible characters: whatever of them the running
# Python does not know yet (category Cn) a newer terminal may already render as nothing.
_RESERVED_INVISIBLE = (range(0x2065, 0x2066), range(0xFFF0, 0xFFF9), range(0xE0000, 0xE1000))
_BMP_END = 0x10000


def _char_class(code_points: Iterable[int]) -> str:
    """The inside of a regex character class matching exactly ``code_points``."""
    spans: list[list[int]] = []
    for cp in sorted(code_points):
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in spans)


def _scan_categories() -> tuple[list[int], list[int]]:
    """The combining marks and the invisible characters (see the module docstring) of the
    running Python's Unicode database, so that they follow it across upgrades."""
    code_points = list(chain(*_SCANNED_CODE_POINTS))
    categories = list(map(unicodedata.category, map(chr, code_points)))
    marks = compress(code_points, map(frozenset({"Mn", "Me"}).__contains__, categories))
    invisible = set(
        compress(code_points, map(frozenset({"Cf", "Zl", "Zp", "Cs"}).__contains__, categories))
    )
    invisible.update(
        cp for cp in chain(*_RESERVED_INVISIBLE) if unicodedata.category(chr(cp)) == "Cn"
    )
    invisible.difference_update(map(ord, _JOINERS))
    invisible.update(map(ord, _BLANK_LETTERS))
    return list(marks), sorted(invisible)


def _plane_hulls(code_points: Iterable[int]) -> str:
    """A class body covering the ``code_points`` above U+FFFF coarsely: for each plane,
    one range from the lowest to the highest of them."""
    hulls: dict[int, tuple[int, int]] = {}
    for cp in code_points:
        if cp >= _BMP_END:
            low, high = hulls.get(cp >> 16, (cp, cp))
            hulls[cp >> 16] = (min(low, cp), max(high, cp))
    return "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in sorted(hulls.values()))


def _build_patterns() -> tuple[re.Pattern[str], ...]:
    """The patterns :func:`clean_text` needs beyond plain ASCII.

    ``re`` looks a character up in a bitmap when it is below U+10000, but then still tries
    every range of the class above U+FFFF one after another, so an exact class with the ~120
    ranges of such combining marks costs ~150 ns for each character of every line. The scans
    over whole lines therefore use one range per plane instead, from its first such mark or
    invisible character to its last (which leaves out the emoji, U+1F000 onwards), and test
    the exact ranges only on what that finds, or only for characters above U+FFFF.
    """
    marks, invisible = _scan_categories()
    bmp_marks = _char_class(cp for cp in marks if cp < _BMP_END) + _JOINERS
    bmp_invisible = r"\x00-\x1f\x7f-\x9f" + _char_class(cp for cp in invisible if cp < _BMP_END)
    astral_invisible = _char_class(cp for cp in invisible if cp >= _BMP_END)
    astral_marks = _char_class(cp for cp in marks if cp >= _BMP_END)
    mark = rf"(?:[{bmp_marks}]|[^\x00-\uffff](?<=[{astral_marks}]))"
    return (
        # Anything the rest would change: one cheap look at each non-ASCII line.
        re.compile(rf"[{bmp_invisible}{bmp_marks}{_plane_hulls(marks + invisible)}]"),
        # Lone controls: C0 (tab is handled before), DEL, C1; format characters other
        # than the joiners, line and paragraph separators, surrogates, blank letters.
        re.compile(
            rf"[{bmp_invisible}{_plane_hulls(invisible)}](?<=[{bmp_invisible}{astral_invisible}])"
        ),
        # Stretches that might hold too many combining marks, and the exact test for them.
        re.compile(rf"[{bmp_marks}{_plane_hulls(marks)}]{{{MAX_COMBINING_MARKS + 1},}}"),
        re.compile(rf"{mark}{{{MAX_COMBINING_MARKS + 1},}}"),
        # A joiner without a visible (non-space, non-joiner) character on either side.
        re.compile(rf"[{_JOINERS}](?:(?<![^\s{_JOINERS}][{_JOINERS}])|(?![^\s{_JOINERS}]))"),
    )


_SUSPECT, _LONE, _MAYBE_MARK_RUN, _MARK_RUN, _STRAY_JOINER = _build_patterns()

_ESCAPE_START = re.compile(r"[\x1b\x8e\x8f\x90\x98\x9b\x9d\x9e\x9f]")
_ESCAPE = re.compile(
    # CSI (7-bit ESC [ or 8-bit U+009B): parameters, intermediates, final byte.
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    # OSC, DCS, SOS, PM, APC: a string up to its terminator (BEL, ESC \ or ST),
    # or to the end of the line when the terminator never comes.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    # SS2, SS3 (7-bit ESC N, ESC O or 8-bit): with the one character they shift, as
    # in the keys of application mode (ESC O A is the up arrow).
    r"|(?:\x1b[NO]|[\x8e\x8f])[\x20-\x7e]?"
    # Any other escape sequence: ESC, intermediates, one final character.
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)


class AliasRefused(ValueError):
    """An alias breaks the naming rules; the message says which, for the user."""


def clean_text(text: str) -> str:
    """Return ``text`` with everything a terminal would act on, or a reader would not see,
    removed, and runs of combining marks cut to :data:`MAX_COMBINING_MARKS`.

    Tabs become single spaces (so pasted code keeps its shape) and trailing
    white space is dropped, so a line that held only controls comes back empty.
    Most lines are printable ASCII or need nothing done: they cost one or two scans.
    """
    if text.isascii():
        if not text.isprintable():
            text = _strip_controls(text)
        return text.rstrip()
    if _SUSPECT.search(text):
        text = _MAYBE_MARK_RUN.sub(_cap_marks, _strip_controls(text))
        if "\u200c" in text or "\u200d" in text:
            text = _STRAY_JOINER.sub("", text)
    return text.rstrip()


def _strip_controls(text: str) -> str:
    """``text`` without escape sequences and lone controls or invisible characters."""
    text = text.replace("\t", " ")
    if _ESCAPE_START.search(text):
        text = _ESCAPE.sub("", text)
    return _LONE.sub("", text)


def _cap_marks(stretch: re.Match[str]) -> str:
    """A stretch that may hold combining marks, with each run of them capped."""
    return _MARK_RUN.sub(_first_marks, stretch.group())


def _first_marks(run: re.Match[str]) -> str:
    """The first marks of an over-long run: one character each, whatever their plane."""
    return run.group()[:MAX_COMBINING_MARKS]


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
        raise AliasRefused(f"The alias {alias} is reserved.")
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
        raise ValueError(f"Not a duration: {text} (use e.g. 90s, 10m, 2h, 1d).")
    return float(int(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"])


def count_of(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless one: 1 line, 2 lines."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def utc_stamp(at: float) -> str:
    """Epoch seconds as a UTC date and time: 2026-11-24 10:32:05Z."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
