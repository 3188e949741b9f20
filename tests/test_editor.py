"""The SSH line editor, driven through insults' key parser and checked on a model screen."""

from __future__ import annotations

import random
import re
from typing import cast

import pytest
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport

from chatd.fronts.editor import Keyboard, LineBuffer, LineEditor, cell_width, layout

LEFT, RIGHT, UP, DOWN = b"\x1b[D", b"\x1b[C", b"\x1b[A", b"\x1b[B"
HOME, END, DELETE = b"\x1b[H", b"\x1b[F", b"\x1b[3~"
BACKSPACE = b"\x7f"
CTRL = {letter: bytes([ord(letter) - 96]) for letter in "abcdefghijklmnopqrstuvwxyz"}
_SEQUENCE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


class Screen:
    """A terminal screen that understands what the editor writes.

    Printable text (wide characters take two cells, combining ones none), CR,
    LF (scrolling at the bottom), cursor up/down/forward, erase to the end of
    the screen, and the clear screen sequence; writing the last column leaves
    the cursor pending at the margin, as VT100s do. Resizing does not re-wrap
    (as xterm). A BEL (the bell of a mention) moves nothing and is counted.
    """

    def __init__(self, width: int, height: int = 24) -> None:
        self.width, self.height = width, height
        self.cells = [[" "] * width for _ in range(height)]
        self.row = self.column = 0
        self.bells = 0

    def feed(self, data: bytes) -> None:
        position = 0
        text = data.decode("utf-8")
        while position < len(text):
            char = text[position]
            if char == "\x1b":
                match = _SEQUENCE.match(text, position)
                assert match is not None, f"unknown sequence at {text[position:]!r}"
                self._sequence(int(match[1] or 1), match[2], match[1])
                position = match.end()
                continue
            position += 1
            if char == "\r":
                self.column = 0
            elif char == "\n":
                self._line_feed()
            elif char == "\a":
                self.bells += 1
            else:
                assert char >= " ", f"control character {char!r} written"
                self._put(char)

    def resize(self, width: int) -> None:
        self.cells = [(row + [" "] * width)[:width] for row in self.cells]
        self.width = width
        self.column = min(self.column, width - 1)

    def row_text(self, row: int) -> str:
        if row >= self.height:
            return ""
        return "".join(cell for cell in self.cells[row] if cell is not None).rstrip()

    def lines(self) -> list[str]:
        lines = [self.row_text(row) for row in range(self.height)]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def cursor(self) -> tuple[int, int]:
        return self.row, min(self.column, self.width - 1)

    def _put(self, char: str) -> None:
        cells = cell_width(char)
        if cells == 0:
            return  # combining: joins the character before (not modelled)
        if self.column + cells > self.width:
            self.column = 0
            self._line_feed()
        self.cells[self.row][self.column] = char
        if cells == 2:
            self.cells[self.row][self.column + 1] = None  # type: ignore[call-overload]
        self.column += cells

    def _line_feed(self) -> None:
        if self.row == self.height - 1:
            self.cells.pop(0)
            self.cells.append([" "] * self.width)
        else:
            self.row += 1

    def _sequence(self, count: int, final: str, given: str) -> None:
        self.column = min(self.column, self.width - 1)
        if final == "A":
            self.row = max(0, self.row - count)
        elif final == "B":
            self.row = min(self.height - 1, self.row + count)
        elif final == "C":
            self.column = min(self.width - 1, self.column + count)
        elif final == "H":
            self.row = self.column = 0
        elif final == "J" and given in ("", "0"):
            self.cells[self.row][self.column :] = [" "] * (self.width - self.column)
            for row in range(self.row + 1, self.height):
                self.cells[row] = [" "] * self.width
        elif final == "J" and given == "2":
            self.cells = [[" "] * self.width for _ in range(self.height)]
        else:
            raise AssertionError(f"unexpected sequence {given!r}{final}")


class Recorder(LineEditor):
    """An editor that keeps the lines entered and can be told a secret is being typed."""

    def __init__(self, max_bytes: int = 2048) -> None:
        super().__init__(max_bytes, max_history=5)
        self.entered: list[str] = []
        self.interrupts = 0
        self.secret = False

    def line_entered(self, line: str) -> None:
        self.entered.append(line)

    def interrupted(self) -> None:
        self.interrupts += 1

    def is_secret(self) -> bool:
        return self.secret


class Terminal:
    """A Recorder behind a key parser (Keyboard: one draw per read; insults' own: one per
    key), drawing on a Screen ``width`` cells wide."""

    def __init__(
        self, width: int = 40, max_bytes: int = 2048, parser: type[ServerProtocol] = Keyboard
    ) -> None:
        self.transport = StringTransport()
        self.protocol = parser(Recorder, max_bytes)
        self.protocol.makeConnection(self.transport)
        self.editor = cast(Recorder, self.protocol.terminalProtocol)
        self.screen = Screen(width)
        self.editor.terminalSize(width, 24)
        self.refresh()

    def type(self, data: bytes | str) -> None:
        self.protocol.dataReceived(data.encode("utf-8") if isinstance(data, str) else data)
        self.refresh()

    def show(self, data: bytes) -> None:
        self.editor.show(data)
        self.refresh()

    def resize(self, width: int) -> None:
        self.screen.resize(width)
        self.editor.terminalSize(width, 24)
        self.refresh()

    def refresh(self) -> int:
        written = self.transport.value()
        self.transport.clear()
        self.screen.feed(written)
        return len(written)


def test_utf8_input_is_taken_whole() -> None:
    """Non-ASCII typing, which arrives a byte at a time, is assembled: héllo stays héllo."""
    terminal = Terminal()
    terminal.type("héllo wörld ✓\r")
    assert terminal.editor.entered == ["héllo wörld ✓"]


def test_a_character_split_across_reads_is_assembled() -> None:
    """A UTF-8 character whose bytes come in two reads is still one character."""
    terminal = Terminal()
    encoded = "é".encode()
    terminal.type(encoded[:1])
    terminal.type(encoded[1:] + b"\r")
    assert terminal.editor.entered == ["é"]


def test_wide_characters_take_two_cells_and_wrap_whole() -> None:
    """East Asian wide characters take two cells; one that does not fit starts the next row."""
    terminal = Terminal(width=9)
    terminal.type("日本語です")  # "> " then 10 cells
    assert terminal.screen.lines() == ["> 日本語", "です"]
    assert terminal.screen.cursor() == (1, 4)
    assert layout("> ", "日本語です", 0, 9).cursor == (0, 2)


def test_long_input_wraps_and_incoming_lines_leave_no_stale_row() -> None:
    """Input wider than the terminal is drawn on several rows, and lines arriving meanwhile
    go above it with no leftover copy of its first row."""
    terminal = Terminal(width=20)
    typed = "".join(chr(ord("a") + n % 26) for n in range(45))
    terminal.type(typed)
    terminal.show(b"<bob> hi\r\n")
    terminal.show(b"<carol> hello\r\n")
    assert terminal.screen.lines() == [
        "<bob> hi",
        "<carol> hello",
        "> " + typed[:18],
        typed[18:38],
        typed[38:],
    ]
    terminal.type("\r")
    assert terminal.editor.entered == [typed]
    assert terminal.screen.lines()[-1] == ">"


def test_a_line_ending_at_the_margin_keeps_the_cursor_below_it() -> None:
    """Input that fills its last row exactly puts the cursor on the row below, not over it."""
    terminal = Terminal(width=10)
    terminal.type("12345678")
    assert terminal.screen.lines() == ["> 12345678"]
    assert terminal.screen.cursor() == (1, 0)
    terminal.type("9")
    assert terminal.screen.lines() == ["> 12345678", "9"]
    terminal.type(BACKSPACE * 2)
    assert terminal.screen.lines() == ["> 1234567"]


def test_a_resize_redraws_for_the_new_width() -> None:
    """A narrower terminal gets the input wrapped to its width, and the lines above stay."""
    terminal = Terminal(width=40)
    terminal.show(b"<bob> before\r\n")
    terminal.type("x" * 30)
    terminal.resize(12)
    assert terminal.screen.lines()[0] == "<bob> before"
    assert "> " + "x" * 10 in terminal.screen.lines()
    terminal.show(b"<bob> after\r\n")
    lines = terminal.screen.lines()
    assert lines[lines.index("<bob> after") + 1 :] == ["> " + "x" * 10, "x" * 12, "x" * 8]
    assert terminal.editor.width == 12


@pytest.mark.parametrize(
    ("keys", "text", "cursor"),
    [
        (b"hello world" + CTRL["u"], "", 0),
        (b"hello world" + LEFT * 5 + CTRL["u"], "world", 0),
        (b"hello big world" + CTRL["w"], "hello big ", 10),
        (b"hello big world  " + CTRL["w"] + CTRL["w"], "hello ", 6),
        (b"hello world" + CTRL["a"] + CTRL["k"], "", 0),
        (b"hello world" + LEFT * 6 + CTRL["k"], "hello", 5),
        (b"hello" + CTRL["a"] + b">" + CTRL["e"] + b"<", ">hello<", 7),
        (b"hello" + HOME + DELETE + END + BACKSPACE, "ell", 3),
        (b"hello" + CTRL["b"] + CTRL["b"] + CTRL["f"] + b"_", "hell_o", 5),
        (b"abc" + LEFT + CTRL["d"], "ab", 2),
        (b"one two" + b"\x1bb" + b"X" + b"\x1bf" + b"Y", "one XtwoY", 9),
        (b"one two" + b"\x1b\x7f", "one ", 4),
        (b"ab" + b"\x1bOD" + b"X", "aXb", 2),  # an arrow in application mode
        (b"ab" + b"\x1b[1;5C" + b"\x1bOP" + b"\x1b[15~" + b"\t" + b"\x1b[999X", "ab", 2),
    ],
)
def test_readline_keys(keys: bytes, text: str, cursor: int) -> None:
    """The usual readline keys edit as in bash; keys the editor does not know do nothing."""
    terminal = Terminal()
    terminal.type(keys)
    assert (terminal.editor.buffer.text, terminal.editor.buffer.cursor) == (text, cursor)
    assert terminal.screen.lines() == [("> " + text).rstrip()]
    assert terminal.screen.cursor() == (0, 2 + cursor)


def test_history_goes_back_and_forth_and_keeps_the_draft() -> None:
    """Up and down walk the lines entered, and down past the newest brings back the draft."""
    terminal = Terminal()
    terminal.type("first\rsecond\rdraft")
    terminal.type(UP)
    assert terminal.editor.buffer.text == "second"
    terminal.type(UP + UP + UP)
    assert terminal.editor.buffer.text == "first"
    terminal.type(DOWN + DOWN)
    assert terminal.editor.buffer.text == "draft"
    assert terminal.screen.lines()[-1] == "> draft"


def test_history_is_bounded() -> None:
    """Only the last max_history lines are kept."""
    buffer = LineBuffer(100, max_history=3)
    for n in range(10):
        buffer.insert(str(n))
        buffer.enter()
    assert buffer.history == ["7", "8", "9"]


def test_a_secret_is_masked_and_never_kept() -> None:
    """While a secret (a password) is typed it shows as stars, and it stays out of history."""
    terminal = Terminal()
    terminal.type("public\r")
    terminal.editor.secret = True
    terminal.type("hunter2")
    assert terminal.screen.lines()[-1] == "> *******"
    terminal.type(UP)  # no history at a password prompt
    assert terminal.editor.buffer.text == "hunter2"
    terminal.type("\r")
    assert "hunter2" not in "".join(terminal.screen.lines())
    terminal.editor.secret = False
    terminal.type(UP)
    assert terminal.editor.buffer.text == "public"
    assert terminal.editor.entered == ["public", "hunter2"]
    assert terminal.editor.buffer.history == ["public"]


def test_the_line_limit_counts_utf8_bytes() -> None:
    """Typing stops at the line limit in bytes, whatever the characters' size."""
    terminal = Terminal(max_bytes=10)
    terminal.type("ééééééé")  # 2 bytes each
    assert terminal.editor.buffer.text == "ééééé"
    terminal.type("a" * 5)
    assert terminal.editor.buffer.text == "ééééé"


def test_control_characters_never_enter_the_line() -> None:
    """C0 and C1 controls (typed or pasted) are not text and are not taken."""
    terminal = Terminal()
    terminal.type("a\x00\x07b\u0085c".encode() + b"\x1b")
    assert terminal.editor.buffer.text == "abc"


def test_ctrl_c_and_ctrl_d_on_an_empty_line_interrupt() -> None:
    """Ctrl-C, and Ctrl-D on an empty line, are the user leaving; Ctrl-D on text deletes."""
    terminal = Terminal()
    terminal.type(CTRL["c"] + CTRL["d"])
    assert terminal.editor.interrupts == 2
    terminal.type(b"x" + CTRL["a"] + CTRL["d"])
    assert terminal.editor.interrupts == 2


def test_typing_costs_output_in_proportion_to_what_is_typed() -> None:
    """Typing at the end of the line echoes about the key alone, not the line again, and
    a paste that comes in one read is drawn once."""
    terminal = Terminal(width=80, parser=ServerProtocol)
    terminal.type("x" * 2000)
    terminal.refresh()
    sent = []
    for _ in range(100):
        terminal.protocol.dataReceived(b"y")
        sent.append(terminal.refresh())
    assert max(sent) <= 8
    pasting = Terminal(width=80)
    pasting.type("x" * 500 + "\x1b[D" * 500)
    assert pasting.screen.cursor() == (0, 2)
    drawn: list[bytes] = []
    pasting.editor.terminal.write = drawn.append  # type: ignore[method-assign]
    pasting.protocol.dataReceived(b"\x1b[C" * 500)
    assert len(drawn) == 1


@pytest.mark.parametrize("parser", [Keyboard, ServerProtocol])
def test_random_editing_always_shows_the_line_as_laid_out(parser: type[ServerProtocol]) -> None:
    """After any sequence of keys, incoming lines and resizes, the screen shows the
    prompt and line exactly where the layout puts them, with the cursor in place."""
    keys: list[bytes | str] = [
        "a", "b", " ", "é", "日", "\u0301", "x" * 15,
        LEFT, RIGHT, HOME, END, DELETE, BACKSPACE, UP, DOWN,
        CTRL["a"], CTRL["e"], CTRL["u"], CTRL["k"], CTRL["w"], CTRL["b"], CTRL["f"],
        b"\r",
    ]  # fmt: skip
    chooser = random.Random(14)
    for _ in range(30):
        terminal = Terminal(width=chooser.randint(5, 30), parser=parser)
        for _ in range(80):
            roll = chooser.random()
            if roll < 0.05:
                terminal.show(b"<bob> incoming\r\n")
            elif roll < 0.08:
                terminal.resize(chooser.randint(5, 30))
            else:
                terminal.type(chooser.choice(keys))
            editor = terminal.editor
            drawn = layout("> ", editor.buffer.text, editor.buffer.cursor, editor.width)
            top = terminal.screen.row - drawn.cursor[0]
            shown = [terminal.screen.row_text(top + n) for n in range(len(drawn.rows))]
            assert shown == [row.replace("\u0301", "").rstrip() for row in drawn.rows]
            assert terminal.screen.row_text(top + len(drawn.rows)) == ""
            assert terminal.screen.cursor()[1] == drawn.cursor[1]
