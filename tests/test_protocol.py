"""Tests for chatd.session, through the line front end, with StringTransport and Clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.address import IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatd import moderation
from chatd.admission import ConnectionLimits
from chatd.flood import FloodLimits
from chatd.fronts import lineformat
from chatd.fronts.line import LineConnection, LineFactory
from chatd.hub import Hub
from chatd.interfaces import IConnection, IMember
from chatd.model import Account
from chatd.session import (
    CLOSE_GRACE_SECONDS,
    MAX_BYTES_DURING_CHECK,
    MAX_LINES_DURING_CHECK,
    ChatConfig,
    ChatSession,
    Sessions,
)

PROMPT_START = "*** Choose an alias ("


class NoDelayTransport(StringTransport):
    """A StringTransport that remembers whether TCP_NODELAY was asked for."""

    no_delay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class Client:
    """One in-memory connection to the factory under test."""

    def __init__(self, factory: LineFactory, peer: IAddress | None = None) -> None:
        self.transport = NoDelayTransport(peerAddress=peer)
        self.connection: LineConnection = factory.buildProtocol(self.transport.getPeer())
        self.connection.makeConnection(self.transport)
        self.session: ChatSession = self.connection.session
        self.clock = factory.sessions.clock
        self.closed = False

    def type(self, data: bytes | str) -> None:
        """Deliver bytes to the server as if the client had sent them."""
        self.connection.dataReceived(data.encode() if isinstance(data, str) else data)

    def lines(self) -> list[str]:
        """Every complete line the server has sent since the last call.

        The reactor turn ends first, so what the hub batched is delivered.
        """
        self.clock.advance(0)
        raw = self.transport.value()
        self.transport.clear()
        assert raw.endswith(b"\r\n") or raw == b""
        return raw.decode("utf-8").split("\r\n")[:-1]

    def drop(self, reason: type[Exception] = ConnectionDone) -> None:
        """Close the connection from the client side (or by network failure)."""
        self.closed = True
        self.connection.connectionLost(Failure(reason()))

    def finish_close(self) -> None:
        """Complete a close the server started (StringTransport does not call back)."""
        assert self.transport.disconnecting
        self.drop()


class Server:
    """A factory with its own hub and clock, and helpers to connect clients."""

    def __init__(self, history_replay: int = 20, **limits: Any) -> None:
        self.clock = Clock()
        self.hub = self.make_hub(history_replay)
        # Flood control and connection limits off unless a test is about them:
        # tests type faster than any human, and all their clients share an address.
        limits.setdefault("flood", FloodLimits(rate=0))
        limits.setdefault("connections", ConnectionLimits(0, 0, 0))
        self.sessions = Sessions(self.hub, ChatConfig(**limits))
        self.factory = LineFactory(self.sessions)

    def make_hub(self, history_replay: int) -> Hub:
        return Hub(self.clock, history_replay=history_replay)

    def connect(self) -> Client:
        return Client(self.factory)

    def join(self, *aliases: str) -> list[Client]:
        clients = self.join_keeping_lines(*aliases)
        for client in clients:
            client.lines()
        return clients

    def join_keeping_lines(self, *aliases: str) -> list[Client]:
        """Connect and choose aliases; what the server sent after the prompt is kept."""
        clients = []
        for alias in aliases:
            client = self.connect()
            client.transport.clear()
            client.type(f"{alias}\r\n")
            clients.append(client)
        return clients


@pytest.fixture
def server() -> Server:
    return Server()


# Alias negotiation.


def test_greets_and_prompts_without_waiting(server: Server) -> None:
    """On connect the server greets and asks for an alias before any input."""
    client = server.connect()
    lines = client.lines()
    assert lines[0].startswith("*** Welcome to chatd")
    assert lines[1].startswith(PROMPT_START)


def test_sets_tcp_nodelay(server: Server) -> None:
    """Every connection asks for TCP_NODELAY so lines are not held back by Nagle."""
    assert server.connect().transport.no_delay


def test_welcome_in_a_big_room_counts_the_rest() -> None:
    """A newcomer to a big room sees some names and how many more there are."""
    server = Server()
    server.join(*(f"user{n:03}" for n in range(41)))
    late = server.connect()
    late.lines()
    late.type("zed\n")
    welcome = late.lines()[0]
    assert welcome.startswith("*** Welcome, zed! You are in #lobby (42): user000, user001, ")
    assert welcome.endswith(", user029 and 12 more (/who lists everyone)")


def test_accepted_alias_gets_welcome_and_others_a_join_notice(server: Server) -> None:
    """Acceptance welcomes the user with who is online and tells everyone else."""
    (alice,) = server.join("alice")
    bob = server.connect()
    bob.lines()
    bob.type("bob\n")
    assert bob.lines() == [
        "*** Welcome, bob! You are in #lobby (2): alice, bob",
        "*** Type /help for commands.",
    ]
    assert alice.lines() == ["*** bob has joined #lobby (2 here)"]


@pytest.mark.parametrize(
    ("alias", "error"),
    [
        ("", "!!! An alias cannot be empty."),
        ("bad alias", "!!! Invalid alias: use 1-24 characters"),
        ("x" * 25, "!!! An alias is at most 24 characters."),
        ("server", "!!! The alias server is reserved."),
        ("ALICE", "!!! The alias ALICE is taken."),
        ("\x1b[2Jevil", "!!! Invalid alias"),
        ("/who", "!!! Choose an alias first (or /quit, /replay off, /format json)."),
    ],
)
def test_refused_alias_gets_reason_and_new_prompt(server: Server, alias: str, error: str) -> None:
    """A refused alias gets one line saying why, a new prompt, and the connection stays."""
    server.join("alice")
    client = server.connect()
    client.lines()
    client.type(alias + "\r\n")
    lines = client.lines()
    assert len(lines) == 2
    assert lines[0].startswith(error)
    assert lines[1].startswith(PROMPT_START)
    assert not client.transport.disconnecting
    client.type("carol\n")
    assert client.lines()[0].startswith("*** Welcome, carol!")


def test_alias_timeout_disconnects_with_a_reason() -> None:
    """A connection that gives no alias in time is told so and closed."""
    server = Server(alias_timeout_seconds=30)
    client = server.connect()
    client.lines()
    server.clock.advance(29.9)
    assert not client.transport.disconnecting
    server.clock.advance(0.2)
    assert client.lines() == ["!!! No alias chosen within 30 seconds; goodbye."]
    assert client.transport.disconnecting
    client.finish_close()
    assert server.sessions.live == set()


def test_alias_in_time_cancels_the_timeout() -> None:
    """Once an alias is accepted the handshake timer no longer applies."""
    server = Server(alias_timeout_seconds=30)
    (alice,) = server.join("alice")
    server.clock.advance(3600)
    assert not alice.transport.disconnecting
    assert server.clock.getDelayedCalls() == []


def test_closing_during_negotiation_cancels_the_timer(server: Server) -> None:
    """A client that leaves before choosing an alias leaves no timer behind."""
    client = server.connect()
    client.drop()
    assert server.clock.getDelayedCalls() == []


def test_quit_before_alias(server: Server) -> None:
    """/quit works before an alias is chosen."""
    client = server.connect()
    client.lines()
    client.type("/quit\n")
    assert client.lines() == ["*** Goodbye."]
    assert client.transport.disconnecting


# Chatting.


def test_line_relayed_with_alias_and_not_echoed(server: Server) -> None:
    """A chat line reaches others as '<alias> text' and is not echoed to its sender."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    alice.type("hello world\r\n")
    assert bob.lines() == carol.lines() == ["<alice> hello world"]
    assert alice.lines() == []


def test_accepts_lf_and_crlf(server: Server) -> None:
    """Lines may end in LF or CRLF; the CR is not part of the text."""
    alice, bob = server.join("alice", "bob")
    alice.type("one\ntwo\r\nthree\n")
    assert bob.lines() == ["<alice> one", "<alice> two", "<alice> three"]


def test_partial_lines_wait_for_their_end(server: Server) -> None:
    """A line split across reads is relayed once, whole, when its end arrives."""
    alice, bob = server.join("alice", "bob")
    alice.type("hel")
    assert bob.lines() == []
    alice.type("lo\r")
    alice.type("\n")
    assert bob.lines() == ["<alice> hello"]


def test_empty_lines_ignored(server: Server) -> None:
    """Empty and blank lines are not relayed."""
    alice, bob = server.join("alice", "bob")
    alice.type("\r\n\n   \n\t\n")
    assert bob.lines() == []
    assert alice.lines() == []


def test_double_slash_sends_literal_slash(server: Server) -> None:
    """'//text' is relayed as '/text'."""
    alice, bob = server.join("alice", "bob")
    alice.type("//etc/passwd is a path\n")
    assert bob.lines() == ["<alice> /etc/passwd is a path"]


def test_invalid_utf8_is_replaced(server: Server) -> None:
    """Invalid UTF-8 is relayed as U+FFFD, never as raw bytes."""
    alice, bob = server.join("alice", "bob")
    alice.type(b"caf\xc3\xa9 \xfe\xc3( ok\n")
    assert bob.lines() == ["<alice> café \ufffd\ufffd( ok"]


def test_terminal_escapes_are_stripped(server: Server) -> None:
    """Escape sequences and controls never reach another user's terminal."""
    alice, bob = server.join("alice", "bob")
    alice.type(b"\x1b[2J\x1b[H\x1b]0;owned\x07\xc2\x9b31mhi\x07\x08 there\x1b[0m\n")
    assert bob.lines() == ["<alice> hi there"]


def test_telnet_negotiation_is_consumed(server: Server) -> None:
    """Telnet IAC sequences, even in the alias line, are not relayed."""
    client = server.connect()
    (bob,) = server.join("bob")
    client.type(b"\xff\xfd\x03\xff\xfb\x18al\xff\xfa\x18\x01\xff\xf0ice\r\n")
    assert bob.lines() == ["*** alice has joined #lobby (2 here)"]
    client.type(b"h\xff\xf1i\n")
    assert bob.lines() == ["<alice> hi"]


# Commands.


def test_help_lists_every_command(server: Server) -> None:
    """/help names each command, to the sender only."""
    alice, bob = server.join("alice", "bob")
    alice.type("/help\n")
    text = "\n".join(alice.lines())
    for command in (
        "/help",
        "/who [*]",
        "/join #ROOM",
        "/rooms",
        "/topic [TEXT]",
        "/msg ALIAS TEXT",
        "/me ACTION",
        "/nick NEW",
        "/quit",
    ):
        assert command in text
    assert bob.lines() == []


def test_who_lists_the_room_or_everyone(server: Server) -> None:
    """/who lists the room, /who * everyone online, sorted case-insensitively."""
    carol, alice, bob = server.join("carol", "alice", "Bob")
    bob.type("/join #elsewhere\n")
    alice.type("/who\n/who *\n")
    assert alice.lines()[-2:] == [
        "*** In #lobby (2): alice, carol",
        "*** Online (3): alice, Bob, carol",
    ]
    carol.lines()
    alice.type("/who everyone\n")
    assert alice.lines() == ["!!! Usage: /who [*]"]
    assert carol.lines() == []


def test_msg_is_private(server: Server) -> None:
    """/msg reaches only its recipient and is confirmed to the sender."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    alice.type("/msg Bob meet at 5\n")
    assert bob.lines() == ["*alice* meet at 5"]
    assert alice.lines() == ["-> *bob* meet at 5"]
    assert carol.lines() == []


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/msg nobody hi", "!!! No such user: nobody"),
        ("/msg bob", "!!! Usage: /msg ALIAS TEXT"),
        ("/msg", "!!! Usage: /msg ALIAS TEXT"),
        ("/me", "!!! Usage: /me ACTION"),
        ("/nick", "!!! Usage: /nick NEW"),
        ("/nick a b", "!!! Usage: /nick NEW"),
        ("/nick bob", "!!! The alias bob is taken."),
        ("/nick admin", "!!! The alias admin is reserved."),
        ("/frobnicate now", "!!! Unknown command: /frobnicate (type /help for the list)."),
        ("/\x1b[2J", "!!! Unknown command: / (type /help for the list)."),
    ],
)
def test_command_errors_go_to_sender_only(server: Server, line: str, error: str) -> None:
    """A refused or unknown command answers its sender alone and is never broadcast."""
    alice, bob = server.join("alice", "bob")
    alice.type(line + "\n")
    assert alice.lines() == [error]
    assert bob.lines() == []


def test_me_is_an_action(server: Server) -> None:
    """/me is shown to others as '* alias action'."""
    alice, bob = server.join("alice", "bob")
    alice.type("/me waves\n")
    assert bob.lines() == ["* alice waves"]
    assert alice.lines() == []


def test_commands_are_case_insensitive(server: Server) -> None:
    """/ME works as /me."""
    alice, bob = server.join("alice", "bob")
    alice.type("/ME waves\n")
    assert bob.lines() == ["* alice waves"]


def test_nick_renames_and_frees_the_old_alias(server: Server) -> None:
    """/nick tells everyone old -> new, and the old alias can then be taken."""
    alice, bob = server.join("alice", "bob")
    alice.type("/nick ally\n")
    assert alice.lines() == bob.lines() == ["*** alice is now known as ally"]
    alice.type("hi\n")
    assert bob.lines() == ["<ally> hi"]
    server.join("alice")
    assert bob.lines() == ["*** alice has joined #lobby (3 here)"]


def test_quit_with_reason(server: Server) -> None:
    """/quit says goodbye, closes, and others are told once with the reason."""
    alice, bob = server.join("alice", "bob")
    alice.type("/quit see you\nthis line is never relayed\n")
    assert alice.lines() == ["*** Goodbye."]
    assert alice.transport.disconnecting
    alice.finish_close()
    assert bob.lines() == ["*** alice has left (Quit: see you)"]
    assert server.hub.online() == ("bob",)


def test_rooms_join_topic_and_list(server: Server) -> None:
    """/join moves between rooms, /topic sets what newcomers see, /rooms lists them."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    bob.type("/join #rust\n/topic all about crabs\n")
    assert bob.lines() == [
        "*** You are now in #rust (1): bob",
        "*** bob set the topic: all about crabs",
    ]
    assert alice.lines() == carol.lines() == ["*** bob has gone to #rust"]
    alice.type("/join #Rust\n")
    assert alice.lines() == [
        "*** You are now in #rust (2): alice, bob",
        "*** Topic: all about crabs",
    ]
    assert bob.lines() == ["*** alice has joined #rust from #lobby (2 here)"]
    alice.type("only crabs hear this\n")
    assert bob.lines() == ["<alice> only crabs hear this"]
    assert carol.lines() == ["*** alice has gone to #rust"]
    carol.type("/rooms\n")
    assert carol.lines() == [
        "*** Rooms (2):",
        "***   #lobby (1)",
        "***   #rust (2): all about crabs",
    ]
    alice.type("/topic\n")
    assert alice.lines() == ["*** Topic of #rust: all about crabs"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/join", "!!! Usage: /join #ROOM"),
        ("/join rust", "!!! Invalid room name: use '#' and then 1-24 characters"),
        ("/join #lobby", "!!! You are already in #lobby."),
        # Commands are read from the cleaned line: controls alone are no topic.
        ("/topic \x1b[2J", "*** #lobby has no topic."),
    ],
)
def test_room_command_errors(server: Server, line: str, error: str) -> None:
    """Refused room commands answer the sender alone."""
    alice, bob = server.join("alice", "bob")
    alice.type(line + "\n")
    assert alice.lines()[0].startswith(error)
    assert bob.lines() == []


# Departures.


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(ConnectionDone, "Connection closed"), (ConnectionLost, "Connection lost")],
)
def test_departure_announced_once_with_reason(
    server: Server, failure: type[Exception], reason: str
) -> None:
    """A closed or broken connection is announced to the others exactly once."""
    alice, bob = server.join("alice", "bob")
    alice.drop(failure)
    alice.connection.connectionLost(Failure(failure()))
    assert bob.lines() == [f"*** alice has left ({reason})"]
    assert server.sessions.live == {bob.session}


def test_unjoined_departure_is_silent(server: Server) -> None:
    """Someone who never chose an alias leaves without a notice."""
    (alice,) = server.join("alice")
    server.connect().drop()
    assert alice.lines() == []


# Bad input and limits.


def test_overlong_line_dropped_and_stream_resynchronises() -> None:
    """A line over the limit gets an error; the lines around it arrive intact."""
    server = Server(max_line_bytes=10)
    alice, bob = server.join("alice", "bob")
    alice.type("before\n" + "x" * 11 + "\nafter\n")
    assert alice.lines() == ["!!! Line too long (over 10 bytes); dropped."]
    assert bob.lines() == ["<alice> before", "<alice> after"]
    assert not alice.transport.disconnecting


def test_line_at_the_limit_is_accepted_with_either_ending() -> None:
    """A line of exactly the limit is relayed, whether it ends in LF or CRLF."""
    server = Server(max_line_bytes=10)
    alice, bob = server.join("alice", "bob")
    alice.type("y" * 10 + "\r\n" + "z" * 10 + "\n")
    assert bob.lines() == ["<alice> " + "y" * 10, "<alice> " + "z" * 10]
    assert alice.lines() == []


def test_unterminated_flood_is_dropped_until_the_next_line_end() -> None:
    """An endless line is discarded as it arrives, with one error, and memory stays flat."""
    server = Server(max_line_bytes=100)
    alice, bob = server.join("alice", "bob")
    for _ in range(50):
        alice.type("z" * 1000)
    assert alice.lines() == ["!!! Line too long (over 100 bytes); dropped."]
    assert len(alice.connection._buffer) <= 102
    alice.type("zzz\nback\n")
    assert bob.lines() == ["<alice> back"]
    assert not alice.transport.disconnecting


def test_overlong_alias_line_gets_error(server: Server) -> None:
    """The limit applies while negotiating too, and the prompt stays usable."""
    server = Server(max_line_bytes=10)
    client = server.connect()
    client.lines()
    client.type("a" * 50 + "\nalice\n")
    lines = client.lines()
    assert lines[0] == "!!! Line too long (over 10 bytes); dropped."
    assert lines[1].startswith("*** Welcome, alice!")


def test_slow_reader_is_cut_off_and_others_keep_receiving() -> None:
    """A client whose output backs up past the limit is disconnected; others are unaffected."""
    server = Server(sendq_bytes=1000)
    alice, slow, carol = server.join("alice", "slow", "carol")
    slow.transport.producer.pauseProducing()
    for n in range(20):
        alice.type(f"message number {n:03} with some padding to fill the queue\n")
        server.clock.advance(0)
    assert slow.transport.disconnected  # aborted, not a graceful close
    assert server.hub.online() == ("alice", "carol")
    carol_lines = carol.lines()
    assert "*** slow has left (Send queue exceeded)" in carol_lines
    assert [line for line in carol_lines if line.startswith("<alice>")] == [
        f"<alice> message number {n:03} with some padding to fill the queue" for n in range(20)
    ]
    slow.drop(ConnectionLost)
    assert carol.lines() == []


def test_paused_reader_gets_everything_in_order_on_resume() -> None:
    """Output held while the transport is full is delivered whole and in order."""
    server = Server(sendq_bytes=10_000)
    alice, bob = server.join("alice", "bob")
    bob.transport.producer.pauseProducing()
    alice.type("one\ntwo\n")
    assert bob.lines() == []
    bob.transport.producer.resumeProducing()
    alice.type("three\n")
    assert bob.lines() == ["<alice> one", "<alice> two", "<alice> three"]


# Shutdown.


def test_shutdown_tells_everyone_and_waits_for_them() -> None:
    """Shutting down notifies members and negotiating clients, then fires when all are gone."""
    server = Server()
    alice, bob = server.join("alice", "bob")
    pending = server.connect()
    pending.lines()
    done = server.sessions.shut_down("Server shutting down.")
    results: list[None] = []
    done.addCallback(results.append)
    assert alice.lines() == bob.lines() == pending.lines() == ["*** Server shutting down."]
    for client in (alice, bob, pending):
        assert client.transport.disconnecting
        client.finish_close()
    assert results == [None]
    assert alice.lines() == bob.lines() == []  # no leave notices on the way down


def test_a_session_opened_during_a_shutdown_is_told_and_closed_at_once() -> None:
    """A session a front end opens while the server shuts down (an SSH shell or a WebSocket
    on a connection accepted before) is told why and closed, not greeted; the shutdown
    then completes without waiting out its grace period."""
    server = Server(shutdown_grace_seconds=3)
    (alice,) = server.join("alice")
    done = server.sessions.shut_down("Server shutting down.")
    results: list[None] = []
    done.addCallback(results.append)
    late = server.connect()
    assert late.lines() == ["*** Server shutting down."]
    assert late.transport.disconnecting
    alice.finish_close()
    late.finish_close()
    assert results == [None]
    assert not server.clock.getDelayedCalls()


def test_shutdown_aborts_stragglers_after_grace() -> None:
    """Connections that do not close within the grace period are aborted."""
    server = Server(shutdown_grace_seconds=2)
    (alice,) = server.join("alice")
    server.sessions.shut_down("bye")
    server.clock.advance(2)
    assert alice.transport.disconnected


# Presence: /whois, /away, /ignore.


def test_whois_reports_room_times_and_away(server: Server) -> None:
    """/whois tells where someone is, how long online, how long idle, and their away text."""
    alice, bob = server.join("alice", "bob")
    server.clock.advance(3725)
    bob.type("/join #rust\n")
    server.clock.advance(65)
    bob.type("/away lunch\n")
    assert bob.lines()[-1] == "*** You are marked as away: lunch"
    alice.lines()
    alice.type("/whois BOB\n")
    assert alice.lines() == [
        "*** bob is in #rust, online 1h03m, idle 1m05s, not registered",
        "*** bob is away: lunch",
    ]
    alice.type("/whois nobody\n/whois\n")
    assert alice.lines() == ["!!! No such user: nobody", "!!! Usage: /whois ALIAS"]


def test_message_to_away_user_gets_the_away_text(server: Server) -> None:
    """A private message to someone away is delivered and answered with their away text."""
    alice, bob = server.join("alice", "bob")
    bob.type("/away in a meeting\n")
    bob.lines()
    alice.type("/msg bob ping\n")
    assert bob.lines() == ["*alice* ping"]
    assert alice.lines() == ["-> *bob* ping", "*** bob is away: in a meeting"]
    bob.type("/away\n")
    assert bob.lines() == ["*** You are no longer marked as away."]
    alice.type("/msg bob ping\n")
    assert alice.lines() == ["-> *bob* ping"]


def test_ignore_hides_lines_actions_and_private_messages(server: Server) -> None:
    """An ignored user's lines, actions and private messages stop reaching the ignorer only."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    alice.type("/ignore Bob\n")
    assert alice.lines() == ["*** Ignoring bob; /unignore bob undoes it."]
    bob.type("spam\n/me spams\n/msg alice psst\n")
    carol.type("hello\n")
    assert alice.lines() == ["<carol> hello"]
    assert carol.lines() == ["<bob> spam", "* bob spams"]
    assert bob.lines() == ["-> *alice* psst", "<carol> hello"]  # bob is not told


def test_ignore_follows_a_rename_and_can_be_undone(server: Server) -> None:
    """An ignore sticks to the person through /nick, and /unignore lifts it."""
    alice, bob = server.join("alice", "bob")
    alice.type("/ignore bob\n")
    bob.type("/nick bobby\nstill me\n")
    assert alice.lines()[-1] == "*** bob is now known as bobby"
    alice.type("/unignore bobby\n")
    bob.type("heard now\n")
    assert alice.lines() == ["*** No longer ignoring bobby.", "<bobby> heard now"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/ignore", "!!! Usage: /ignore ALIAS"),
        ("/ignore nobody", "!!! No such user: nobody"),
        ("/ignore alice", "!!! You cannot ignore yourself."),
        ("/unignore bob", "!!! You are not ignoring bob."),
    ],
)
def test_ignore_errors(server: Server, line: str, error: str) -> None:
    """Refused ignores answer the sender alone."""
    alice, bob = server.join("alice", "bob")
    alice.type(line + "\n")
    assert alice.lines() == [error]
    assert bob.lines() == []


# Moderation.


def test_operator_commands_refused_to_others(server: Server) -> None:
    """Non-operators get a clear refusal and nothing happens."""
    alice, bob = server.join("alice", "bob")
    alice.type("/kick bob\n/mute bob\n/unmute bob\n")
    assert alice.lines() == ["!!! Not permitted: operators only."] * 3
    assert bob.lines() == []
    assert server.hub.online() == ("alice", "bob")


def test_kick_disconnects_with_reason(server: Server) -> None:
    """/kick tells the target and their room who did it and why, and closes the target."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    moderation.make_operator(server.hub, alice.session, "root")
    assert alice.lines() == ["*** You are now an operator (root)."]
    alice.type("/kick bob spamming\n")
    assert bob.lines() == ["*** You were kicked by alice: spamming"]
    assert bob.transport.disconnecting
    assert carol.lines() == ["*** bob has left (Kicked by alice: spamming)"]
    assert alice.lines() == ["*** bob has left (Kicked by alice: spamming)", "*** Kicked bob."]
    bob.finish_close()
    assert carol.lines() == []
    alice.type("/kick nobody\n/kick\n")
    assert alice.lines() == ["!!! No such user: nobody", "!!! Usage: /kick ALIAS [REASON]"]


def test_mute_silences_until_it_expires(server: Server) -> None:
    """A muted user is told so and nobody sees their lines until the mute ends."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.lines()
    alice.type("/mute Bob 10m\n")
    assert alice.lines() == ["*** Muted bob for 10m00s."]
    assert bob.lines() == ["*** You have been muted for 10m00s: nobody sees your lines."]
    bob.type("can you hear me\n/me shouts\n/msg carol psst\nstill?\n")
    assert carol.lines() == []
    assert bob.lines() == ["!!! You are muted: nobody sees your lines."] * 4
    server.clock.advance(600)
    bob.type("back\n")
    assert carol.lines() == ["<bob> back"]


def test_unmute(server: Server) -> None:
    """/unmute lets a muted user be heard again at once."""
    alice, bob = server.join("alice", "bob")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/mute bob\n")
    alice.lines()
    alice.type("/unmute bob\n/unmute bob\n/mute bob forever\n")
    assert alice.lines() == [
        "*** Unmuted bob.",
        "!!! bob is not muted.",
        "!!! Not a duration: forever (use e.g. 90s, 10m, 2h, 1d).",
    ]
    bob.type("hi\n")
    assert alice.lines() == ["<bob> hi"]


# History.


def test_history_is_replayed_on_arrival_marked_and_timed(server: Server) -> None:
    """Someone arriving in a room sees its recent lines, marked as history with their time."""
    alice, _ = server.join("alice", "bob")
    server.clock.advance(1_764_000_000)  # 2025-11-24 16:00:00 UTC
    alice.type("first\n/me waves\n/msg bob private lines are not history\n")
    server.clock.advance(61)
    (carol,) = server.join_keeping_lines("carol")
    assert carol.lines() == [
        "*** Welcome, carol! You are in #lobby (3): alice, bob, carol",
        "*** Type /help for commands.",
        "*** History of #lobby (2 lines):",
        "[2025-11-24 16:00:00Z] <alice> first",
        "[2025-11-24 16:00:00Z] * alice waves",
        "*** End of history.",
    ]


def test_replay_is_capped_and_history_command_shows_more() -> None:
    """Arrival shows the last --history-replay lines; /history N shows up to N."""
    server = Server(history_replay=2)
    alice, _ = server.join("alice", "bob")
    for n in range(5):
        alice.type(f"line {n}\n")
    (carol,) = server.join_keeping_lines("carol")
    assert [line[23:] for line in carol.lines() if line.startswith("[")] == [
        "<alice> line 3",
        "<alice> line 4",
    ]
    carol.type("/history 4\n")
    assert [line[23:] for line in carol.lines() if line.startswith("[")] == [
        "<alice> line 1",
        "<alice> line 2",
        "<alice> line 3",
        "<alice> line 4",
    ]
    carol.type("/history zero\n/join #empty\n")
    assert carol.lines()[0] == "!!! Usage: /history [N]"
    carol.type("/history\n")
    assert carol.lines() == ["*** No history in #empty."]


def test_history_off_records_and_replays_nothing(server: Server) -> None:
    """With --history-keep 0 nothing is kept, replayed or written, and /history says so."""
    server.hub.keep_history = False
    alice, _ = server.join("alice", "bob")
    alice.type("not kept\n")
    (carol,) = server.join_keeping_lines("carol")
    assert not any("History" in line for line in carol.lines())
    carol.type("/history\n")
    assert carol.lines() == ["!!! This server keeps no history."]


def test_history_past_the_age_limit_is_not_replayed(server: Server) -> None:
    """With --history-max-age, lines older than the limit are neither replayed nor shown."""
    server.hub.history_max_age_seconds = 3600
    alice, _ = server.join("alice", "bob")
    alice.type("old\n")
    server.clock.advance(3000)
    alice.type("recent\n")
    server.clock.advance(1000)
    (carol,) = server.join_keeping_lines("carol")
    assert [line[23:] for line in carol.lines() if line.startswith("[")] == ["<alice> recent"]
    carol.type("/history 10\n")
    assert [line[23:] for line in carol.lines() if line.startswith("[")] == ["<alice> recent"]


def test_replay_off_before_alias_and_after(server: Server) -> None:
    """A bot can turn replay off before choosing an alias, or later with /replay off."""
    (alice,) = server.join("alice")
    alice.type("something to replay\n")
    bot = server.connect()
    bot.lines()
    bot.type("/replay off\nbot\n")
    lines = bot.lines()
    assert lines[0] == "*** History replay is off."
    assert not any("History of" in line for line in lines)
    alice.lines()
    alice.type("/replay off\n/join #other\n/join #lobby\n")
    assert alice.lines() == [
        "*** History replay on entering a room is off.",
        "*** You are now in #other (1): alice",
        "*** You are now in #lobby (2): alice, bot",
    ]


# Flood control.


def test_a_paste_arrives_whole_only_slower() -> None:
    """Past the burst, lines are delayed (not dropped) and reach the room in order."""
    server = Server(flood=FloodLimits(burst=3, rate=2, queue_cap=50))
    alice, bob = server.join("alice", "bob")
    server.clock.advance(10)  # the alias took a token; the bucket is full again
    alice.type("".join(f"line {n}\n" for n in range(8)))
    server.clock.advance(0)
    assert bob.lines() == [f"<alice> line {n}" for n in range(3)]
    server.clock.pump([0.5] * 5)
    assert bob.lines() == [f"<alice> line {n}" for n in range(3, 8)]


def test_commands_count_and_a_flooder_is_warned_then_cut_off() -> None:
    """Commands take tokens too; past the queue cap a warning, past twice it a disconnect."""
    server = Server(flood=FloodLimits(burst=1, rate=1, queue_cap=3))
    alice, bob = server.join("alice", "bob")
    alice.type("/who\n" * 5)
    assert alice.lines()[-1] == (
        "!!! You are sending too fast: 4 lines waiting. Slow down or you will be disconnected."
    )
    alice.type("/who\n" * 3)
    assert alice.lines() == ["!!! Excess flood; goodbye."]
    assert alice.transport.disconnecting
    alice.connection.connectionLost(Failure(ConnectionDone()))
    server.clock.advance(0)
    assert bob.lines() == ["*** alice has left (Excess flood)"]
    assert not server.clock.getDelayedCalls()


def test_flood_control_applies_before_the_alias_too() -> None:
    """Lines at the alias prompt are limited like any others."""
    server = Server(flood=FloodLimits(burst=1, rate=1, queue_cap=2))
    client = server.connect()
    client.lines()
    client.type("x y\n" * 6)
    assert client.lines()[-1] == "!!! Excess flood; goodbye."


# Connection limits and the idle timeout.


def test_idle_clients_are_disconnected_by_the_sweep() -> None:
    """With --idle-timeout, a chatting client silent that long is told so and closed."""
    server = Server(idle_timeout_seconds=60)
    server.sessions.start()
    alice, bob = server.join("alice", "bob")
    server.clock.advance(45)
    bob.type("\n")  # any line, an empty one too, keeps a client alive
    server.clock.advance(30)
    assert alice.lines() == ["!!! Idle for more than 60 seconds; goodbye."]
    assert alice.transport.disconnecting
    assert not bob.transport.disconnecting
    alice.finish_close()
    assert bob.lines() == ["*** alice has left (Idle timeout)"]
    server.sessions.stop()
    assert not server.clock.getDelayedCalls()


# Regression tests of the security review (issue 12).


def test_shutdown_completes_even_if_a_session_never_reports_its_close() -> None:
    """A session whose transport is gone (an SSH channel that vanished) cannot hang shutdown."""
    server = Server(shutdown_grace_seconds=2)
    alice, _bob = server.join("alice", "bob")
    done = server.sessions.shut_down("bye")
    results: list[None] = []
    done.addCallback(results.append)
    alice.finish_close()
    server.clock.advance(2)  # bob's transport is aborted but never calls connectionLost
    assert results == [None]
    assert server.hub.member_named("bob") is None
    assert not server.sessions.live


@pytest.mark.parametrize(
    "prefix",
    ["\x1b[A", "\x1b[D\x1b[C", "\x0c", "\x1bOA", " ", "\t", "\u200e", "\x1b]0;t\x07"],
    ids=["up", "left-right", "ctrl-l", "ss3-up", "space", "tab", "lrm", "osc-title"],
)
def test_a_command_after_an_escape_sequence_is_not_relayed_as_chat(
    server: Server, prefix: str
) -> None:
    """A command typed after an arrow key, Ctrl-L or a space is run, never shown to the room."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    alice.type(f"{prefix}/msg bob secret\n")
    assert carol.lines() == []
    assert bob.lines() == ["*alice* secret"]
    alice.type(f"{prefix}/nick alicia\n")
    assert carol.lines() == ["*** alice is now known as alicia"]
    carol.type("/history\n")
    assert not any("secret" in line for line in carol.lines())


def test_a_muted_user_cannot_reach_the_room_another_way(server: Server) -> None:
    """/topic, /away, /nick and /quit REASON are refused or silenced for a muted user."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/mute bob\n")
    bob.lines(), carol.lines()
    bob.type("/topic buy my stuff\n/away buy my stuff\n/nick buy-my-stuff\n")
    assert carol.lines() == []
    assert bob.lines() == [
        "!!! You are muted: nobody sees your lines.",
        "!!! You are muted: nobody sees your lines.",
        "!!! You are muted: you cannot change your alias now.",
    ]
    carol.type("/topic\n/whois bob\n")
    lines = carol.lines()
    assert lines[0] == "*** #lobby has no topic."
    assert not any("buy" in line for line in lines)
    bob.type("/quit buy my stuff\n")
    assert carol.lines() == ["*** bob has left (Quit)"]


def test_a_muted_user_who_comes_back_under_another_alias_is_still_muted(server: Server) -> None:
    """A mute holds on the address it was given at, so a new alias does not lift it."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/mute bob 1h\n")
    bob.type("/quit\n")
    bob.finish_close()
    (robert,) = server.join("robert")  # from the same address (StringTransport's peer)
    carol.lines()
    robert.type("hello again\n")
    assert carol.lines() == []
    assert robert.lines() == ["!!! You are muted: nobody sees your lines."]
    alice.type("/unmute bob\n")
    robert.type("hello again\n")
    assert carol.lines() == ["<robert> hello again"]


def test_nick_to_a_banned_alias_is_refused(server: Server) -> None:
    """/nick cannot take an alias that is banned: the ban would be bypassed."""
    alice, bob = server.join("alice", "bob")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/ban mallory spam\n")
    alice.lines()
    bob.type("/nick Mallory\n")
    assert bob.lines() == ["!!! The alias Mallory is banned."]
    assert server.hub.member_named("bob") is bob.session


def test_a_verified_login_of_a_banned_alias_is_refused(server: Server) -> None:
    """A front end that proved the alias (SSH key or password) still cannot bypass its ban."""
    (alice,) = server.join("alice")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/ban mallory spam\n")
    mallory = server.connect()
    mallory.lines()
    mallory.session.log_in_verified("mallory", Account("mallory", "hash", 0.0, ()))
    assert mallory.lines() == ["!!! You are banned from this server: spam"]
    assert mallory.transport.disconnecting
    assert server.hub.member_named("mallory") is None


def test_an_ipv4_mapped_address_is_banned_like_the_ipv4_address() -> None:
    """A dual-stack listener's ::ffff:a.b.c.d peer is the IPv4 address for bans and the log."""
    server = Server()
    (alice,) = server.join("alice")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/ban 192.0.2.7 spam\n")
    transport = StringTransport(peerAddress=IPv6Address("TCP", "::ffff:192.0.2.7", 40000))
    mallory = server.factory.buildProtocol(transport.getPeer())
    mallory.makeConnection(transport)
    assert transport.value() == b"!!! You are banned from this server: spam\r\n"
    assert mallory.session.host == "192.0.2.7"
    assert mallory.session.peer == "192.0.2.7:40000"


@implementer(IConnection)
class WholeLineConnection:
    """A front end that hands its session whole lines, as the WebSocket and SSH ones do."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.address = self.transport.getPeer()
        self.consumer = self.transport

    def close(self) -> None:
        self.transport.loseConnection()

    def abort(self) -> None:
        self.transport.abortConnection()

    def discard_pending_input(self) -> int:
        return 0


def whole_line_session(server: Server) -> tuple[ChatSession, StringTransport]:
    connection = WholeLineConnection()
    verifyObject(IConnection, connection)
    session = server.sessions.open(connection, lineformat.encode)
    return session, connection.transport


def test_a_session_is_a_member() -> None:
    """What the hub knows of a session is all there: it provides IMember."""
    session, _ = whole_line_session(Server())
    assert verifyObject(IMember, session)


def test_lines_held_during_a_password_check_are_bounded_in_number() -> None:
    """A web or SSH user who keeps sending during a password check is cut off, not buffered:
    past MAX_LINES_DURING_CHECK lines."""
    server = RegisteredServer()
    server.accounts.hold = True
    session, transport = whole_line_session(server)
    for line in [b"owner", b"wrong"] + [b"x"] * MAX_LINES_DURING_CHECK:
        session.line_received(line)
    assert not transport.disconnecting
    for line in [b"more"] * 100:
        session.line_received(line)
    assert transport.value().endswith(b"!!! Excess flood; goodbye.\r\n")
    assert transport.disconnecting


def test_lines_held_during_a_password_check_are_bounded_in_bytes() -> None:
    """Long lines during a password check count with their length: past
    MAX_BYTES_DURING_CHECK the sender is cut off, whichever front end it uses."""
    server = RegisteredServer()
    server.accounts.hold = True
    session, transport = whole_line_session(server)
    session.line_received(b"owner")
    session.line_received(b"wrong")
    for line in [b"x" * 100_000] * 200:
        session.line_received(line)
    assert transport.value().endswith(b"!!! Excess flood; goodbye.\r\n")
    assert transport.disconnecting
    assert session._dropped_lines == 1


def test_a_long_paste_to_a_whole_line_session_that_is_not_paused_is_handled_whole(
    server: Server,
) -> None:
    """Lines are only held while paused: a big paste with flood control off all arrives."""
    (bob,) = server.join("bob")
    session, _ = whole_line_session(server)
    for line in [b"alice", *(b"line %d" % n for n in range(1000))]:
        session.line_received(line)
    assert len(bob.lines()) == 1 + 1000  # alice's join notice, then every line


# Registered aliases (with accounts that answer on the test's clock) and the log.


class ClockedAccounts:
    """Accounts of one registered alias, ``owner`` with password ``secret``.

    With ``hold`` set, a check waits until ``answer`` is called, as a hashing
    thread would make it wait.
    """

    def __init__(self) -> None:
        self.hold = False
        self.pending: list[tuple[Deferred[Account | None], Account | None]] = []

    def is_registered(self, alias: str) -> bool:
        return alias.lower() == "owner"

    def authenticate(self, alias: str, password: str, host: str | None) -> Deferred[Any]:
        account = Account("owner", "hash", 0.0, ()) if password == "secret" else None
        if not self.hold:
            return succeed(account)
        self.pending.append((Deferred(), account))
        return self.pending[-1][0]

    async def check_operator(self, name: str, password: str, host: str | None = None) -> bool:
        """No operators here (the fuzz tests send /oper too)."""
        return False

    def answer(self) -> None:
        pending, self.pending = self.pending, []
        for deferred, account in pending:
            deferred.callback(account)


class RegisteredServer(Server):
    """A Server whose hub knows the registered alias ``owner``."""

    def make_hub(self, history_replay: int) -> Hub:
        self.accounts = ClockedAccounts()
        return Hub(self.clock, history_replay=history_replay, accounts=self.accounts)  # type: ignore[arg-type]


def test_a_replaced_session_is_told_why_it_ends() -> None:
    """A registered alias's old session, replaced by a new login, is told so before it closes."""
    server = RegisteredServer()
    (old,) = server.join_keeping_lines("owner")
    old.type("secret\n")
    old.lines()
    new = server.connect()
    new.type("owner\nsecret\n")
    assert old.lines() == ["*** You logged in again from elsewhere; this session is closed."]
    assert old.transport.disconnecting
    assert server.hub.member_named("owner") is new.session


def test_lines_typed_during_a_refused_password_check_are_discarded() -> None:
    """A password retyped while a wrong one is checked is dropped, with a notice, and never
    becomes the next alias; an unfinished line is dropped up to its end."""
    server = RegisteredServer()
    server.accounts.hold = True
    client = server.connect()
    client.type("owner\nwrong\n")
    client.type("secret\nalso typed\nhalf a li")
    server.accounts.answer()
    server.clock.advance(1)
    lines = client.lines()
    assert lines[-3:] == [
        "!!! Wrong password for owner.",
        "!!! 3 lines typed during the password check were discarded.",
        lines[-1],
    ]
    assert lines[-1].startswith(PROMPT_START)
    client.type("ne\ncarol\n")
    assert client.lines()[0].startswith("*** Welcome, carol!")
    assert server.hub.online() == ("carol",)


def test_one_line_held_during_a_refused_check_is_counted_as_one() -> None:
    """The discard notice of a whole-line front end counts held lines, in the singular too."""
    server = RegisteredServer()
    server.accounts.hold = True
    session, transport = whole_line_session(server)
    for line in [b"owner", b"wrong", b"secret"]:
        session.line_received(line)
    server.accounts.answer()
    server.clock.advance(1)
    assert b"!!! 1 line typed during the password check was discarded.\r\n" in transport.value()
    assert session.alias is None and session._dropped_lines == 0


def test_lines_sent_during_a_right_password_check_are_discarded_too() -> None:
    """A password typed again while the right one is checked never reaches the room."""
    server = RegisteredServer()
    (bob,) = server.join("bob")
    server.accounts.hold = True
    client = server.connect()
    client.lines()
    client.type("owner\nsecret\nsecret\n")
    assert client.session.expects_password  # still masked while it is checked
    server.accounts.answer()
    assert not client.session.expects_password
    assert "secret" not in "\n".join(bob.lines())
    lines = client.lines()
    assert lines[-1] == "!!! 1 line typed during the password check was discarded."
    client.type("hello\n")
    assert bob.lines() == ["<owner> hello"]


def test_a_verified_login_during_a_password_check_waits_for_the_check() -> None:
    """A front end's verified login (an SSH key found late) that comes while a typed password
    is checked leaves the session to the check: it is not logged in twice, nor replaced as
    its own ghost."""
    server = RegisteredServer()
    server.accounts.hold = True
    session, transport = whole_line_session(server)
    session.line_received(b"owner")
    session.line_received(b"secret")
    session.log_in_verified("owner", Account("owner", "hash", 0.0, ()))
    assert session.alias is None
    server.accounts.answer()
    server.clock.advance(0)
    assert server.hub.member_named("owner") is session
    assert not transport.disconnecting
    assert b"logged in again" not in transport.value()


@pytest.mark.parametrize("password", ["secret", "wrong"])
def test_a_connection_lost_during_a_password_check_leaves_no_ghost(password: str) -> None:
    """Whatever the answer, a check that answers after its connection went joins nobody and
    sends nothing; the connection is logged once (a wrong password is logged as such too)."""
    server = RegisteredServer()
    (bob,) = server.join("bob")
    server.accounts.hold = True
    client = server.connect()
    client.type(f"owner\n{password}\nagain\n")
    client.lines()
    with capturedLogs() as events:
        client.drop(ConnectionLost)
        server.accounts.answer()
        server.clock.advance(2)
    assert server.hub.online() == ("bob",)
    assert client.lines() == [] and bob.lines() == []
    assert server.sessions.live == {bob.session}
    texts = [formatEvent(e) for e in events]
    assert [text for text in texts if "wrong password" not in text] == [
        "192.168.1.1:54321 disconnected before choosing an alias: Connection lost"
    ]


def test_the_password_prompt_is_known_to_the_front_end() -> None:
    """A session says when its next line is a password, so a front end can mask it."""
    server = RegisteredServer()
    client = server.connect()
    assert not client.session.expects_password
    client.type("owner\n")
    assert client.session.expects_password
    client.type("secret\n")
    assert not client.session.expects_password


def test_an_alias_timeout_is_logged_in_one_line() -> None:
    """A connection that never chose an alias is logged once, with the reason."""
    server = Server(alias_timeout_seconds=30)
    with capturedLogs() as events:
        client = server.connect()
        server.clock.advance(31)
        client.finish_close()
    assert [formatEvent(e) for e in events] == [
        "192.168.1.1:54321 disconnected before choosing an alias: alias timeout"
    ]


def test_a_banned_newcomer_is_logged_in_one_line() -> None:
    """A banned address refused at connection is logged once, with the ban."""
    server = Server()
    (alice,) = server.join("alice")
    moderation.make_operator(server.hub, alice.session, "root")
    alice.type("/ban 192.168.1.1 spam\n")
    with capturedLogs() as events:
        client = server.connect()
        client.finish_close()
    texts = [formatEvent(e) for e in events if "192.168.1.1:54321" in formatEvent(e)]
    assert texts == [
        "192.168.1.1:54321 disconnected before choosing an alias: banned (192.168.1.1)"
    ]


def test_input_is_read_on_during_a_password_check_up_to_a_bound() -> None:
    """While a password is checked the socket is still read (what a client sends then must
    reach the buffer the answer empties, not wait in the kernel to become the next alias);
    past MAX_BYTES_DURING_CHECK the sender is flooding and is cut off."""
    server = RegisteredServer()
    (bob,) = server.join("bob")
    server.accounts.hold = True
    client = server.connect()
    client.type("owner\nwrong\n")
    client.type("typed again\n" * 10)
    assert not client.transport.disconnecting
    client.type("x" * MAX_BYTES_DURING_CHECK + "\n" + "next\n" * 100)
    assert client.lines()[-1] == "!!! Excess flood; goodbye."
    assert client.transport.disconnecting
    server.accounts.answer()
    server.clock.advance(1)
    assert bob.lines() == []  # nothing became an alias or chat
    assert server.hub.online() == ("bob",)


def test_an_endless_line_during_a_password_check_counts_towards_the_bound() -> None:
    """An overlong line is dropped as it arrives, but during a password check its bytes
    count: an endless one is a flood there too, as the check's input is bounded."""
    server = RegisteredServer(max_line_bytes=100)
    server.accounts.hold = True
    client = server.connect()
    client.type("owner\nwrong\n")
    client.type("x" * (MAX_BYTES_DURING_CHECK // 2))
    assert not client.transport.disconnecting
    client.type("x" * (MAX_BYTES_DURING_CHECK // 2) + "x")
    assert client.lines()[-1] == "!!! Excess flood; goodbye."
    assert client.transport.disconnecting


def test_a_connection_that_does_not_close_when_asked_is_aborted() -> None:
    """A peer that never lets a close finish (a TLS handshake never completed) loses its slot."""
    server = Server(alias_timeout_seconds=5)
    silent = server.connect()
    server.clock.advance(5)
    assert silent.transport.disconnecting
    assert not silent.transport.disconnected
    server.clock.advance(CLOSE_GRACE_SECONDS)
    assert silent.transport.disconnected  # StringTransport's abortConnection
    silent.finish_close()
    assert not server.clock.getDelayedCalls()


def test_an_address_banned_after_connecting_cannot_choose_an_alias(server: Server) -> None:
    """An IP ban made while a connection sits at the alias prompt holds when it answers."""
    (alice,) = server.join("alice")
    moderation.make_operator(server.hub, alice.session, "root")
    waiting = server.connect()
    waiting.lines()
    alice.type("/ban 192.168.1.1/32 spam\n")
    waiting.type("olivia\n")
    assert waiting.lines() == ["!!! You are banned from this server: spam"]
    assert server.hub.member_named("olivia") is None


def test_a_reload_changes_the_alias_timeout_of_those_still_choosing() -> None:
    """A reloaded --alias-timeout applies at once, counted from each connection's start."""
    server = Server(alias_timeout_seconds=30)
    client = server.connect()
    client.lines()
    server.clock.advance(5)
    server.sessions.reconfigure(replace(server.sessions.config, alias_timeout_seconds=10))
    server.clock.advance(4.9)
    assert not client.transport.disconnecting
    server.clock.advance(0.1)
    assert client.lines() == ["!!! No alias chosen within 10 seconds; goodbye."]
    assert client.transport.disconnecting
