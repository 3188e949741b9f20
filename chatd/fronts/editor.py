"""A line editor for a terminal on the far side of a byte stream (the SSH front end).

``twisted.conch.recvline`` takes printable ASCII only, draws the input on one
row and knows a few keys. This editor, on top of ``insults``' key parser:

* assembles UTF-8 input from its bytes, and lays text out in terminal cells
  (East Asian wide characters take two, combining marks none);
* wraps input longer than the terminal's width over several rows, and redraws
  all of them (and only them) when the line changes, when the terminal is
  resized, and when output is shown above it, so no stale row is left behind;
* knows the usual readline keys: Ctrl-A/E/B/F/U/K/W/H/L, Backspace, Delete,
  Home, End, the arrows, Alt-B/F, and history (up, down) of the lines entered;
* masks a secret (a password) with ``*`` and keeps it out of the history.

:class:`LineBuffer` is the text being edited and its history; :func:`layout`
says where each cell goes; :class:`LineEditor` is the terminal protocol that
puts them together, behind :class:`Keyboard` (insults' key parser, drawing
once per read however many keys it brings). Drawing rewrites only what
changed, with CR, CR LF, cursor up, down and forward, and erase to the end of
the screen, which every terminal ssh runs in has.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from twisted.conch.insults.insults import ServerProtocol, TerminalProtocol

from chatd.text import MAX_COMBINING_MARKS

CR = b"\r"
ERASE_TO_END_OF_SCREEN = b"\x1b[J"
CLEAR_SCREEN = b"\x1b[H\x1b[2J"
# What a secret's characters are drawn as.
MASK = "*"
# The prompt and the narrowest terminal this lays out for (a narrower one is drawn as this).
PROMPT = "> "
MIN_COLUMNS = 4
# insults' names for keys (set on its class at import, so looked up by name here).
UP, DOWN, LEFT, RIGHT, HOME, END, DELETE, ALT = (
    cast(bytes, getattr(ServerProtocol, name))
    for name in (
        "UP_ARROW",
        "DOWN_ARROW",
        "LEFT_ARROW",
        "RIGHT_ARROW",
        "HOME",
        "END",
        "DELETE",
        "ALT",
    )
)
CTRL = {chr(n + 64).lower(): bytes([n]) for n in range(1, 27)}


def cell_width(char: str) -> int:
    """Cells ``char`` takes on a terminal: 2 (wide), 0 (combining or invisible) or 1."""
    if " " <= char < "\x7f":
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return 2
    return 1


def _longest_zero_width_run(text: str) -> int:
    """The most characters in a row in ``text`` that take no cell."""
    longest = run = 0
    for char in text:
        run = run + 1 if cell_width(char) == 0 else 0
        longest = max(longest, run)
    return longest


def is_typable(char: str) -> bool:
    """Whether ``char`` is text (not a control character, a surrogate or unassigned)."""
    return unicodedata.category(char) not in ("Cc", "Cs", "Cn", "Co")


@dataclass(frozen=True)
class Layout:
    """Where a prompt and a line go on a terminal ``width`` cells wide.

    ``rows`` are the text of each row; ``cursor`` is the (row, column) of the
    editing position. When the line ends exactly at the right margin with the
    cursor at its end, an empty last row holds the cursor.
    """

    rows: tuple[str, ...]
    cursor: tuple[int, int]


def layout(prompt: str, text: str, cursor: int, width: int) -> Layout:
    """Wrap ``prompt`` + ``text`` into rows of ``width`` cells; a wide character that
    does not fit at the end of a row starts the next one, as terminals do."""
    whole, cursor = prompt + text, cursor + len(prompt)
    width = max(width, MIN_COLUMNS)
    if whole.isascii() and whole.isprintable():  # a cell each: cut at C speed
        rows = [whole[start : start + width] for start in range(0, len(whole), width)] or [""]
        where = divmod(cursor, width)
        if where[0] == len(rows):  # at the end, past a full last row
            rows.append("")
        return Layout(tuple(rows), where)
    return _wrap([], [], 0, whole, cursor, width)


def extend(drawn: Layout, typed: str, width: int) -> Layout:
    """``drawn`` (with its cursor at the end) with ``typed`` added at the end: what
    :func:`layout` of the longer line gives, in time for ``typed`` alone."""
    rows = list(drawn.rows)
    if len(rows) > 1 and not rows[-1]:
        rows.pop()  # the cursor's row past the margin: the row before it goes on
    last = rows.pop()
    return _wrap(rows, list(last), _cells(last), typed, len(typed), width)


def _wrap(
    rows: list[str], row: list[str], used: int, text: str, cursor: int, width: int
) -> Layout:
    """Lay ``text`` out after ``rows`` and the unfinished ``row`` (``used`` cells of it),
    with the cursor before ``text[cursor]`` (or at the end)."""
    width = max(width, MIN_COLUMNS)
    where = (0, 0)
    for position, char in enumerate(text):
        cells = cell_width(char)
        if used + cells > width:
            rows.append("".join(row))
            row, used = [], 0
        if position == cursor:
            where = (len(rows), used)
        row.append(char)
        used += cells
    if cursor >= len(text):
        where = (len(rows), used)
    if where[1] >= width:  # at the right margin: the cursor waits on the next row
        rows.append("".join(row))
        row = []
        where = (len(rows), 0)
    rows.append("".join(row))
    return Layout(tuple(rows), where)


class LineBuffer:
    """The line being edited, the cursor in it, and the lines entered before.

    ``max_bytes`` caps the line's UTF-8 size (the server's line limit):
    typing past it is refused, so a line never has to be cut.
    """

    def __init__(self, max_bytes: int, max_history: int) -> None:
        self.text = ""
        self.cursor = 0
        self.history: list[str] = []
        self._max_bytes = max_bytes
        self._max_history = max_history
        self._browsing = 0  # how far back in the history the up arrow has gone
        self._draft = ""  # what was being typed when the browsing began

    def insert(self, typed: str) -> bool:
        """Insert ``typed`` at the cursor, if the line stays within its limits.

        Besides the size, a run of characters that take no cell (combining marks,
        joiners) stays within MAX_COMBINING_MARKS, as chat text is cut to it anyway:
        a longer one would make every key redraw, and re-measure, the whole run.
        """
        text = self.text[: self.cursor] + typed + self.text[self.cursor :]
        if len(text.encode("utf-8")) > self._max_bytes:
            return False
        around = text[
            max(0, self.cursor - MAX_COMBINING_MARKS) : self.cursor
            + len(typed)
            + MAX_COMBINING_MARKS
        ]
        if _longest_zero_width_run(around) > MAX_COMBINING_MARKS:
            return False
        self.text = text
        self.cursor += len(typed)
        return True

    def backspace(self) -> None:
        if self.cursor:
            self.text = self.text[: self.cursor - 1] + self.text[self.cursor :]
            self.cursor -= 1

    def delete(self) -> None:
        self.text = self.text[: self.cursor] + self.text[self.cursor + 1 :]

    def move_to(self, position: int) -> None:
        self.cursor = max(0, min(position, len(self.text)))

    def kill_to_start(self) -> None:
        """Ctrl-U."""
        self.text, self.cursor = self.text[self.cursor :], 0

    def kill_to_end(self) -> None:
        """Ctrl-K."""
        self.text = self.text[: self.cursor]

    def kill_word_back(self) -> None:
        """Ctrl-W: the blanks before the cursor, then the word before them."""
        start = self.cursor
        while start and self.text[start - 1].isspace():
            start -= 1
        while start and not self.text[start - 1].isspace():
            start -= 1
        self.text = self.text[:start] + self.text[self.cursor :]
        self.cursor = start

    def word_left(self) -> int:
        """Where Alt-B goes: the start of the word at or before the cursor."""
        position = self.cursor
        while position and not _in_word(self.text[position - 1]):
            position -= 1
        while position and _in_word(self.text[position - 1]):
            position -= 1
        return position

    def word_right(self) -> int:
        """Where Alt-F goes: the end of the word at or after the cursor."""
        position, end = self.cursor, len(self.text)
        while position < end and not _in_word(self.text[position]):
            position += 1
        while position < end and _in_word(self.text[position]):
            position += 1
        return position

    def history_back(self) -> None:
        """The up arrow: the line entered before the one shown."""
        if self._browsing < len(self.history):
            if not self._browsing:
                self._draft = self.text
            self._browsing += 1
            self._show(self.history[-self._browsing])

    def history_forward(self) -> None:
        """The down arrow: the line entered after the one shown, then the draft."""
        if self._browsing:
            self._browsing -= 1
            self._show(self.history[-self._browsing] if self._browsing else self._draft)

    def enter(self, remember: bool = True) -> str:
        """The line is done: return it, start an empty one, and remember it if asked."""
        line = self.text
        if remember and line.strip():
            self.history.append(line)
            del self.history[: -self._max_history]
        self.text, self.cursor, self._browsing, self._draft = "", 0, 0, ""
        return line

    def _show(self, line: str) -> None:
        self.text, self.cursor = line, len(line)


def _in_word(char: str) -> bool:
    """Words are letters, digits and underscores (readline's Alt-B and Alt-F)."""
    return char.isalnum() or char == "_"


class LineEditor(TerminalProtocol):
    """The terminal protocol: keys in, the input line drawn; output shown above it.

    Subclasses handle entered lines (:meth:`line_entered`), Ctrl-C/Ctrl-D
    (:meth:`interrupted`), and say when the line is a secret (:meth:`is_secret`).
    The terminal is an ``insults`` :class:`ServerProtocol`, which parses keys.
    """

    prompt = PROMPT

    def __init__(self, max_bytes: int, max_history: int) -> None:
        self.buffer = LineBuffer(max_bytes, max_history)
        self.width, self.height = 80, 24
        # The row of the input area the terminal's cursor is on, counted from its top.
        self._cursor_row = 0
        self._cursor_column = 0  # -1: unknown (the cursor is at the right margin)
        # What the input area shows now; None: nothing known, draw it all.
        self._drawn: Layout | None = None
        self._drawn_input = ("", 0)  # the text (as shown) and cursor laid out last
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._keys: dict[object, Callable[[], None]] = {}
        self._batching = False
        self._dirty = False

    def connectionMade(self) -> None:
        buffer = self.buffer
        self._keys = {
            b"\r": self._enter,
            b"\n": self._enter,
            b"\x7f": buffer.backspace,
            CTRL["h"]: buffer.backspace,
            DELETE: buffer.delete,
            CTRL["a"]: lambda: buffer.move_to(0),
            HOME: lambda: buffer.move_to(0),
            CTRL["e"]: lambda: buffer.move_to(len(buffer.text)),
            END: lambda: buffer.move_to(len(buffer.text)),
            CTRL["b"]: lambda: buffer.move_to(buffer.cursor - 1),
            LEFT: lambda: buffer.move_to(buffer.cursor - 1),
            CTRL["f"]: lambda: buffer.move_to(buffer.cursor + 1),
            RIGHT: lambda: buffer.move_to(buffer.cursor + 1),
            CTRL["u"]: buffer.kill_to_start,
            CTRL["k"]: buffer.kill_to_end,
            CTRL["w"]: buffer.kill_word_back,
            CTRL["p"]: self._history_back,
            UP: self._history_back,
            CTRL["n"]: self._history_forward,
            DOWN: self._history_forward,
            CTRL["l"]: self._clear_screen,
            CTRL["c"]: self.interrupted,
            CTRL["d"]: self._end_of_input,
        }
        self._draw()

    # What subclasses decide.

    def line_entered(self, line: str) -> None:
        """A line was entered (Enter)."""

    def interrupted(self) -> None:
        """Ctrl-C, or Ctrl-D on an empty line."""

    def is_secret(self) -> bool:
        """Whether the line being typed is a secret: masked, and never kept."""
        return False

    # Keys.

    def keystrokeReceived(self, keyID: bytes | object, modifier: object) -> None:
        """Edit with the keys above, type text, and ignore any other key quietly."""
        if modifier == ALT:
            self._alt_key(keyID)
            return
        handler = self._keys.get(keyID)
        if handler is not None:
            self._decoder.reset()
            handler()
            if handler not in (self._enter, self.interrupted, self._end_of_input):
                self._redraw()
            return
        # insults names other keys with several bytes (b"[F1]"); text comes a byte at a time.
        if isinstance(keyID, bytes) and len(keyID) == 1 and b" " <= keyID != b"\x7f":
            typed = self._decoder.decode(keyID)
            typable = typed and all(is_typable(char) for char in typed)
            if typable and self.buffer.insert(typed):
                self._redraw()

    def unhandledControlSequence(self, seq: bytes) -> None:
        """Application-mode arrows and Home/End (ESC O x) as their plain twins; the rest
        (function keys with modifiers, mouse reports...) are ignored."""
        keys = {
            b"A": UP,
            b"B": DOWN,
            b"C": RIGHT,
            b"D": LEFT,
            b"H": HOME,
            b"F": END,
        }
        if seq.startswith(b"\x1b[O") and len(seq) == 4 and seq[3:] in keys:
            self.keystrokeReceived(keys[seq[3:]], None)

    def _alt_key(self, keyID: object) -> None:
        buffer = self.buffer
        if keyID in (b"b", b"B"):
            buffer.move_to(buffer.word_left())
        elif keyID in (b"f", b"F"):
            buffer.move_to(buffer.word_right())
        elif keyID == b"\x7f":  # Alt-Backspace: as Ctrl-W
            buffer.kill_word_back()
        else:
            return
        self._redraw()

    def _enter(self) -> None:
        # The line as typed stays on the screen (a secret as its mask), and a fresh one starts.
        self.buffer.move_to(len(self.buffer.text))
        self._draw(finished=True)
        line = self.buffer.enter(remember=not self.is_secret())
        self.line_entered(line)
        self._redraw()

    def _end_of_input(self) -> None:
        if self.buffer.text:
            self.buffer.delete()
            self._redraw()
        else:
            self.interrupted()

    def _history_back(self) -> None:
        if not self.is_secret():
            self.buffer.history_back()

    def _history_forward(self) -> None:
        if not self.is_secret():
            self.buffer.history_forward()

    def _clear_screen(self) -> None:
        self.terminal.write(CLEAR_SCREEN)
        self._cursor_row, self._cursor_column = 0, 0
        self._drawn = None

    # Drawing.

    @contextmanager
    def drawing_once(self) -> Iterator[None]:
        """Draw once, after all the keys handled inside (a read's worth, a paste)."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            if self._dirty:
                self._draw()

    def _redraw(self) -> None:
        if self._batching:
            self._dirty = True
        else:
            self._draw()

    def show(self, data: bytes) -> None:
        """Write ``data`` (complete lines, CRLF-ended) above the input, which is redrawn."""
        self._erase()
        self.terminal.write(data)
        self._draw()

    def terminalSize(self, width: int, height: int) -> None:
        """Redraw for the new width.

        A terminal may or may not re-wrap what it shows when resized: the input
        area is taken to be as many rows above the cursor as either wrapping
        says, whichever is fewer, so that no output line above it is erased.
        """
        if (width, height) == (self.width, self.height):
            return
        shown = MASK * len(self.buffer.text) if self.is_secret() else self.buffer.text
        rewrapped = layout(self.prompt, shown, self.buffer.cursor, width).cursor[0]
        self._cursor_row = min(self._cursor_row, rewrapped)
        self.width, self.height = width, height
        self._erase()
        self._draw()

    def _layout(self, width: int) -> Layout:
        """The input laid out at ``width``: extended from what is drawn when the line
        only grew at its end (typing, a paste), as that comes a key at a time."""
        text = self.buffer.text
        if self.is_secret():
            text = MASK * len(text)
        cursor = self.buffer.cursor
        drawn, (old_text, old_cursor) = self._drawn, self._drawn_input
        self._drawn_input = (text, cursor)
        if (
            drawn is not None
            and width == self.width
            and old_cursor == len(old_text)
            and cursor == len(text)
            and text.startswith(old_text)
        ):
            return extend(drawn, text[len(old_text) :], width)
        return layout(self.prompt, text, cursor, width)

    def _erase(self) -> None:
        """Go to the top of the input area and erase it and all below."""
        up = b"\x1b[%dA" % self._cursor_row if self._cursor_row else b""
        self.terminal.write(CR + up + ERASE_TO_END_OF_SCREEN)
        self._cursor_row, self._cursor_column = 0, 0
        self._drawn = None

    def _draw(self, finished: bool = False) -> None:
        """Draw what changed of the prompt and the line, and put the cursor where it edits.

        Only the rows from the first change on are written, from the first
        changed character: typing at the end of the line echoes just the key,
        not the whole line again (a paste would cost the square of its length).
        ``finished``: leave the line drawn and go to the start of the row below.
        """
        self._dirty = False
        new = self._layout(self.width)
        old = self._drawn
        if new == old and not finished:
            return  # a key that changed nothing (Ctrl-A at the start) costs no output
        if old is None:
            self._erase()
            old = Layout(("",), (0, 0))
        first = 0
        while first < min(len(old.rows), len(new.rows)) and old.rows[first] == new.rows[first]:
            first += 1
        out: list[bytes] = []
        if first < len(new.rows):
            if first < len(old.rows):
                same = _rewrite_from(old.rows[first], new.rows[first], self.width)
                out.append(self._move_to(first, _cells(new.rows[first][:same])))
                if old.rows[first][same:] or len(old.rows) > first + 1:
                    out.append(ERASE_TO_END_OF_SCREEN)
            else:  # a row below what is drawn (blank): reached by a line feed, which may scroll
                out.append(self._move_to(first - 1, _cells(old.rows[-1])) + b"\r\n")
                same = 0
            changed = [new.rows[first][same:], *new.rows[first + 1 :]]
            out.append(b"\r\n".join(row.encode("utf-8") for row in changed))
            self._cursor_row = len(new.rows) - 1
            end = _cells(new.rows[-1])
            # At the right margin the terminal's cursor is in limbo: move with a CR.
            self._cursor_column = end if end < max(self.width, MIN_COLUMNS) else -1
        elif first < len(old.rows):  # the line lost its last rows
            out += [self._move_to(first, 0), ERASE_TO_END_OF_SCREEN]
        if finished:
            out.append(self._move_to(len(new.rows) - 1, 0))
            if new.rows[-1] or len(new.rows) == 1:
                out.append(b"\r\n")  # else the line ended at the margin, on the row above
            self._cursor_row, self._cursor_column = 0, 0
            self._drawn = None
        else:
            out.append(self._move_to(*new.cursor))
            self._drawn = new
        self.terminal.write(b"".join(out))

    def _move_to(self, row: int, column: int) -> bytes:
        """The bytes that take the cursor to ``row`` (of the input area) and ``column``."""
        if (row, column) == (self._cursor_row, self._cursor_column):
            return b""
        move = CR
        if row < self._cursor_row:
            move += b"\x1b[%dA" % (self._cursor_row - row)
        elif row > self._cursor_row:
            move += b"\x1b[%dB" % (row - self._cursor_row)
        if column:
            move += b"\x1b[%dC" % column
        self._cursor_row, self._cursor_column = row, column
        return move


def _cells(text: str) -> int:
    """Cells ``text`` takes (printable ASCII, the usual text, counted at C speed)."""
    if text.isascii() and text.isprintable():
        return len(text)
    return sum(map(cell_width, text))


def _rewrite_from(old: str, new: str, width: int) -> int:
    """Where to start rewriting row ``old`` to show ``new``: after what they share, but
    never at the right margin (the cursor cannot stand there) nor on a combining mark
    (it would lose the character it goes with)."""
    same = 0
    for x, y in zip(old, new, strict=False):
        if x != y:
            break
        same += 1
    while same and (
        _cells(new[:same]) >= max(width, MIN_COLUMNS)
        or (same < len(new) and cell_width(new[same]) == 0)
    ):
        same -= 1
    return same


class Keyboard(ServerProtocol):
    """insults' key parser for a :class:`LineEditor`: what one read brings is drawn once."""

    def dataReceived(self, data: bytes) -> None:
        editor = self.terminalProtocol
        if isinstance(editor, LineEditor):
            with editor.drawing_once():
                super().dataReceived(data)
        else:
            super().dataReceived(data)
