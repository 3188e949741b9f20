"""Tests for bot mode: /format json and --json-port on the line front end, both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs

from chatd.commands import run_command
from chatd.events import Error
from chatd.flood import FloodLimits
from chatd.fronts.jsoninput import FIELDS, HOW, read_line
from chatd.fronts.line import LineFactory
from chatd.fronts.web import web_site
from chatd.session import ALIAS_PROMPT, CANNOT_SWITCH_FORMAT
from chatd.text import clean_text
from chatd.wireformats import InputRefused
from tests.test_comings import clock, join, make_hub
from tests.test_protocol import Client, RegisteredServer, Server, whole_line_session
from tests.test_web import WebUser, tracebacks


class Bot(Client):
    """A line client that speaks JSON, one object per line (once it has switched)."""

    def send(self, record: Any) -> None:
        """Send ``record`` as one line of JSON."""
        self.type(json.dumps(record) + "\n")

    def events(self) -> list[dict[str, Any]]:
        """Every JSON object the server sent since the last call (each exactly one line)."""
        self.clock.advance(0)
        raw = self.transport.value()
        self.transport.clear()
        assert raw.endswith(b"\n") or raw == b""
        return [json.loads(line) for line in raw.decode("utf-8").split("\n")[:-1]]


def connect_bot(server: Server, json_port: bool = True) -> Bot:
    return Bot(LineFactory(server.sessions, json=json_port))


def joined_bot(server: Server, alias: str = "bot") -> Bot:
    """A --json-port bot that has chosen ``alias``; what it was sent so far is read."""
    bot = connect_bot(server)
    bot.send({"type": "alias", "alias": alias})
    bot.events()
    return bot


def error(text: str) -> dict[str, str]:
    return {"type": "error", "text": text}


def notice(text: str) -> dict[str, str]:
    return {"type": "notice", "text": text}


@pytest.fixture
def server() -> Server:
    return Server()


# Switching.


def test_a_json_port_greets_in_json(server: Server) -> None:
    """A --json-port connection is greeted with one JSON notice holding greeting and prompt."""
    bot = connect_bot(server)
    (greeting,) = bot.events()
    assert greeting["type"] == "notice"
    assert greeting["text"].startswith("Welcome to chatd ")
    assert greeting["text"].endswith(ALIAS_PROMPT)


def test_format_alone_says_the_format(server: Server) -> None:
    """/format names the current format and the choices, in that format."""
    (alice,) = server.join("alice")
    alice.type("/format\n")
    assert alice.lines() == ["*** The format is line (/format line|json switches)."]
    bot = joined_bot(server)
    bot.send({"type": "command", "text": "/format"})
    assert bot.events() == [notice("The format is json (/format line|json switches).")]


def test_format_json_before_an_alias_answers_and_prompts_in_json(server: Server) -> None:
    """A bot's first line, /format json, is answered in JSON, and so is the prompt after it."""
    bot = connect_bot(server, json_port=False)
    assert bot.lines()[-1].startswith("*** Choose an alias")
    bot.type("/FORMAT Json\r\n")
    assert bot.events() == [notice("The format is now json."), notice(ALIAS_PROMPT)]
    bot.send({"type": "alias", "alias": "bot"})
    kinds = [event["type"] for event in bot.events()]
    assert kinds == ["room"]
    assert server.hub.online() == ("bot",)


def test_switching_after_joining_keeps_the_boundary_exact(server: Server) -> None:
    """What the room queued before /format json arrives as lines, the answer and all after it
    as JSON; /format line switches back the same way."""
    alice, bob = server.join("alice", "bob")
    bob.type("first\n")
    alice.type("/format json\n")
    bob.type("second\n")
    alice.clock.advance(0)
    raw = alice.transport.value().decode()
    alice.transport.clear()
    assert raw == (
        "<bob> first\r\n"
        '{"type":"notice","text":"The format is now json."}\n'
        '{"type":"message","sender":"bob","text":"second"}\n'
    )
    alice.type('{"type":"command","text":"/format line"}\n')
    bob.type("third\n")
    assert alice.lines() == ["*** The format is now line.", "<bob> third"]


def test_format_refuses_an_unknown_format(server: Server) -> None:
    """/format with a name that is not line or json gets its usage, format unchanged."""
    (alice,) = server.join("alice")
    alice.type("/format xml\n")
    alice.type("/format json please\n")
    assert alice.lines() == ["!!! Usage: /format [line|json]"] * 2


def test_help_lists_format(server: Server) -> None:
    """/help tells of /format."""
    (alice,) = server.join("alice")
    alice.type("/help\n")
    assert "/format [line|json]" in "\n".join(alice.lines())


def test_web_and_other_one_format_connections_refuse_to_switch(server: Server) -> None:
    """/format on a WebSocket (JSON already) is refused, saying which connections switch."""
    web = WebUser(web_site(server.sessions, []), clock=server.clock)
    web.events()
    web.say("/format json")
    assert web.events() == [error(CANNOT_SWITCH_FORMAT), notice(ALIAS_PROMPT)]
    web.say("webby\n/format line")
    assert web.events()[-1] == error(CANNOT_SWITCH_FORMAT)


def test_a_session_opened_without_formats_refuses_to_switch(server: Server) -> None:
    """A front end that gives its sessions no formats (SSH's terminal) keeps its format:
    /format is refused before and after the alias, in that format."""
    session, transport = whole_line_session(server)
    transport.clear()
    session.line_received(b"/format json")
    session.line_received(b"ann")
    session.line_received(b"/format")
    server.clock.advance(0)
    lines = transport.value().decode().split("\r\n")
    assert lines[0] == f"!!! {CANNOT_SWITCH_FORMAT}"
    assert lines[-2] == f"!!! {CANNOT_SWITCH_FORMAT}"


# Input, both ways.


def test_each_kind_of_input_becomes_what_a_user_would_type(server: Server) -> None:
    """message, action, private and command objects say, act, whisper and run commands."""
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bob.lines()
    bot.send({"type": "message", "text": "hi"})
    bot.send({"type": "message", "text": " /join #x is a command"})
    bot.send({"type": "message", "text": "//two"})
    bot.send({"type": "action", "text": "waves"})
    bot.send({"type": "private", "to": "bob", "text": "psst"})
    bot.send({"type": "command", "text": "/nick robot", "id": 7})
    assert bob.lines() == [
        "<bot> hi",
        "<bot> /join #x is a command",
        "<bot> //two",
        "* bot waves",
        "*bot* psst",
        "*** bot is now known as robot",
    ]
    assert bot.events()[0] == {"type": "private_sent", "recipient": "bob", "text": "psst"}


def test_a_line_user_is_answered_in_json(server: Server) -> None:
    """What a line user says reaches a bot as the WebSocket's JSON message object."""
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bob.type("hello there\n")
    assert bot.events() == [{"type": "message", "sender": "bob", "text": "hello there"}]


def test_a_blank_line_is_a_keep_alive(server: Server) -> None:
    """A blank line in JSON mode is ignored, without an error."""
    bot = joined_bot(server)
    bot.type("\n   \r\n")
    assert bot.events() == []


def test_replay_off_before_an_alias_keeps_history_away(server: Server) -> None:
    """/replay off as a command object before the alias: the bot gets no history replay."""
    (bob,) = server.join("bob")
    bob.type("old news\n")
    bot = connect_bot(server)
    bot.events()
    bot.send({"type": "command", "text": "/replay off"})
    bot.send({"type": "alias", "alias": "bot"})
    kinds = [event["type"] for event in bot.events()]
    assert kinds == ["notice", "notice", "room"]


KINDS = "alias, password, message, action, private, command"
NEEDS_TEXT = 'A "message" object needs "text" as a string.'
MALFORMED: list[tuple[str, str]] = [
    ("hello", HOW),
    ("/quit", HOW),
    ("[1, 2]", HOW),
    ('"text"', HOW),
    ("{", "Not valid JSON (Expecting property name enclosed in double quotes, column 2)."),
    ('{"type": "message", "text": "x"', "Not valid JSON (Expecting ',' delimiter, column 32)."),
    ('{"type": "message", "text": NaN}', "Not valid JSON (NaN is not JSON)."),
    ('{"type": "message", "text": -Infinity}', "Not valid JSON (-Infinity is not JSON)."),
    ("{}", f'No "type" string: send one of {KINDS}.'),
    ('{"type": 1}', f'No "type" string: send one of {KINDS}.'),
    (
        '{"type": "\\u001b[2Jshout"}',
        f"Unknown type 'shout': send one of {KINDS}.",
    ),
    ('{"type": "message"}', 'A "message" object needs "text" as a string.'),
    ('{"type": "message", "text": ["hi"]}', 'A "message" object needs "text" as a string.'),
    ('{"type": "message", "text": null}', 'A "message" object needs "text" as a string.'),
    ('{"type": "message", "text": ' + "9" * 2000 + "}", NEEDS_TEXT),
    ('{"type": "private", "text": "x"}', 'A "private" object needs "to" as a string.'),
    ('{"type": "private", "to": "bo b", "text": "x"}', '"to" must be an alias.'),
    ('{"type": "private", "to": "", "text": "x"}', '"to" must be an alias.'),
    ('{"type": "command", "text": "who"}', 'A command starts with one /, such as "/who".'),
    ('{"type": "command", "text": "//who"}', 'A command starts with one /, such as "/who".'),
    (
        '{"type": "alias", "alias": "other"}',
        'You have an alias; to change it, {"type":"command","text":"/nick NEW"}.',
    ),
    ('{"type": "password", "password": "x"}', "No password is asked for now."),
]


@pytest.mark.parametrize(("line", "refusal"), MALFORMED)
def test_malformed_input_gets_an_error_event(server: Server, line: str, refusal: str) -> None:
    """Every line that is not a fitting JSON object gets one JSON error saying why, and no
    traceback; the room hears nothing."""
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bob.lines()
    with capturedLogs() as logged:
        bot.type(line + "\n")
        assert bot.events() == [error(refusal)]
    assert tracebacks(list(logged)) == []
    assert bob.lines() == []
    assert server.hub.online() == ("bob", "bot")


def test_a_nesting_bomb_is_refused_not_raised() -> None:
    """Arrays nested past the parser's depth, under a generous line limit, are an error event."""
    server = Server(max_line_bytes=300_000)
    bot = joined_bot(server)
    with capturedLogs() as logged:
        bot.type("{" + '"a":' + "[" * 100_000 + "]" * 100_000 + "}\n")
        assert bot.events() == [error("Not valid JSON here (nested too deeply).")]
    assert tracebacks(list(logged)) == []


def test_each_kind_fits_one_moment_before_an_alias(server: Server) -> None:
    """Before an alias, chat and a password are refused (never taken as the alias)."""
    bot = connect_bot(server)
    bot.events()
    bot.send({"type": "message", "text": "carol"})
    bot.send({"type": "password", "password": "carol"})
    bot.send({"type": "alias", "alias": "/quit"})
    bot.send({"type": "command", "text": "/who"})
    assert bot.events() == [
        error('Choose an alias first: {"type":"alias","alias":"..."}.'),
        error('Choose an alias first: {"type":"alias","alias":"..."}.'),
        error('An alias, not a command: send {"type":"command","text":"/..."}.'),
        error("Choose an alias first (or /quit, /replay off, /format json)."),
        notice(ALIAS_PROMPT),
    ]
    assert server.hub.online() == ()
    assert not bot.transport.disconnecting


def test_a_refused_alias_is_an_error_and_a_prompt(server: Server) -> None:
    """An alias breaking the rules, or with a control character, is refused in JSON."""
    bot = connect_bot(server)
    bot.events()
    bot.send({"type": "alias", "alias": "bad\u001bname"})
    events = bot.events()
    assert [event["type"] for event in events] == ["error", "notice"]
    assert server.hub.online() == ()


def test_registered_alias_takes_a_password_object() -> None:
    """At the password prompt only a password object is taken; a command is refused, not
    taken for the password."""
    server = RegisteredServer()
    bot = connect_bot(server)
    bot.events()
    bot.send({"type": "alias", "alias": "owner"})
    assert bot.events() == [notice("owner is registered. Password:")]
    bot.send({"type": "command", "text": "/quit"})
    assert bot.events() == [
        error('The password is asked for: {"type":"password","password":"..."}.')
    ]
    bot.send({"type": "password", "password": "secret"})
    server.clock.advance(0)
    assert bot.events()[0]["type"] == "room"
    assert server.hub.online() == ("owner",)


def test_a_lone_surrogate_in_a_password_is_replaced_not_raised() -> None:
    """A password spelling a lone surrogate is checked (and refused) like any wrong one."""
    server = RegisteredServer()
    bot = connect_bot(server)
    bot.events()
    with capturedLogs() as logged:
        bot.type('{"type":"alias","alias":"owner"}\n{"type":"password","password":"\\ud800"}\n')
        server.clock.advance(5)
        events = bot.events()
    assert error("Wrong password for owner.") in events
    assert tracebacks(list(logged)) == []


def test_format_during_a_password_check_is_dropped_and_counted() -> None:
    """/format json typed while a password is checked is dropped like any line, and counted;
    the connection stays in its format."""
    server = RegisteredServer()
    server.accounts.hold = True
    client = server.connect()
    client.lines()
    client.type("owner\nsecret\n/format json\n")
    server.accounts.answer()
    lines = client.lines()
    assert lines[-1] == "!!! 1 line typed during the password check was discarded."
    assert lines[0].startswith("*** owner is registered")
    client.type("/format\n")
    assert client.lines() == ["*** The format is line (/format line|json switches)."]


# Hostile input.


def test_an_overlong_json_line_is_dropped_with_a_json_error() -> None:
    """The line limit applies to the JSON line as received; the refusal is JSON, and the
    stream picks up at the next line."""
    server = Server(max_line_bytes=64)
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bot.send({"type": "message", "text": "x" * 40})
    bot.send({"type": "message", "text": "fits"})
    assert bot.events() == [error("Line too long (over 64 bytes); dropped.")]
    assert bob.lines()[-1] == "<bot> fits"


def test_invalid_utf8_in_a_json_string_becomes_a_replacement_character(server: Server) -> None:
    """Bytes that are not UTF-8 inside a JSON string arrive as U+FFFD, not as an error."""
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bob.lines()
    bot.type(b'{"type":"message","text":"h\xc3(i\xed\xa0\x80"}\n')
    assert bob.lines() == ["<bot> h\ufffd(i\ufffd\ufffd\ufffd"]


def test_control_characters_in_text_are_cleaned(server: Server) -> None:
    """Escapes spelled in JSON are cleaned as on a typed line: nobody's terminal obeys them."""
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bob.lines()
    bot.send({"type": "message", "text": "\u001b[2J\u0007hi\u202e there\r\n"})
    bot.send({"type": "action", "text": "\u0000waves\u001b]0;pwned\u0007"})
    assert bob.lines() == ["<bot> hi there", "* bot waves"]


def test_an_escape_before_a_slash_still_says_the_message(server: Server) -> None:
    """A message whose text is a command once cleaned is still said, never run."""
    (bob,) = server.join("bob")
    bot = joined_bot(server)
    bob.lines()
    bot.send({"type": "message", "text": "\u001b[A/quit"})
    assert bob.lines() == ["<bot> /quit"]
    assert server.hub.online() == ("bob", "bot")


def test_a_format_flood_is_cut_off_like_any_flood() -> None:
    """/format switches go through the flood gate: past the queue, the flooder is told (in
    the format of the moment) and disconnected."""
    server = Server(flood=FloodLimits(burst=2, rate=1, queue_cap=3))
    (alice,) = server.join("alice")
    alice.type("/format json\n" + '{"type":"command","text":"/format line"}\n' * 8)
    alice.clock.advance(0)
    answers = alice.transport.value().decode().splitlines()
    assert [json.loads(answer)["text"] for answer in answers] == [
        "The format is now json.",
        "You are sending too fast: 4 lines waiting. Slow down or you will be disconnected.",
        "Excess flood; goodbye.",
    ]
    assert alice.transport.disconnecting


def test_garbage_floods_the_gate_too() -> None:
    """Malformed lines take flood tokens: a stream of them ends in a disconnect, not an error
    line each for ever."""
    server = Server(flood=FloodLimits(burst=1, rate=1, queue_cap=3))
    bot = joined_bot(server)
    bot.type("not json\n" * 10)
    assert bot.events()[-1] == error("Excess flood; goodbye.")
    assert bot.transport.disconnecting


# Properties.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
STAGES = st.sampled_from(["alias", "password", "chat"])


@given(
    record=st.dictionaries(
        st.sampled_from(["type", "text", "alias", "to", "password", "x"]) | st.text(),
        st.sampled_from([*FIELDS, "nope"]) | JSON_VALUES,
        max_size=4,
    ),
    expecting=STAGES,
)
def test_any_json_object_is_read_or_refused(record: dict[str, Any], expecting: Any) -> None:
    """Whatever object arrives, reading it gives a line (encodable as UTF-8) or InputRefused,
    never another exception."""
    try:
        typed = read_line(json.dumps(record), expecting)
    except InputRefused:
        return
    assert typed is not None
    typed.encode("utf-8")


@given(line=st.text(), expecting=STAGES)
def test_any_text_is_read_or_refused(line: str, expecting: Any) -> None:
    """Any line at all, JSON or not, reads or is refused, never raising anything else."""
    try:
        typed = read_line(line, expecting)
    except InputRefused:
        return
    assert typed is None or isinstance(typed, str)


# What a bot may send at any moment (either format, any stage, a password check
# running or not), what someone else in its room may do meanwhile, and time passing.
SWITCHES = st.sampled_from(
    [
        "/format json",
        "/format line",
        '{"type":"command","text":"/format line"}',
        '{"type":"command","text":"/format json"}',
        '{"type":"command","text":"/format"}',
    ]
)
BOT_LINES = SWITCHES | st.sampled_from(
    [
        "owner",
        "secret",
        '{"type":"alias","alias":"owner"}',
        '{"type":"alias","alias":"bot"}',
        '{"type":"password","password":"secret"}',
        '{"type":"password","password":"wrong"}',
        "bot",
        '{"type":"message","text":"hi bob"}',
        "/join #two",
        '{"type":"command","text":"/join #lobby"}',
        "/bell off",
        "not json",
        "{",
        "/replay off",
        '{"type":"command","text":"/nick bot2"}',
        "/quit",
        "x" * 3000,
    ]
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("bot"), st.lists(BOT_LINES, min_size=1, max_size=4)),
        st.tuples(
            st.just("bob"),
            st.sampled_from(["bob: hi bot", "bot bot2 owner", "/me pokes bot", "/join #two"]),
        ),
        st.tuples(st.just("time"), st.sampled_from([0, 2, 6])),
    ),
    max_size=20,
)


def formats_in_turn(raw: bytes, json_first: bool) -> None:
    """Assert that ``raw`` is protocol lines (CRLF) and JSON objects (LF), each only while its
    format is on: the answer to a switch is the first line in the new format."""
    current = "json" if json_first else "line"
    for line in raw.decode("utf-8").split("\n")[:-1]:
        if line == "*** The format is now line.\r":
            current = "line"
        elif line == json.dumps(notice("The format is now json."), separators=(",", ":")):
            current = "json"
        elif line.endswith("\r"):
            assert current == "line", line
            assert "\a" not in line[:-2] and (not line.endswith("\a\r") or line[0] in "<*"), line
        else:
            assert current == "json", line
            assert isinstance(json.loads(line), dict) and "\\u0007" not in line, line


@settings(max_examples=300)
@given(steps=STEPS, json_first=st.booleans(), hold=st.booleans(), joined=st.booleans())
@example(
    steps=[("bob", "bob: hi bot"), ("bot", ["/format json"])],
    json_first=False,
    hold=False,
    joined=True,
)
@example(
    steps=[("bob", "hi"), ("bot", ['{"type":"command","text":"/format line"}'])],
    json_first=True,
    hold=False,
    joined=True,
)
def test_whatever_a_bot_sends_whenever_each_line_out_is_in_the_format_of_its_moment(
    steps: list[tuple[str, Any]], json_first: bool, hold: bool, joined: bool
) -> None:
    """Any mix of both formats' lines, switches, a registered alias's password check, moves,
    mentions and time: the bot's output changes format exactly at each switch's answer, a
    BEL only ends a chat line, and nothing is logged as a traceback."""
    server = RegisteredServer(flood=FloodLimits(burst=5, rate=2, queue_cap=6))
    (bob,) = server.join("bob")
    bot = connect_bot(server, json_port=json_first)
    server.accounts.hold = hold
    if joined:  # in the room from the start (else only if the steps choose an alias)
        bot.type('{"type":"alias","alias":"bot"}\n' if json_first else "bot\n")
    with capturedLogs() as logged:
        for who, what in steps:
            if who == "bot" and not bot.transport.disconnecting:
                bot.type("".join(line + "\n" for line in what))
            elif who == "bob":
                bob.type(what + "\n")
            elif who == "time":
                server.accounts.answer()
                server.clock.advance(what)
        server.accounts.answer()
        server.clock.advance(10)
    assert tracebacks(list(logged)) == []
    formats_in_turn(bot.transport.value(), json_first)


@given(text=st.text())
def test_a_message_is_never_a_command(text: str) -> None:
    """Whatever a message's text, the typed line it becomes is said, never run as a command."""
    typed = read_line(json.dumps({"type": "message", "text": text}), "chat")
    assert typed is not None
    cleaned = clean_text(typed).lstrip()
    assert not cleaned.startswith("/") or cleaned.startswith("//")


def test_a_member_that_cannot_switch_is_told_so() -> None:
    """/format run for a member that is not a session (no IFormatSwitch) is refused to it."""
    hub = make_hub()
    (member,) = join(hub, "ann")
    member.events.clear()
    run_command(hub, member, "/format json")
    clock(hub).advance(0)
    assert member.events == [Error("This connection has one format.")]
