"""Tests for the IRC front end (chatd.fronts.irc, ircformat, ircwire), with StringTransport
and Clock: IRC clients beside line users in the same rooms, under the same rules."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

from chatd.admission import Admission, AdmittingFactory, ConnectionLimits
from chatd.events import Departed, Mentions, OfflineMessage, Renamed, Said
from chatd.flood import FloodLimits
from chatd.fronts import ircformat
from chatd.fronts.irc import IrcConnection, IrcFactory, refusal_irc
from chatd.fronts.ircformat import IrcFormat, iso_time
from chatd.fronts.ircwire import (
    Message,
    TooLong,
    check_length,
    parse,
    split_text,
    strip_formatting,
)
from chatd.fronts.line import LineFactory
from chatd.hub import Hub
from chatd.interfaces import IConnection
from chatd.model import Ban, HistoryEntry
from chatd.session import ChatConfig, Sessions
from chatd.tap import Options, makeService
from chatd.text import AliasRefused
from tests.test_protocol import Client as LineClient
from tests.test_protocol import ClockedAccounts
from tests.tls import make_certificate

WELCOME_NUMERICS = ["001", "002", "003", "004", "005", "422"]


class IrcClient:
    """One in-memory IRC connection to the factory under test."""

    def __init__(self, factory: IrcFactory) -> None:
        self.transport = StringTransport()
        self.connection: IrcConnection = factory.buildProtocol(self.transport.getPeer())
        self.connection.makeConnection(self.transport)
        self.clock = factory.sessions.clock

    def send(self, *lines: str | bytes) -> None:
        """Send ``lines`` to the server, each with its CRLF."""
        for line in lines:
            data = line.encode() if isinstance(line, str) else line
            self.connection.dataReceived(data + b"\r\n")

    def lines(self) -> list[str]:
        """Every line the server has sent since the last call, the turn's end passed."""
        self.clock.advance(0)
        raw = self.transport.value()
        self.transport.clear()
        assert raw.endswith(b"\r\n") or raw == b""
        return raw.decode("utf-8").split("\r\n")[:-1]

    def commands(self) -> list[str]:
        """What :meth:`lines` returns, as the command (or numeric) of each line."""
        return [command_of(line) for line in self.lines()]

    def register(self, nick: str) -> list[str]:
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick} here")
        return self.lines()

    def drop(self) -> None:
        self.connection.connectionLost(Failure(ConnectionDone()))


def command_of(line: str) -> str:
    words = line.split(" ")
    if words[0].startswith("@"):
        words = words[1:]
    return words[1] if words[0].startswith(":") else words[0]


class Server:
    """A hub with an IRC and a line factory on one Sessions, and a clock."""

    def __init__(self, accounts: Any = None, **limits: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_780_000_000)  # a date in 2026, for the history's times
        self.hub = Hub(self.clock, accounts=accounts)
        limits.setdefault("flood", FloodLimits(rate=0))
        limits.setdefault("connections", ConnectionLimits(0, 0, 0))
        self.sessions = Sessions(self.hub, ChatConfig(**limits))
        self.irc = IrcFactory(self.sessions)
        self.line = LineFactory(self.sessions)

    def irc_user(self, nick: str) -> IrcClient:
        client = IrcClient(self.irc)
        client.register(nick)
        return client

    def line_user(self, alias: str) -> LineClient:
        client = LineClient(self.line)
        client.type(f"{alias}\r\n")
        client.lines()
        return client


@pytest.fixture
def server() -> Server:
    return Server()


# The wire.


def test_parse_drops_tags_and_prefix_and_keeps_the_trailing_parameter() -> None:
    """A message's tags and prefix are dropped; the trailing parameter keeps its spaces."""
    assert parse("@time=x;a=b :nick!u@h privmsg #lobby :hello  there :)") == Message(
        "PRIVMSG", ("#lobby", "hello  there :)")
    )
    assert parse("PING :") == Message("PING", ("",))
    assert parse("  ") is None
    assert parse("@only=tags") is None


def test_parse_folds_parameters_past_fifteen_into_the_last() -> None:
    """More than 15 parameters are folded into the 15th, as RFC 2812 allows no more."""
    message = parse("X " + " ".join(str(n) for n in range(20)))
    assert message is not None
    assert len(message.params) == 15
    assert message.params[-1] == "14 15 16 17 18 19"


def test_check_length_holds_messages_to_512_bytes_and_tags_to_8191() -> None:
    """A message of 510 bytes (512 with CRLF) passes, 511 does not; tags have their own limit."""
    check_length(b"x" * 510)
    check_length(b"@" + b"t" * 8189 + b" " + b"x" * 510)
    with pytest.raises(TooLong):
        check_length(b"x" * 511)
    with pytest.raises(TooLong):
        check_length(b"@" + b"t" * 8190 + b" PING x")


def test_strip_formatting_removes_mirc_codes_and_colour_numbers() -> None:
    """Bold, colours with their numbers (both kinds), reverse and reset go; text stays."""
    assert strip_formatting("\x02b\x02 \x0304,12red\x03 \x04ff0000hex\x0f \x16r 4,5") == (
        "b red hex r 4,5"
    )


def test_split_text_cuts_between_characters() -> None:
    """Long text is cut into pieces within the byte limit, never inside a character."""
    pieces = split_text("é" * 300, 101)
    assert all(len(piece.encode()) <= 101 for piece in pieces)
    assert "".join(pieces) == "é" * 300


def test_the_connection_provides_iconnection(server: Server) -> None:
    """The IRC connection is a session's IConnection, like every front end's."""
    client = IrcClient(server.irc)
    assert verifyObject(IConnection, client.connection)


# Registration.


def test_registration_welcomes_and_joins_the_default_channel(server: Server) -> None:
    """NICK and USER get 001-005, the MOTD's 422, then a JOIN of #lobby with its names."""
    client = IrcClient(server.irc)
    assert client.lines() == [":chatd NOTICE * :*** chatd 0.1.0: welcome"]
    lines = client.register("alice")
    assert [command_of(line) for line in lines] == [*WELCOME_NUMERICS, "JOIN", "353", "366"]
    assert lines[0] == ":chatd 001 alice :Welcome to chatd, alice"
    assert "CHANLIMIT=#:1" in lines[4] and "NICKLEN=24" in lines[4]
    assert lines[-3:] == [
        ":alice!alice@chatd JOIN :#lobby",
        ":chatd 353 alice = #lobby :alice",
        ":chatd 366 alice #lobby :End of /NAMES list.",
    ]
    assert server.hub.online() == ("alice",)


def test_the_motd_comes_with_the_welcome_once(server: Server) -> None:
    """A message of the day is sent as 375/372/376 with the welcome, and not again after it."""
    server.hub.motd_file_text = "Be nice.\nNo spam."
    client = IrcClient(server.irc)
    client.lines()
    lines = client.register("alice")
    assert lines[5:9] == [
        ":chatd 375 alice :- chatd Message of the day -",
        ":chatd 372 alice :- Be nice.",
        ":chatd 372 alice :- No spam.",
        ":chatd 376 alice :End of /MOTD command.",
    ]
    assert [command_of(line) for line in lines[9:]] == ["JOIN", "353", "366"]
    client.send("MOTD")
    assert client.commands() == ["375", "372", "372", "376"]


def test_cap_negotiation_holds_registration_until_cap_end(server: Server) -> None:
    """CAP LS 302 offers server-time, message-tags and sasl; registration waits for CAP END."""
    client = IrcClient(server.irc)
    client.lines()
    client.send("CAP LS 302", "NICK alice", "USER a 0 * :A")
    assert client.lines() == [":chatd CAP * LS :message-tags server-time sasl=PLAIN"]
    client.send("CAP REQ :server-time message-tags", "CAP REQ :server-time bogus")
    assert client.lines() == [
        ":chatd CAP * ACK :server-time message-tags",
        ":chatd CAP * NAK :server-time bogus",
    ]
    client.send("CAP LIST", "CAP FROB")
    assert client.lines() == [
        ":chatd CAP * LIST :message-tags server-time",
        ":chatd 410 * FROB :Invalid CAP command",
    ]
    client.send("CAP END")
    assert client.commands()[:1] == ["001"]


def test_a_nick_that_breaks_the_alias_rule_gets_432(server: Server) -> None:
    """An invalid or reserved nick is refused with 432, and a valid one then registers."""
    client = IrcClient(server.irc)
    client.lines()
    client.send("NICK -bad", "NICK admin", "USER a 0 * :A")
    lines = client.lines()
    assert [command_of(line) for line in lines] == ["432", "432"]
    assert lines[1].startswith(
        ":chatd 432 * admin :Erroneous nickname: The alias admin is reserved"
    )
    client.send("NICK good")
    assert client.commands()[0] == "001"


def test_a_taken_nick_gets_433_and_another_can_be_chosen(server: Server) -> None:
    """A nick someone has (on any front end, in any case) gets 433 before the welcome."""
    server.line_user("bob")
    client = IrcClient(server.irc)
    client.lines()
    assert client.register("BOB") == [":chatd 433 * BOB :Nickname is already in use"]
    client.send("NICK bob2")
    assert client.commands()[0] == "001"


def test_commands_before_registration_get_451_and_unknown_ones_421(server: Server) -> None:
    """Only registration commands work before the welcome; garbage gets 421 then too."""
    client = IrcClient(server.irc)
    client.lines()
    client.send("PRIVMSG #lobby :hi", "JOIN #x", "FROBNICATE", "PING :t")
    assert client.lines() == [
        ":chatd 451 * :You have not registered",
        ":chatd 451 * :You have not registered",
        ":chatd 421 * FROBNICATE :Unknown command",
        ":chatd PONG chatd :t",
    ]
    assert server.hub.online() == ()


def test_missing_parameters_get_461(server: Server) -> None:
    """USER with too few parameters, and commands without theirs, get 461."""
    client = IrcClient(server.irc)
    client.lines()
    client.send("USER a", "NICK", "PASS")
    assert client.lines() == [
        ":chatd 461 * USER :Not enough parameters",
        ":chatd 431 * :No nickname given",
        ":chatd 461 * PASS :Not enough parameters",
    ]


def test_a_client_that_never_sends_user_is_closed_at_the_alias_timeout() -> None:
    """NICK without USER (or CAP without END) never registers: the alias timeout ends it."""
    server = Server(alias_timeout_seconds=5)
    client = IrcClient(server.irc)
    client.send("CAP LS", "NICK alice", "USER a 0 * :A")
    client.lines()
    server.clock.advance(5)
    assert client.lines()[-2:] == [
        ":chatd NOTICE * :No alias chosen within 5 seconds; goodbye.",
        "ERROR :Closing link",
    ]
    assert client.transport.disconnecting


def test_quit_before_registration_closes(server: Server) -> None:
    """QUIT before the welcome ends the connection with ERROR."""
    client = IrcClient(server.irc)
    client.lines()
    client.send("QUIT :bye")
    assert client.lines() == ["ERROR :Closing link"]
    assert client.transport.disconnecting


def test_user_and_pass_after_registration_get_462(server: Server) -> None:
    """Registering again is refused."""
    client = server.irc_user("alice")
    client.send("USER a 0 * :A", "PASS x")
    assert client.commands() == ["462", "462"]


# Registered aliases.


def registered_server() -> tuple[Server, ClockedAccounts]:
    accounts = ClockedAccounts()
    return Server(accounts=accounts), accounts


def test_a_registered_nick_with_its_server_password_logs_in() -> None:
    """PASS with the password of registered 'owner' logs the client in as owner."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    client.send("PASS secret", "NICK owner", "USER o 0 * :O")
    server.clock.advance(0)
    assert client.commands() == [*WELCOME_NUMERICS, "JOIN", "353", "366"]
    assert server.hub.online() == ("owner",)
    assert server.hub.is_registered(server.hub.member_named("owner"))  # type: ignore[arg-type]


def test_a_registered_nick_cannot_be_taken_without_its_password() -> None:
    """Without a password the client is welcomed but not in: NickServ asks for it, chat
    is refused, a wrong IDENTIFY gets 464, and the right one joins."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    lines = client.register("owner")
    assert [command_of(line) for line in lines] == [*WELCOME_NUMERICS, "NOTICE"]
    assert lines[-1].startswith(":NickServ!NickServ@services NOTICE owner :owner is registered.")
    assert server.hub.online() == ()
    client.send("PRIVMSG #lobby :let me in", "WHO #lobby")
    assert client.commands() == ["NOTICE", "NOTICE"]
    client.send("PRIVMSG NickServ :IDENTIFY wrong")
    server.clock.advance(1)
    lines = client.lines()
    assert lines == [
        ":chatd 464 owner :Password incorrect",
        ":NickServ!NickServ@services NOTICE owner :Wrong password for owner.",
    ]
    assert server.hub.online() == ()
    client.send("NICKSERV IDENTIFY secret")
    server.clock.advance(0)
    assert client.commands() == ["JOIN", "353", "366"]
    assert server.hub.online() == ("owner",)


def test_a_nick_change_to_a_registered_nick_says_how_to_get_it() -> None:
    """NICK to a registered nick while chatting gets 433 and NickServ's notice of how to
    use it: clients show 433 in their own words, which say only that it is in use."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.register("guest")
    client.lines()
    client.send("NICK owner")
    lines = client.lines()
    assert lines[0] == ":chatd 433 guest owner :Nickname is registered to someone else"
    assert lines[1].startswith(
        ":NickServ!NickServ@services NOTICE guest :owner is registered. To use it, connect as"
    )
    assert len(lines) == 2 and server.hub.online() == ("guest",)


def test_a_wrong_server_password_leaves_the_client_out() -> None:
    """PASS with a wrong password for a registered nick: 464, and still not in."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    client.send("PASS nope", "NICK owner", "USER o 0 * :O")
    server.clock.advance(1)
    assert client.commands()[-2:] == ["464", "NOTICE"]
    assert server.hub.online() == ()


def test_a_client_waiting_for_its_password_may_take_another_nick() -> None:
    """A client told its nick is registered changes nick and joins as a guest."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    client.register("owner")
    client.send("NICK guest")
    lines = client.lines()
    assert lines[0] == ":owner!owner@chatd NICK :guest"
    assert [command_of(line) for line in lines[1:]] == ["JOIN", "353", "366"]
    assert server.hub.online() == ("guest",)


def sasl(*words: str) -> str:
    return base64.b64encode("\0".join(words).encode()).decode()


def test_sasl_plain_logs_a_registered_alias_in_before_the_welcome() -> None:
    """SASL PLAIN with the right password: 900 and 903, then the welcome as the account."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    client.send("CAP LS 302", "NICK someone", "USER o 0 * :O", "CAP REQ :sasl")
    client.send("AUTHENTICATE PLAIN")
    assert client.lines()[-1] == "AUTHENTICATE +"
    client.send(f"AUTHENTICATE {sasl('owner', 'owner', 'secret')}")
    server.clock.advance(0)
    lines = client.lines()
    assert lines == [
        ":chatd 900 * owner!owner@chatd owner :You are now logged in as owner",
        ":chatd 903 * :SASL authentication successful",
    ]
    client.send("CAP END")
    lines = client.lines()
    assert lines[0] == ":chatd 001 owner :Welcome to chatd, owner"
    assert server.hub.online() == ("owner",)


@pytest.mark.parametrize(
    ("steps", "answer"),
    [
        (["AUTHENTICATE SCRAM-SHA-256"], ["908", "904"]),
        (["AUTHENTICATE PLAIN", "AUTHENTICATE not*base64"], ["AUTHENTICATE", "904"]),
        (["AUTHENTICATE PLAIN", "AUTHENTICATE *"], ["AUTHENTICATE", "906"]),
        (["AUTHENTICATE PLAIN", *["AUTHENTICATE " + "A" * 400] * 4], ["AUTHENTICATE", "905"]),
        (
            ["AUTHENTICATE PLAIN", f"AUTHENTICATE {sasl('owner', 'owner', 'bad')}"],
            ["AUTHENTICATE", "904"],
        ),
        (
            ["AUTHENTICATE PLAIN", f"AUTHENTICATE {sasl('x', 'nobody', 'pw')}"],
            ["AUTHENTICATE", "904"],
        ),
    ],
)
def test_sasl_failures_are_answered(steps: list[str], answer: list[str]) -> None:
    """An unknown mechanism, bad base64, an abort, an endless response, a wrong password
    and an unregistered alias each get their SASL numeric, and nobody is logged in."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    client.send("CAP LS 302", "NICK x1", "USER o 0 * :O", *steps)
    server.clock.advance(1)
    assert client.commands()[1:] == answer
    client.send("CAP END")
    assert client.commands()[0] == "001"
    assert server.hub.online() == ("x1",)


# Chat between an IRC client and a line user.


def test_irc_and_line_users_see_each_others_chat(server: Server) -> None:
    """An IRC user and a line user in #lobby see each other's lines, actions and joins."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    assert alice.lines() == [":bob!bob@chatd JOIN :#lobby"]
    alice.send("PRIVMSG #lobby :hello bob", "PRIVMSG #LOBBY :\x01ACTION waves\x01")
    assert bob.lines() == ["<alice> hello bob\a", "* alice waves"]  # bob is named: his bell
    assert alice.lines() == []  # not echoed
    bob.type("hi alice\n/me bows\n")
    assert alice.lines() == [
        ":bob!bob@chatd PRIVMSG #lobby :hi alice",
        ":bob!bob@chatd PRIVMSG #lobby :\x01ACTION bows\x01",
    ]


def test_topic_and_nick_changes_and_quits_reach_both(server: Server) -> None:
    """Topic and nick changes and quits of either are seen by the other."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send("TOPIC #lobby :Tea time", "NICK alicia")
    assert bob.lines() == ["*** alice set the topic: Tea time", "*** alice is now known as alicia"]
    assert alice.lines() == [
        ":alice!alice@chatd TOPIC #lobby :Tea time",
        ":alice!alice@chatd NICK :alicia",
    ]
    alice.send("TOPIC #lobby")
    assert alice.lines()[0] == ":chatd 332 alicia #lobby :Tea time"
    bob.type("/topic Coffee\n/nick robert\n/quit off\n")
    assert alice.lines() == [
        ":bob!bob@chatd TOPIC #lobby :Coffee",
        ":bob!bob@chatd NICK :robert",
        ":robert!robert@chatd QUIT :Quit: off",
    ]
    alice.send("QUIT :later")
    assert alice.lines() == [":chatd NOTICE alicia :Goodbye.", "ERROR :Closing link"]
    assert alice.transport.disconnecting


def test_private_messages_both_ways(server: Server) -> None:
    """/msg from IRC reaches a line user privately, and a line user's /msg reaches IRC."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send("PRIVMSG bob :just you", "PRIVMSG bob :\x01ACTION winks\x01")
    assert bob.lines() == ["*alice* just you", "*alice* * alice winks"]
    bob.type("/msg alice back at you\n")
    assert alice.lines() == [":bob!bob@chatd PRIVMSG alice :back at you"]
    alice.send("PRIVMSG nobody :hello?")
    assert alice.lines() == [":chatd NOTICE alice :No such user: nobody"]


def test_a_line_starting_with_a_slash_is_chat_and_formatting_is_stripped(server: Server) -> None:
    """Text sent to a channel is chat, even '/quit'; mIRC colour codes never reach anyone."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.send("PRIVMSG #lobby :/quit is a command", "PRIVMSG #lobby :\x0304red\x03 \x02bold\x02")
    assert bob.lines() == ["<alice> /quit is a command", "<alice> red bold"]
    assert server.hub.online() == ("alice", "bob")


def test_long_lines_from_line_users_are_split_for_irc() -> None:
    """A line user's 2000-byte line reaches IRC as messages of at most 512 bytes, whole."""
    server = Server()
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    bob.type("x" * 2000 + "\n")
    lines = alice.lines()
    assert len(lines) == 5
    assert all(len(line) + 2 <= 512 for line in lines)
    assert "".join(line.partition(" :")[2] for line in lines) == "x" * 2000


def test_chat_errors_get_their_numerics(server: Server) -> None:
    """No recipient (411), no text (412), several targets (407), another channel (404)."""
    alice = server.irc_user("alice")
    alice.send("PRIVMSG", "PRIVMSG #lobby", "PRIVMSG a,b :x", "PRIVMSG #elsewhere :x")
    assert alice.commands() == ["411", "412", "407", "404"]


# Channels.


def test_joining_another_channel_moves_and_parts_the_old_one(server: Server) -> None:
    """JOIN #other parts #lobby first; the line user sees the move; PART goes back."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send("JOIN #tea,#coffee")
    assert alice.lines() == [
        ":chatd 405 alice #coffee :You can be in one channel at a time",
        ":alice!alice@chatd PART #lobby :gone to #tea",
        ":alice!alice@chatd JOIN :#tea",
        ":chatd 353 alice = #tea :alice",
        ":chatd 366 alice #tea :End of /NAMES list.",
    ]
    assert bob.lines() == ["*** alice has gone to #tea"]
    bob.type("/join #tea\n")
    assert alice.lines() == [":bob!bob@chatd JOIN :#tea"]
    bob.type("/join #lobby\n")
    assert alice.lines() == [":bob!bob@chatd PART #tea :gone to #lobby"]
    alice.send("PART #tea :bye")
    assert [command_of(line) for line in alice.lines()] == ["PART", "JOIN", "353", "366"]
    assert server.hub.room_of(alice.connection.session) == "#lobby"


def test_the_default_channel_cannot_be_parted_and_others_are_not_joined(server: Server) -> None:
    """PART #lobby is refused with a notice; PART of a channel one is not in gets 442;
    JOIN of the channel one is in does nothing; a bad channel name gets 403."""
    alice = server.irc_user("alice")
    alice.send("PART #lobby", "PART #nowhere", "JOIN #lobby", "JOIN &bad")
    lines = alice.lines()
    assert [command_of(line) for line in lines] == ["NOTICE", "442", "403"]
    assert server.hub.room_of(alice.connection.session) == "#lobby"


def test_names_who_whois_and_list(server: Server) -> None:
    """NAMES, WHO, WHOIS and LIST are answered with their numerics."""
    alice = server.irc_user("alice")
    server.line_user("bob")
    alice.lines()
    alice.send("NAMES #lobby", "WHO #lobby", "WHO bob", "WHOIS bob", "WHOIS ghost", "LIST")
    lines = alice.lines()
    assert [command_of(line) for line in lines] == [
        "353", "366",
        "352", "352", "315",
        "352", "315",
        "311", "319", "312", "317", "318",
        "401", "318",
        "321", "322", "323",
    ]  # fmt: skip
    assert lines[0] == ":chatd 353 alice = #lobby :alice bob"
    assert lines[4] == ":chatd 315 alice #lobby :End of /WHO list."
    assert lines[15] == ":chatd 322 alice #lobby 2 :"


def test_away_motd_ping_and_mode(server: Server) -> None:
    """AWAY sets and clears (306, 305), PING gets PONG (409 without a token), and MODE
    queries get harmless answers."""
    alice = server.irc_user("alice")
    alice.send("AWAY :lunch", "AWAY", "PING :abc", "PING", "MODE #lobby", "MODE #lobby +o x")
    alice.send("MODE alice", "MODE bob +i", "MODE #lobby b")
    assert alice.lines() == [
        ":chatd 306 alice :You are marked as away: lunch",
        ":chatd 305 alice :You are no longer marked as away.",
        ":chatd PONG chatd :abc",
        ":chatd 409 alice :No origin specified",
        ":chatd 324 alice #lobby :+nt",
        ":chatd 482 alice #lobby :Channel modes are chatd's own",
        ":chatd 221 alice :+",
        ":chatd 502 alice :Can't change mode for other users",
        ":chatd 368 alice #lobby :End of channel ban list",
    ]


def test_nick_changes_are_checked_like_aliases(server: Server) -> None:
    """A taken nick gets 433, an invalid one 432; a free one renames."""
    alice = server.irc_user("alice")
    server.line_user("bob")
    alice.lines()
    alice.send("NICK Bob", "NICK no!", "NICK Alice")
    assert alice.lines() == [
        ":chatd 433 alice Bob :Nickname is already in use",
        ":chatd 432 alice no! :Erroneous nickname: Invalid alias: use 1-24 characters:"
        " ASCII letters, digits, '_', '-' and '.', starting with a letter or digit.",
        ":alice!alice@chatd NICK :Alice",
    ]
    alice.send("WHOIS alice")
    assert alice.lines()[0] == ":chatd 311 Alice Alice Alice chatd * :Alice"


def test_history_is_replayed_with_server_time_or_the_time_in_the_text(server: Server) -> None:
    """History replays with an IRCv3 time tag to a client that asked for server-time,
    and with the time at the start of the text to one that did not."""
    bob = server.line_user("bob")
    bob.type("first\n/me second\n")
    at = server.clock.seconds()
    timed = IrcClient(server.irc)
    timed.send("CAP REQ :server-time", "NICK alice", "USER a 0 * :A", "CAP END")
    stamp = iso_time(at)
    assert timed.lines()[-2:] == [
        f"@time={stamp} :bob!bob@chatd PRIVMSG #lobby :first",
        f"@time={stamp} :bob!bob@chatd PRIVMSG #lobby :\x01ACTION second\x01",
    ]
    untimed = IrcClient(server.irc)
    lines = untimed.register("dave")
    assert lines[-2:] == [
        ":bob!bob@chatd PRIVMSG #lobby :[2026-05-28 20:26:40Z] first",
        ":bob!bob@chatd PRIVMSG #lobby :\x01ACTION [2026-05-28 20:26:40Z] second\x01",
    ]


def test_chatd_commands_work_by_name(server: Server) -> None:
    """chatd's own commands without an IRC name (HISTORY, MUTE ...) are sent on as they are."""
    alice = server.irc_user("alice")
    alice.send("MUTE bob 10m")
    assert alice.lines() == [":chatd NOTICE alice :Not permitted: operators only."]


def test_mentions_is_a_command_by_name(server: Server) -> None:
    """`MENTIONS` (irssi sends /mentions on as it is) is chatd's /mentions, as the login
    notice about mentions tells IRC users too; a guest is told it needs registration."""
    alice = server.irc_user("alice")
    alice.lines()
    alice.send("MENTIONS")
    (answer,) = alice.lines()
    assert answer.startswith(":chatd NOTICE alice :") and "regist" in answer


# Hostile clients.


def test_an_overlong_line_gets_417_and_the_next_line_is_read(server: Server) -> None:
    """A message over 512 bytes, or tags over 8191, gets 417; the stream goes on."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send(
        "PRIVMSG #lobby :" + "x" * 600, b"@" + b"t" * 9000 + b" PING x", "PRIVMSG #lobby :ok"
    )
    assert alice.commands() == ["417", "417"]
    assert bob.lines() == ["<alice> ok"]


def test_a_line_without_end_past_the_limit_is_skipped_to_its_end(server: Server) -> None:
    """Bytes without a line end past the framing limit get 417 once and are skipped."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    for _ in range(10):
        alice.connection.dataReceived(b"A" * 1000)
    alice.connection.dataReceived(b"still the long line\r\nPRIVMSG #lobby :after\r\n")
    assert alice.commands() == ["417"]
    assert bob.lines() == ["<alice> after"]


def test_bytes_that_are_not_utf8_become_replacement_characters(server: Server) -> None:
    """Invalid UTF-8 in a message becomes U+FFFD, and never an error."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.send(b"PRIVMSG #lobby :caf\xe9 \xff")
    assert bob.lines() == ["<alice> caf\ufffd \ufffd"]


def test_the_sessions_line_limit_holds_for_the_text(server: Server) -> None:
    """--max-line-bytes holds for what an IRC client says, as for everyone."""
    server = Server(max_line_bytes=20)
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send("PRIVMSG #lobby :" + "y" * 30)
    assert alice.lines() == [":chatd NOTICE alice :Line too long (over 20 bytes); dropped."]
    assert bob.lines() == []


def test_a_ping_flood_is_held_back_and_then_cut_off() -> None:
    """Every IRC line takes a flood-control token: a PING flood is delayed, warned, then
    disconnected with Excess flood."""
    server = Server(flood=FloodLimits(burst=5, rate=1, queue_cap=10))
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    server.clock.advance(10)  # the registration's tokens back
    alice.lines()
    alice.send(*[f"PING :{n}" for n in range(16)])
    lines = alice.lines()
    assert [command_of(line) for line in lines] == ["PONG"] * 5 + ["NOTICE"]
    assert "sending too fast" in lines[-1]
    alice.send(*[f"PING :{n}" for n in range(10)])
    assert alice.lines()[-2:] == [
        ":chatd NOTICE alice :Excess flood; goodbye.",
        "ERROR :Closing link",
    ]
    alice.drop()
    assert bob.lines() == ["*** alice has left (Excess flood)"]
    assert server.hub.counters.disconnects["flood"] == 1


def test_a_reader_that_does_not_read_is_cut_off_at_its_send_queue() -> None:
    """The session's send queue bounds what waits for a stalled IRC client."""
    server = Server(sendq_bytes=4096)
    alice = server.irc_user("alice")
    alice.connection.session._sender.pauseProducing()  # the transport is full
    bob = server.line_user("bob")
    for _ in range(50):
        bob.type("z" * 200 + "\n")
    server.clock.advance(0)
    assert server.hub.online() == ("bob",)
    assert server.hub.counters.disconnects["sendq"] == 1


def test_irc_encoders_are_not_kept_among_the_shared_constants(server: Server) -> None:
    """However many IRC clients come and go, the constants cache keeps none of their encoders."""
    for n in range(40):
        client = IrcClient(server.irc)
        client.register(f"user{n}")
        client.drop()
    server.line_user("bob")
    assert not any(isinstance(encode, IrcFormat) for encode, _ in server.sessions._constants)
    assert len(server.sessions._constants) == 1  # the line format's greeting


def test_a_refused_connection_is_told_in_irc() -> None:
    """A connection over the per-address limit is refused with an IRC ERROR line."""
    server = Server(connections=ConnectionLimits(max_conns=0, max_per_ip=1, max_rate_per_ip=0))
    admission = Admission(server.clock, server.sessions.config.connections)
    factory = AdmittingFactory(server.irc, admission, refusal_irc)
    first = factory.buildProtocol(StringTransport().getPeer())
    assert first is not None
    refused = factory.buildProtocol(StringTransport().getPeer())
    assert refused is not None
    transport = StringTransport()
    refused.makeConnection(transport)
    assert (
        transport.value()
        == b"ERROR :Closing link: Too many connections from 192.168.1.1 (at most 1).\r\n"
    )


def test_a_banned_address_is_refused_at_once() -> None:
    """A banned address is told why and closed before registration."""
    server = Server()
    server.hub.bans.add(Ban("192.168.1.1", "ip", "spam", "op", 0.0, None))
    client = IrcClient(server.irc)
    lines = client.lines()
    assert lines[0] == ":chatd NOTICE * :You are banned from this server: spam"
    assert lines[-1] == "ERROR :Closing link"


# The --irc option.


def test_the_irc_option_takes_an_endpoint(tmp_path: Path) -> None:
    """--irc is off by default, takes a port or an endpoint, and refuses a bad one."""
    assert parse_options()["irc"] is None
    assert parse_options("--irc", "6667")["irc"] == "tcp:6667:interface=127.0.0.1"
    with pytest.raises(UsageError, match="invalid --irc"):
        parse_options("--irc", "nonsense:1")


def test_irc_over_tls_takes_the_tls_files(tmp_path: Path) -> None:
    """--irc ssl:PORT is completed by --tls-cert and --tls-key, as an ssl: --port is."""
    cert, key = make_certificate(tmp_path)
    options = parse_options("--irc", "ssl:6697", "--tls-cert", str(cert), "--tls-key", str(key))
    assert options["irc"] == f"ssl:6697:certKey={cert}:privateKey={key}"
    assert options["ports"] == ["tcp:55555:interface=127.0.0.1"]


def test_make_service_listens_for_irc_behind_admission(tmp_path: Path) -> None:
    """With --irc, the service has an IRC listener, under the shared admission."""
    service = makeService(parse_options("--irc", "6667", "--data-dir", str(tmp_path)))
    factories = dict(service.listeners)
    irc = factories["tcp:6667:interface=127.0.0.1"]
    assert isinstance(irc, AdmittingFactory)
    assert isinstance(irc.wrapped, IrcFactory)
    assert irc.admission is service.sessions.admission


def parse_options(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_a_channels_broadcasts_are_made_once_for_all_its_irc_members(server: Server) -> None:
    """IRC members of one channel get the very same bytes for a line said there, and the
    same event in another channel is made for that channel."""
    alice, bob = server.irc_user("alice"), server.irc_user("bob")
    one, two = alice.connection.view, bob.connection.view
    said = Said("carol", "hi")
    assert one(said) is two(said)
    two.channel = "#tea"
    assert two(Departed("carol", "#x")) == b":carol!carol@chatd PART #tea :gone to #x\r\n"
    assert one(Departed("carol", "#x")) == b":carol!carol@chatd PART #lobby :gone to #x\r\n"
    two.channel = "#lobby"
    assert one(Renamed("alice", "alicia")) is two(Renamed("alice", "alicia"))
    assert (one.nick, two.nick) == ("alicia", "bob")  # each follows its own nick


def test_no_message_the_server_sends_is_over_512_bytes(server: Server) -> None:
    """A topic of 300 four-byte characters is cut to fit an IRC message, between characters."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    bob.type("/topic " + "\U0001f600" * 300 + "\n")
    (topic,) = alice.lines()
    assert len(topic.encode()) + 2 <= 512
    assert topic.startswith(":bob!bob@chatd TOPIC #lobby :\U0001f600")


class OperatorAccounts(ClockedAccounts):
    """ClockedAccounts with one operator, ``root`` (password ``opsecret``)."""

    def check_operator(self, name: str, password: str, host: str | None = None) -> Any:
        return succeed(name == "root" and password == "opsecret")


def test_an_irc_operator_kicks_and_mutes_with_irc_commands() -> None:
    """OPER makes an IRC user an operator; KICK then disconnects a line user, and MUTE
    (chatd's own command, by name) silences one."""
    server = Server(accounts=OperatorAccounts())
    alice = server.irc_user("alice")
    bob, carol = server.line_user("bob"), server.line_user("carol")
    alice.lines()
    alice.send("OPER root wrong")
    server.clock.advance(1)
    assert alice.lines() == [":chatd NOTICE alice :Wrong operator name or password."]
    alice.send("OPER root opsecret", "KICK #lobby bob :spam", "MUTE carol 10m")
    lines = alice.lines()
    assert lines[0] == ":chatd NOTICE alice :You are now an operator (root)."
    assert ":bob!bob@chatd QUIT :Kicked by alice: spam" in lines
    assert bob.transport.disconnecting
    carol.type("can anyone hear me\n")
    assert alice.lines() == []


def test_a_line_operator_kicks_an_irc_user() -> None:
    """An IRC user kicked by an operator elsewhere is told why and closed with ERROR."""
    server = Server(accounts=OperatorAccounts())
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    bob.type("/oper root opsecret\n/kick alice flooding\n")
    lines = alice.lines()
    assert lines[-1] == "ERROR :Closing link"
    assert any("flooding" in line for line in lines[:-1])
    assert alice.transport.disconnecting


def test_a_big_room_sums_up_arrivals_for_irc_clients_too() -> None:
    """In a room over --quiet-joins-above, arrivals reach IRC clients as one notice."""
    server = Server()
    server.hub.quiet_joins_above = 2
    alice = server.irc_user("alice")
    server.line_user("bob")
    alice.lines()
    server.line_user("carol")
    server.line_user("dave")
    assert alice.lines() == []
    server.clock.advance(server.hub.comings_seconds)
    (notice,) = alice.lines()
    assert notice.startswith(":chatd NOTICE #lobby :2 joined (carol, dave) in the last")


def test_a_notice_to_the_channel_is_chat(server: Server) -> None:
    """NOTICE to the channel reaches the others as a chat line (chatd has no notices)."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.send("NOTICE #lobby :heads up")
    assert bob.lines() == ["<alice> heads up"]


def test_chatd_command_text_sent_to_the_server_runs_as_a_command(server: Server) -> None:
    """/msg chatd with chatd's own command text (slash or not) runs it, never says it."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send("PRIVMSG chatd :/mute bob", "PRIVMSG chatd :help", "PRIVMSG chatd :/")
    lines = alice.lines()
    assert lines[0] == ":chatd NOTICE alice :Not permitted: operators only."
    assert lines[1] == ":chatd NOTICE alice :Commands:"
    assert lines.count(":chatd NOTICE alice :Commands:") == 2
    assert bob.lines() == []


def test_a_topic_seen_set_is_shown_with_who_set_it(server: Server) -> None:
    """TOPIC asks for the topic: 332, with 333 (who, when) once the client saw it set."""
    alice = server.irc_user("alice")
    bob = server.line_user("bob")
    alice.lines()
    alice.send("TOPIC #lobby")
    assert alice.lines() == [":chatd 331 alice #lobby :No topic is set"]
    bob.type("/topic Soup\n")
    alice.lines()
    alice.send("TOPIC #lobby")
    assert alice.lines() == [
        ":chatd 332 alice #lobby :Soup",
        f":chatd 333 alice #lobby bob!bob@chatd :{int(server.clock.seconds())}",
    ]


def test_a_nick_refused_by_the_session_after_the_welcome_can_be_changed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the session refuses the nick after all (another server took it in the same
    instant), the client is told, is in no room, and gets in with another nick."""
    checks = iter([None, AliasRefused("The alias alice is taken.")])
    real_check = server.hub.check_available

    def check_available(alias: str, account: str | None = None) -> str:
        if (refusal := next(checks, None)) is not None:
            raise refusal
        return real_check(alias, account)

    monkeypatch.setattr(server.hub, "check_available", check_available)
    client = IrcClient(server.irc)
    client.lines()
    lines = client.register("alice")
    assert [command_of(line) for line in lines] == [*WELCOME_NUMERICS, "NOTICE"]
    assert lines[-1] == ":chatd NOTICE alice :The alias alice is taken."
    client.send("PRIVMSG #lobby :hello?")
    assert client.lines() == [
        ":chatd NOTICE alice :alice could not be had: change nick with /nick."
    ]
    client.send("NICK alice2")
    assert client.commands() == ["NICK", "JOIN", "353", "366"]
    assert server.hub.online() == ("alice2",)


def test_what_a_client_sent_is_sent_back_as_one_safe_word(server: Server) -> None:
    """A nick or channel with spaces, a leading ':' or controls comes back in a reply as
    one clean word, so the reply parses."""
    client = IrcClient(server.irc)
    client.lines()
    client.send("NICK :two words", "NICK ::colon", "FOO\x1b[2J")
    lines = client.lines()
    assert lines[0].startswith(":chatd 432 * two_words :Erroneous nickname")
    assert lines[1].startswith(":chatd 432 * colon :Erroneous nickname")
    assert lines[2] == ":chatd 421 * FOO :Unknown command"


def test_kick_and_kill_name_one_nick() -> None:
    """KICK and KILL take the first nick they name; an empty one gets 461."""
    server = Server(accounts=OperatorAccounts())
    alice = server.irc_user("alice")
    bob, carol = server.line_user("bob"), server.line_user("carol")
    alice.send("OPER root opsecret")
    server.clock.advance(0)
    alice.lines()
    alice.send("KICK #lobby :", "KICK #lobby :bob,carol", "KILL :carol went too far")
    lines = alice.lines()
    assert lines[0] == ":chatd 461 alice KICK :Not enough parameters"
    assert bob.transport.disconnecting and carol.transport.disconnecting


# What issue 16's other parts send an IRC client.


def test_a_line_that_mentions_an_irc_user_is_the_plain_privmsg(server: Server) -> None:
    """A mention reaches an IRC client as the channel's PRIVMSG, without the line
    protocol's BEL: IRC clients highlight and ring for their own nick themselves."""
    ivy = server.irc_user("ivy")
    ann = server.line_user("ann")
    ivy.lines()
    ann.type("ivy: lunch?\r\n")
    assert ivy.lines() == [":ann!ann@chatd PRIVMSG #lobby :ivy: lunch?"]


def test_a_message_that_waited_comes_as_a_privmsg_with_its_time() -> None:
    """An offline message reaches an IRC client as a private PRIVMSG from its sender:
    with a server-time tag when the client asked for them, else with the time in text."""
    client = IrcClient(Server().irc)
    client.send("CAP LS 302", "CAP REQ :server-time", "CAP END")
    client.register("ivy")
    client.lines()
    rendered = client.connection.session.encode  # type: ignore[union-attr]
    at = 1_780_000_000.0
    tagged = rendered(OfflineMessage("ann", "see you", at)).decode()
    assert tagged == f"@time={iso_time(at)} :ann!ann@chatd PRIVMSG ivy :see you\r\n"
    plain = IrcFormat(Clock())
    plain.nick = "ivy"
    assert plain(OfflineMessage("ann", "see you", at)).decode() == (
        ":ann!ann@chatd PRIVMSG ivy :[2026-05-28 20:26:40Z] see you\r\n"
    )


def test_the_mentions_list_comes_as_server_notices() -> None:
    """/mentions (as IRC `MENTIONS` or `/quote`) lists each line as a notice, with its
    time and room, between a count and an end line; an empty list says so."""
    rendered = IrcFormat(Clock())
    rendered.nick = "ivy"
    entries = (HistoryEntry("#lobby", "say", "ann", "ivy?", 1_780_000_000.0),)
    assert rendered(Mentions(entries)).decode().split("\r\n")[:-1] == [
        ":chatd NOTICE ivy :Lines that mentioned you while you were away (1):",
        ":chatd NOTICE ivy :[2026-05-28 20:26:40Z] #lobby <ann> ivy?",
        ":chatd NOTICE ivy :End of mentions ('/mentions clear' forgets them).",
    ]
    assert rendered(Mentions(())).decode() == (
        ":chatd NOTICE ivy :No lines mentioned you while you were away.\r\n"
    )


# Found by the adversarial review of the IRC front end.


def test_every_irc_line_keeps_a_client_alive_as_an_empty_line_does() -> None:
    """--idle-timeout counts any line, as it does a line user's empty one: an IRC client
    sending only its PINGs (or ISON, MODE) stays, a silent one is closed."""
    server = Server(idle_timeout_seconds=60)
    server.sessions.start()
    alice = server.irc_user("alice")
    bob = server.irc_user("bob")
    for _ in range(3):
        server.clock.advance(45)
        alice.send("PING :lag-check", "ISON bob", "MODE #lobby")
    server.clock.advance(30)
    assert not alice.transport.disconnecting
    assert bob.transport.disconnecting
    assert bob.lines()[-2:] == [
        ":chatd NOTICE bob :Idle for more than 60 seconds; goodbye.",
        "ERROR :Closing link",
    ]
    server.sessions.stop()


def test_a_notice_is_never_answered_not_even_with_an_error(server: Server) -> None:
    """RFC 2812 3.3.2: no automatic reply to a NOTICE, so a bot that answers notices
    cannot loop with chatd; a NOTICE that can be delivered still is."""
    alice = server.irc_user("alice")
    bob = server.irc_user("bob")
    bob.send("AWAY :out")
    alice.lines()
    bob.lines()
    alice.send(
        "NOTICE",
        "NOTICE bob",
        "NOTICE a,b :x",
        "NOTICE chatd :hello",
        "NOTICE NickServ :hello",
        "NOTICE nobody :x",
        "NOTICE #elsewhere :x",
        "NOTICE bob :psst",
        "NOTICE #lobby :hi all",
    )
    assert alice.lines() == []
    assert bob.lines() == [
        ":alice!alice@chatd PRIVMSG bob :psst",
        ":alice!alice@chatd PRIVMSG #lobby :hi all",
    ]


def test_nobody_can_be_nickserv(server: Server) -> None:
    """NickServ is who speaks for the server to IRC clients: no member may take the name
    (on any front end), nor could IRC clients write to them."""
    alice = server.irc_user("alice")
    alice.send("NICK NickServ", "NICK nickserv")
    lines = alice.lines()
    assert [command_of(line) for line in lines] == ["432", "432"]
    assert lines[0].startswith(":chatd 432 alice NickServ :Erroneous nickname:")
    client = IrcClient(server.irc)
    assert command_of(client.register("NickServ")[-1]) == "432"
    bob = LineClient(server.line)
    bob.type("NickServ\r\n")
    assert "reserved" in bob.lines()[-2]
    assert server.hub.online() == ("alice",)


def test_nick_changes_sent_together_are_checked_against_the_latest(server: Server) -> None:
    """A second NICK sent before the first's answer arrived is checked against the nick
    the first gave (a case change of it is no 'nickname in use'), and answered after it."""
    alice = server.irc_user("alice")
    alice.lines()
    alice.send("NICK Zed", "NICK zed")
    assert alice.lines() == [":alice!alice@chatd NICK :Zed", ":Zed!Zed@chatd NICK :zed"]
    assert server.hub.online() == ("zed",)


def test_what_ping_and_cap_req_echo_carries_no_control_characters(server: Server) -> None:
    """A PING token and a CAP REQ are sent back without the lone CR, NUL or other control
    characters in them (a lone CR ends a line for some clients)."""
    alice = server.irc_user("alice")
    alice.lines()
    alice.send(b"PING :a\rb\x00c\x1b[2J", b"CAP REQ :sasl\x0bserver-time\x1c")
    assert alice.lines() == [
        ":chatd PONG chatd :abc",
        ":chatd CAP alice ACK :sasl server-time",
    ]


def test_a_join_or_part_of_many_channels_gets_one_refusal_not_one_each(server: Server) -> None:
    """JOIN and PART take one channel (TARGMAX): a list of a hundred is answered with one
    line for the rest, not a hundred (a 500-byte line was 6 KB of answers)."""
    alice = server.irc_user("alice")
    alice.lines()
    many = ",".join(f"#c{n}" for n in range(100))
    alice.send(f"JOIN #tea,{many}")
    assert [command_of(line) for line in alice.lines()] == ["405", "PART", "JOIN", "353", "366"]
    alice.send(f"PART #tea,{many}")
    assert [command_of(line) for line in alice.lines()] == ["407", "PART", "JOIN", "353", "366"]


def test_sasl_asking_to_act_as_another_identity_fails() -> None:
    """SASL PLAIN with an authorization identity other than the account (RFC 4616: acting
    for someone else) is refused with 904, even with the right password: chatd has no
    such proxying, and must not log in as the account the client did not ask for."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    client.send("CAP LS 302", "NICK x1", "USER o 0 * :O", "CAP REQ :sasl")
    client.send("AUTHENTICATE PLAIN", f"AUTHENTICATE {sasl('admin', 'owner', 'secret')}")
    server.clock.advance(1)
    assert client.commands()[-1] == "904"
    client.send("AUTHENTICATE PLAIN", f"AUTHENTICATE {sasl('Owner', 'owner', 'secret')}")
    server.clock.advance(1)
    assert client.commands()[-2:] == ["900", "903"]


def test_the_shared_renderings_are_bounded_in_bytes_too() -> None:
    """The cache of channel broadcasts holds a few MB at most, whatever --max-line-bytes
    allows: a thousand lines of 100 KB were kept (200 MB) until the thousand-and-first."""
    view = IrcFormat(Clock())
    view.channel = "#lobby"
    for n in range(200):
        view(Said("carol", f"{n} " + "x" * 100_000))
    assert ircformat._shared.size <= ircformat.MAX_SHARED_BYTES
    assert 0 < len(ircformat._shared) < 200
    assert view(Said("carol", "hi")) is view(Said("carol", "hi"))


def test_identify_once_in_the_chat_says_what_it_can_and_cannot_do() -> None:
    """IDENTIFY from a client already chatting: a registered one is told it is logged in,
    a guest is not told so (it is not), but how to use its registered nick instead."""
    server, _ = registered_server()
    guest = server.irc_user("guest")
    owner = IrcClient(server.irc)
    owner.send("PASS secret")
    owner.register("owner")
    server.clock.advance(0)
    guest.lines()
    owner.lines()
    guest.send("PRIVMSG NickServ :IDENTIFY owner secret")
    owner.send("PRIVMSG NickServ :IDENTIFY secret")
    (told,) = guest.lines()
    assert "logged in" not in told
    assert "reconnect" in told
    assert owner.lines() == [
        ":NickServ!NickServ@services NOTICE owner :You are logged in as owner already."
    ]


def test_a_join_sent_while_the_password_is_checked_is_made_once_in() -> None:
    """A client that autojoins after the welcome (irssi, WeeChat) while its server password
    is still being checked ends up in that channel, not silently in the default one."""
    server, accounts = registered_server()
    accounts.hold = True
    client = IrcClient(server.irc)
    client.lines()
    client.send("PASS secret", "NICK owner", "USER o 0 * :O", "JOIN #tea,#x", "JOIN &bad")
    assert client.commands()[-2:] == ["405", "403"]
    accounts.answer()
    server.clock.advance(0)
    assert client.commands() == ["JOIN", "353", "366", "PART", "JOIN", "353", "366"]
    assert server.hub.room_of(server.hub.member_named("owner")) == "#tea"  # type: ignore[arg-type]


def test_a_wrong_password_is_logged_with_the_address_that_tried_it() -> None:
    """As for a line user, a wrong PASS, SASL or IDENTIFY password is logged with the
    client's address, so an operator sees who is guessing (and fail2ban can)."""
    server, _ = registered_server()
    client = IrcClient(server.irc)
    client.lines()
    with capturedLogs() as events:
        client.send("PASS wrong", "NICK owner", "USER o 0 * :O")
        server.clock.advance(1)
        client.send("NICKSERV IDENTIFY again")
        server.clock.advance(1)
    texts = [formatEvent(event) for event in events]
    peer = f"{client.transport.getPeer().host}:{client.transport.getPeer().port}"
    assert texts.count(f"{peer}: wrong password for owner") == 2


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (":", []),
        (": PING x", [":chatd PONG chatd :x"]),
        ("@a=b\\:c\\s;d :x!y@z PING y", [":chatd PONG chatd :y"]),
        ("PING " + " ".join(map(str, range(20))), [":chatd PONG chatd :0"]),
        ("PING :" + "t" * 490, [":chatd PONG chatd :" + "t" * 490]),
        ("JOIN 0", []),
        ("ISON " + " ".join(f"n{n}" for n in range(90)) + " bob", [":chatd 303 alice :"]),
        ("ISON bob nobody", [":chatd 303 alice :bob"]),
        ("USERHOST bob x y", [":chatd 302 alice :bob=+bob@chatd"]),
        ("MODE alice +i", []),
        ("MODE #lobby b", [":chatd 368 alice #lobby :End of channel ban list"]),
        ("PRIVMSG " + ",".join("abcdefgh") + " :amplify?", ["407"]),
        ("CAP END", []),
        ("AUTHENTICATE PLAIN", [":chatd 907 alice :You have already authenticated"]),
    ],
)
def test_odd_lines_get_a_defined_answer(server: Server, sent: str, answer: list[str]) -> None:
    """Empty prefixes, tags with escapes, 15+ parameters, a PING token as long as a line
    holds, JOIN 0, ISON past its 32 nicks, a PRIVMSG to many targets: one defined answer
    each (a numeric's code stands for its line), never more lines than a line sent."""
    alice = server.irc_user("alice")
    server.irc_user("bob")
    alice.lines()
    alice.send(sent)
    lines = alice.lines()
    assert len(lines) == len(answer)
    for line, want in zip(lines, answer, strict=True):
        assert (command_of(line) if len(want) == 3 else line) == want
