"""End-to-end: docs/bots.md's example bot, and bot mode on --json-port, against a real daemon."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatd.fronts.jsoninput import HOW
from tests.daemon import Daemon, read_until, start_chatd

BOTS_MD = Path(__file__).parents[2] / "docs" / "bots.md"
MARKER = "<!-- bot-example: tests/e2e/test_bot_example.py runs the block below, as written -->"


def example_bot() -> str:
    """The Python block that follows the marker in docs/bots.md, exactly as written there."""
    text = BOTS_MD.read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r"\n```python\n(.*?)\n```\n", text, re.DOTALL)
    assert found is not None, "docs/bots.md has no marked example"
    return found.group(1) + "\n"


def test_the_example_is_the_size_the_docs_promise() -> None:
    """The example stays small enough to read at a glance (docs/bots.md says 25 lines of code)."""
    code = [line for line in example_bot().splitlines() if line.strip()]
    assert len(code) <= 25


def say(client: socket.socket, line: str) -> None:
    client.sendall(line.encode() + b"\n")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A real daemon with a line port and a --json-port, both on loopback, taking lines of
    up to 64 KiB (room for a JSON nesting bomb past any parser's depth)."""
    chatd = start_chatd(
        tmp_path, "--json-port", "tcp:0:interface=127.0.0.1", "--max-line-bytes", "65536"
    )
    try:
        chatd.wait_for_ports(2)
        yield chatd
    finally:
        chatd.stop()


def test_the_documented_bot_answers_a_netcat_user(daemon: Daemon, tmp_path: Path) -> None:
    """The bot of docs/bots.md joins without replay, answers !time in the room and in private,
    and is refused nothing."""
    script = tmp_path / "bot.py"
    script.write_text(example_bot(), encoding="utf-8")
    user = daemon.connect()
    bot = None
    try:
        read_until(user, b"Choose an alias")
        say(user, "ann")
        read_until(user, b"Welcome, ann!")
        say(user, "!time")  # before the bot: with replay off it never sees this one
        bot = subprocess.Popen(
            [sys.executable, str(script), str(daemon.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        read_until(user, b"timebot has joined #lobby")
        say(user, "!time")
        # The answer names ann, so her terminal rings (the BEL before the line end).
        said = read_until(user, b" UTC\a\r\n")
        say(user, "/msg timebot !time")
        said += read_until(user, b"*timebot* it is ")
        if not said.endswith(b" UTC\r\n"):
            said += read_until(user, b" UTC\r\n")
        answers = re.findall(rb"<timebot> ann: it is \d\d:\d\d:\d\d UTC\a\r\n", said)
        assert len(answers) == 1, said
        assert re.search(rb"\*timebot\* it is \d\d:\d\d:\d\d UTC\r\n", said), said
    finally:
        user.close()
        if bot is not None:
            bot.kill()
            _, errors = bot.communicate(timeout=10)
            assert errors == b""
    assert "Traceback" not in daemon.log_text()


def json_events(client: socket.socket, marker: bytes) -> list[dict[str, object]]:
    """The JSON objects received up to and including the line holding ``marker``."""
    data = read_until(client, marker)
    while not data.endswith(b"\n"):
        data += read_until(client, b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_json_port_speaks_json_both_ways_and_refuses_garbage(daemon: Daemon) -> None:
    """On --json-port the greeting is JSON, JSON objects chat with a line user, and hostile
    lines (overlong, not JSON, too deep, NaN) get error events, never a traceback."""
    json_port = daemon.wait_for_ports(2)[1]
    user = daemon.connect()
    bot = socket.create_connection((daemon.host, json_port), timeout=10)
    try:
        read_until(user, b"Choose an alias")
        say(user, "ann")
        read_until(user, b"Welcome, ann!")
        (greeting,) = json_events(bot, b"Choose an alias")
        assert greeting["type"] == "notice"
        say(bot, '{"type":"alias","alias":"robo"}')
        assert json_events(bot, b'"type":"room"')[-1]["welcome"] == "robo"
        say(bot, '{"type":"message","text":"beep \\u001b[31mred"}')
        read_until(user, b"<robo> beep red\r\n")
        say(user, "hello robo")  # robo is named: a mention
        assert json_events(bot, b"hello robo") == [
            {"type": "message", "sender": "ann", "text": "hello robo", "mention": True}
        ]
        hostile = [
            '{"type":"message","text":"' + "x" * 70000 + '"}',
            "hello",
            '{"a":' + "[" * 30000 + "]" * 30000 + "}",
            '{"type":"message","text":NaN}',
            '{"type":"message","text":' + "1" * 60000 + "}",
        ]
        bot.sendall("".join(line + "\n" for line in hostile).encode())
        errors = json_events(bot, b"as a string.")
        assert [event["type"] for event in errors] == ["error"] * len(hostile)
        assert [event["text"] for event in errors[:4]] == [
            "Line too long (over 65536 bytes); dropped.",
            HOW,
            "Not valid JSON here (nested too deeply).",
            "Not valid JSON (NaN is not JSON).",
        ]
        say(bot, '{"type":"command","text":"/format line"}')
        read_until(bot, b"*** The format is now line.\r\n")
    finally:
        user.close()
        bot.close()
    assert "Traceback" not in daemon.log_text()
