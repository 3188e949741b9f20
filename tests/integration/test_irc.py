"""Integration tests: a scripted IRC client (twisted.words' IRCClient) and line users on
real loopback sockets, against the real ``twistd -n chatd --irc``."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.words.protocols.irc import IRCClient

from tests.daemon import Daemon, read_until, start_chatd
from tests.tls import make_certificate

WAIT_SECONDS = 15.0
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """chatd with a line port and an IRC port, both on free loopback ports; it must log
    no traceback."""
    chatd = start_chatd(tmp_path, "--irc", "tcp:0:interface=127.0.0.1")
    try:
        chatd.wait_for_ports(2)
        yield chatd
    finally:
        chatd.stop()
    assert "Traceback" not in chatd.log_text()


class Recorder(IRCClient):
    """An IRC client that notes what it is told, as (event, arguments) pairs."""

    def __init__(self, nick: str, password: str | None = None) -> None:
        self.nickname = nick
        self.password = password
        self.events: list[tuple[Any, ...]] = []

    def _note(self, *event: Any) -> None:
        self.events.append(event)

    def signedOn(self) -> None:
        self._note("signed on", self.nickname)

    def joined(self, channel: str) -> None:
        self._note("joined", channel)

    def privmsg(self, user: str, channel: str, message: str) -> None:
        self._note("privmsg", user.split("!")[0], channel, message)

    def action(self, user: str, channel: str, data: str) -> None:
        self._note("action", user.split("!")[0], channel, data)

    def noticed(self, user: str, channel: str, message: str) -> None:
        self._note("notice", user.split("!")[0], message)

    def userJoined(self, user: str, channel: str) -> None:
        self._note("user joined", user.split("!")[0], channel)

    def userQuit(self, user: str, quitMessage: str) -> None:
        self._note("user quit", user.split("!")[0], quitMessage)

    def topicUpdated(self, user: str, channel: str, newTopic: str) -> None:
        self._note("topic", user.split("!")[0], channel, newTopic)

    def userRenamed(self, oldname: str, newname: str) -> None:
        self._note("renamed", oldname, newname)

    def irc_ERR_PASSWDMISMATCH(self, prefix: str, params: list[str]) -> None:
        self._note("464")


class LineUser(LineReceiver):
    """A line-protocol user (what nc shows), noting every line it is sent."""

    delimiter = b"\r\n"

    def __init__(self) -> None:
        self.received: list[str] = []

    def lineReceived(self, line: bytes) -> None:
        self.received.append(line.decode("utf-8"))

    def type(self, text: str) -> None:
        self.transport.write(text.encode() + b"\n")  # as nc sends it


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (in the reactor) until ``check()`` holds."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05)


async def irc_user(daemon: Daemon, nick: str, password: str | None = None) -> Recorder:
    client = Recorder(nick, password)
    port = daemon.wait_for_ports(2)[1]
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    await until(lambda: ("signed on", nick) in client.events, f"{nick} signed on")
    return client


async def line_user(daemon: Daemon, alias: str) -> LineUser:
    user = LineUser()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port), user)
    await until(lambda: any("Choose an alias" in line for line in user.received), "the prompt")
    user.type(alias)
    await until(lambda: any("Type /help" in line for line in user.received), f"{alias} in")
    return user


def heard(user: LineUser, line: str) -> Callable[[], bool]:
    return lambda: line in user.received


def told(client: Recorder, *event: Any) -> Callable[[], bool]:
    return lambda: event in client.events


@pytest_twisted.ensureDeferred
async def test_an_irc_user_and_a_line_user_see_each_other(daemon: Daemon) -> None:
    """In #lobby, an IRC client and nc users see each other's messages, actions, joins,
    quits, topic and nick changes."""
    nelly = await line_user(daemon, "nelly")
    ike = await irc_user(daemon, "ike")
    await until(told(ike, "joined", "#lobby"), "ike in #lobby")
    await until(heard(nelly, "*** ike has joined #lobby (2 here)"), "nelly sees ike join")

    nelly.type("hello ike")
    nelly.type("/me waves")
    await until(told(ike, "privmsg", "nelly", "#lobby", "hello ike"), "nelly's line")
    await until(told(ike, "action", "nelly", "#lobby", "waves"), "nelly's action")

    ike.say("#lobby", "hi nelly")
    ike.describe("#lobby", "bows")
    await until(heard(nelly, "<ike> hi nelly\a"), "ike's line")
    await until(heard(nelly, "* ike bows"), "ike's action")

    ike.topic("#lobby", "IRC and nc")
    await until(heard(nelly, "*** ike set the topic: IRC and nc"), "ike's topic")
    nelly.type("/topic back to nc")
    await until(told(ike, "topic", "nelly", "#lobby", "back to nc"), "nelly's topic")

    ike.setNick("ike2")
    await until(heard(nelly, "*** ike is now known as ike2"), "ike's new nick")
    nelly.type("/nick nelly2")
    await until(told(ike, "renamed", "nelly", "nelly2"), "nelly's new nick")

    otto = await line_user(daemon, "otto")
    await until(told(ike, "user joined", "otto", "#lobby"), "otto's join")
    otto.type("/quit bye")
    await until(told(ike, "user quit", "otto", "Quit: bye"), "otto's quit")

    ike.msg("nelly2", "psst")
    await until(heard(nelly, "*ike2* psst"), "ike's private message")

    ike.quit("later")
    await until(heard(nelly, "*** ike2 has left (Quit: later)"), "ike's quit")
    nelly.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_registered_alias_cannot_be_taken_over_irc_without_its_password(
    daemon: Daemon,
) -> None:
    """An IRC client that asks for a registered alias without its password, or with a
    wrong one, never gets in; with the password (PASS) it does."""
    owner = await line_user(daemon, "reggie")
    owner.type(f"/register {PASSWORD}")
    await until(
        lambda: any(line.startswith("*** Registered reggie") for line in owner.received),
        "the registration",
    )
    owner.type("/quit")
    watcher = await line_user(daemon, "watcher")

    intruder = await irc_user(daemon, "reggie")
    await until(
        lambda: any(e[:2] == ("notice", "NickServ") for e in intruder.events),
        "NickServ asking for the password",
    )
    intruder.msg("NickServ", "IDENTIFY guessed-wrong")
    await until(told(intruder, "464"), "the wrong password refused")
    intruder.say("#lobby", "I am reggie now")
    watcher.type("/who")
    await until(lambda: any(line.startswith("*** In #lobby") for line in watcher.received), "/who")
    assert "*** In #lobby (1): watcher" in watcher.received
    assert ("joined", "#lobby") not in intruder.events
    assert not any("I am reggie now" in line for line in watcher.received)

    rightful = await irc_user(daemon, "reggie", password=PASSWORD)
    await until(told(rightful, "joined", "#lobby"), "reggie in with the password")
    await until(heard(watcher, "*** reggie has joined #lobby (2 here)"), "watcher sees reggie")
    intruder.transport.loseConnection()
    rightful.quit()
    watcher.transport.loseConnection()


def test_irc_over_tls_takes_the_tls_options(tmp_path: Path) -> None:
    """--irc ssl:PORT with --tls-cert and --tls-key: an IRC client registers over TLS, and
    sees a line user's line."""
    cert, key = make_certificate(tmp_path)
    chatd = start_chatd(
        tmp_path,
        "--irc",
        "ssl:0:interface=127.0.0.1",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    try:
        _, irc_port = chatd.wait_for_ports(2)
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", irc_port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as secure:
            secure.sendall(b"NICK tina\r\nUSER t 0 * :T\r\n")
            read_until(secure, b":chatd 366 tina #lobby :End of /NAMES list.\r\n")
            line_user = chatd.connect()
            read_until(line_user, b"Choose an alias")
            line_user.sendall(b"lee\nhello tina\n")
            read_until(secure, b":lee!lee@chatd PRIVMSG #lobby :hello tina\r\n")
            line_user.close()
    finally:
        chatd.stop()


def test_the_connection_limits_and_flood_control_hold_on_the_irc_port(tmp_path: Path) -> None:
    """A connection past --max-per-ip is refused with an IRC ERROR line, and a client that
    floods PINGs is cut off with Excess flood; the daemon logs no traceback."""
    chatd = start_chatd(
        tmp_path,
        "--irc",
        "tcp:0:interface=127.0.0.1",
        "--max-per-ip",
        "2",
        "--flood-burst",
        "5",
        "--flood-rate",
        "1",
        "--flood-queue",
        "10",
    )
    try:
        _, irc_port = chatd.wait_for_ports(2)
        flooder = socket.create_connection(("127.0.0.1", irc_port), timeout=10)
        other = socket.create_connection(("127.0.0.1", irc_port), timeout=10)
        refused = socket.create_connection(("127.0.0.1", irc_port), timeout=10)
        assert read_until(refused, b"\r\n") == (
            b"ERROR :Closing link: Too many connections from 127.0.0.1 (at most 2).\r\n"
        )
        flooder.sendall(b"NICK flo\r\nUSER f 0 * :F\r\n")
        read_until(flooder, b" 366 flo #lobby ")
        flooder.sendall(b"".join(b"PING :%d\r\n" % n for n in range(100)))
        received = read_until(flooder, b"ERROR :Closing link\r\n")
        assert b":chatd NOTICE flo :Excess flood; goodbye.\r\n" in received
        for client in (flooder, other, refused):
            client.close()
    finally:
        chatd.stop()
    assert "Traceback" not in chatd.log_text()
