"""The SSH front end, driven in memory by conch's own client over iosim, on a Clock."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.connection import (
    MSG_CHANNEL_REQUEST,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    SSHConnection,
)
from twisted.conch.ssh.session import packRequest_pty_req, packRequest_window_change
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    MSG_DISCONNECT,
    SSHClientTransport,
)
from twisted.conch.ssh.userauth import SSHUserAuthClient
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.test.iosim import FakeTransport, IOPump, connect
from zope.interface.verify import verifyObject

from chatd.flood import FloodLimits
from chatd.fronts import ssh
from chatd.hub import Hub
from chatd.interfaces import IConnection
from chatd.model import Account, Ban
from chatd.session import ChatConfig, Sessions
from tests.test_editor import Screen

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
SIZE = (24, 80, 0, 0)  # rows, columns, pixels
NO_FLOOD_LIMIT = FloodLimits(rate=0)


class ClientChannel(SSHChannel):
    """A client's session channel that keeps what it is told."""

    name = b"session"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.received = b""
        self.errors = b""
        self.exit_status: int | None = None
        self.opened = False
        self.open_failure: Any = None
        self.is_closed = False

    def channelOpen(self, specificData: bytes) -> None:
        self.opened = True

    def openFailed(self, reason: Any) -> None:
        self.open_failure = reason

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def extReceived(self, dataType: int, data: bytes) -> None:
        self.errors += data

    def request_exit_status(self, data: bytes) -> int:
        self.exit_status = struct.unpack(">L", data)[0]
        return 1

    def closed(self) -> None:
        self.is_closed = True


class ClientAuth(SSHUserAuthClient):
    """Logs in with a password, or with a key if given one."""

    def __init__(self, user: bytes, conn: SSHConnection, password: bytes, key: Any) -> None:
        super().__init__(user, conn)
        self._password = password
        self._key = key

    def getPassword(self, prompt: bytes | None = None) -> Deferred[bytes]:
        return succeed(self._password)

    def getPublicKey(self) -> Any:
        return None if self._key is None else self._key.public()

    def getPrivateKey(self) -> Deferred[Any]:
        return succeed(self._key)


class Client(SSHClientTransport):
    """conch's client, trusting any host key."""

    def __init__(self, user: bytes, password: bytes, key: Any = None) -> None:
        self.user = user
        self.password = password
        self.key = key
        self.conn = SSHConnection()

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        return succeed(True)

    def connectionSecure(self) -> None:
        self.requestService(ClientAuth(self.user, self.conn, self.password, self.key))


class SSHHarness:
    """A chat server with an SSH front end, and conch clients connected to it in memory."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.clock = Clock()
        self.hub = Hub(self.clock)
        self.chat = Sessions(self.hub, ChatConfig(**config))
        self.factory = ssh.ssh_factory(self.chat, tmp_path)
        self.factory.startFactory()

    def connect(
        self, user: bytes = b"alice", password: bytes = b"anything", key: Any = None
    ) -> tuple[Any, Client, IOPump]:
        server = self.factory.buildProtocol(PEER)
        client = Client(user, password, key)
        pump = connect(
            server,
            FakeTransport(server, isServer=True, peerAddress=PEER),
            client,
            FakeTransport(client, isServer=False),
            clock=self.clock,
        )
        return server, client, pump

    def shell(self, client: Client, pump: IOPump, pty: bool = True) -> ClientChannel:
        channel = ClientChannel(conn=client.conn)
        client.conn.openChannel(channel)
        pump.flush()
        if channel.opened:
            if pty:
                client.conn.sendRequest(
                    channel, b"pty-req", packRequest_pty_req(b"xterm", SIZE, b"")
                )
            client.conn.sendRequest(channel, b"shell", b"")
        pump.flush()
        return channel

    def who(self) -> list[str]:
        return sorted(member.alias for member in self.chat.live if member.alias)


@pytest.fixture
def harness(tmp_path: Path) -> SSHHarness:
    return SSHHarness(tmp_path)


@pytest.fixture
def logged() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_a_guest_logs_in_with_a_password_and_chats(harness: SSHHarness) -> None:
    """A password login and a shell with a terminal join the chat under the SSH user name."""
    _, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    assert harness.who() == ["alice"]
    assert b"Welcome, alice!" in channel.received


def test_a_terminal_is_its_sessions_connection_and_consumer(harness: SSHHarness) -> None:
    """The terminal gives its session all that IConnection promises, and takes its output."""
    _, client, pump = harness.connect()
    harness.shell(client, pump)
    (session,) = harness.chat.live
    assert verifyObject(IConnection, session.connection)
    assert verifyObject(IConsumer, session.connection.consumer)


def test_a_second_shell_is_refused_and_the_first_chat_goes_on(harness: SSHHarness) -> None:
    """A second shell on one connection (ControlMaster) is told why and closed; the first
    chat is untouched, a third channel at once is refused, and leaving frees everything."""
    _, client, pump = harness.connect()
    first = harness.shell(client, pump)
    second = ClientChannel(conn=client.conn)
    client.conn.openChannel(second)
    pump.flush()
    third = harness.shell(client, pump)
    assert third.open_failure is not None
    assert third.open_failure.data == OPEN_ADMINISTRATIVELY_PROHIBITED
    client.conn.sendRequest(second, b"pty-req", packRequest_pty_req(b"xterm", SIZE, b""))
    client.conn.sendRequest(second, b"shell", b"")
    pump.flush()
    assert second.errors == ssh.ONE_CHAT_PER_CONNECTION
    assert second.exit_status == 1
    assert second.is_closed
    assert not first.is_closed
    assert harness.who() == ["alice"]
    client.transport.loseConnection()
    pump.flush()
    assert harness.chat.live == set()
    assert harness.hub.member_named("alice") is None


def test_only_the_chat_channel_window_pauses_the_chat(harness: SSHHarness) -> None:
    """A second channel whose window is shut neither pauses the chat's output nor, once
    closed, lets it resume while the chat's own window is shut."""
    server, client, pump = harness.connect()
    harness.shell(client, pump)
    chat_channel = channel_of(server)
    sender = harness.hub.member_named("alice")._sender  # type: ignore[union-attr]
    chat_channel.stopWriting()  # the chat's window shuts
    assert sender._paused
    other = ClientChannel(conn=client.conn)
    client.conn.openChannel(other)
    pump.flush()
    (served_other,) = [c for c in server.service.channels.values() if c is not chat_channel]
    served_other.stopWriting()
    served_other.startWriting()
    assert sender._paused
    client.conn.sendClose(other)
    pump.flush()
    assert sender._paused
    chat_channel.startWriting()
    assert not sender._paused


def test_a_channel_with_tiny_packets_is_refused(harness: SSHHarness) -> None:
    """A channel asking for packets of a few bytes (an SSH packet per byte of chat) is
    refused at its opening."""
    _, client, pump = harness.connect()
    channel = ClientChannel(conn=client.conn, localMaxPacket=1)
    client.conn.openChannel(channel)
    pump.flush()
    assert channel.open_failure is not None
    assert channel.open_failure.data == OPEN_ADMINISTRATIVELY_PROHIBITED


def test_a_closed_channel_ends_its_chat_and_its_connection_serves_no_other(
    harness: SSHHarness,
) -> None:
    """Closing the channel ends the chat at once (no ghost); the connection then starts no
    second chat, which would get round the connection limits, and is dropped in time."""
    server, client, pump = harness.connect()
    first = harness.shell(client, pump)
    client.conn.sendClose(first)
    pump.flush()
    assert harness.chat.live == set()
    assert harness.hub.member_named("alice") is None
    second = harness.shell(client, pump)
    assert second.errors == ssh.ONE_CHAT_PER_CONNECTION
    assert harness.chat.live == set()
    harness.clock.advance(ssh.SHELL_DEADLINE_SECONDS)
    assert server.transport.disconnecting


def test_a_full_tcp_buffer_pauses_the_send_queue_until_it_overflows(tmp_path: Path) -> None:
    """A client that opened a huge window but stopped reading the socket is cut off past
    --sendq-bytes, as on the line protocol, instead of growing the server's buffers."""
    harness = SSHHarness(tmp_path, sendq_bytes=4096, flood=NO_FLOOD_LIMIT)
    server, client, pump = harness.connect()
    harness.shell(client, pump)
    tcp = server.transport
    assert tcp.producer is not None and tcp.streamingProducer
    tcp.producer.pauseProducing()  # what the reactor does once 64 KiB wait to be sent
    member = harness.hub.member_named("alice")
    assert member is not None
    for _ in range(100):
        member.send(b"x" * 100 + b"\r\n")
    assert harness.hub.member_named("alice") is None
    assert harness.hub.counters.disconnects["sendq"] == 1


def test_a_silent_connection_is_dropped_before_login(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """A connection that never finishes logging in is dropped after AUTH_DEADLINE_SECONDS,
    with one line saying why and no traceback."""
    server = harness.factory.buildProtocol(PEER)
    tcp = FakeTransport(server, isServer=True, peerAddress=PEER)
    server.makeConnection(tcp)
    harness.clock.advance(ssh.AUTH_DEADLINE_SECONDS - 1)
    assert not tcp.disconnecting
    harness.clock.advance(1)
    assert tcp.disconnecting
    said = [e for e in logged if e.get("log_namespace") == "chatd.ssh"]
    assert [e["why"] for e in said] == ["not logged in within 30 seconds"]
    assert not [e for e in logged if e.get("log_failure")]


def test_a_login_without_a_shell_is_dropped(harness: SSHHarness) -> None:
    """Logged in (here 20 s after connecting) but never asking for a shell: dropped
    SHELL_DEADLINE_SECONDS after the login."""
    server = harness.factory.buildProtocol(PEER)
    client = Client(b"alice", b"anything")
    tcp = FakeTransport(server, isServer=True, peerAddress=PEER)
    pump = connect(server, tcp, client, FakeTransport(client, isServer=False), greet=False)
    harness.clock.advance(20)
    pump.flush()
    assert server.service is not None and server.service.name == b"ssh-connection"
    harness.clock.advance(ssh.SHELL_DEADLINE_SECONDS - 1)
    assert not tcp.disconnecting
    harness.clock.advance(1)
    assert tcp.disconnecting


def test_a_chat_is_not_cut_by_the_shell_deadline(harness: SSHHarness) -> None:
    """Once a shell runs, the login deadlines no longer apply."""
    server, client, pump = harness.connect()
    harness.shell(client, pump)
    harness.clock.advance(ssh.AUTH_DEADLINE_SECONDS + ssh.SHELL_DEADLINE_SECONDS)
    assert not server.transport.disconnecting
    assert harness.who() == ["alice"]


class StubSSHTransport:
    """Just what the login service uses of its SSH transport."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.host = PEER.host
        self.lost = False
        self.dropped = False
        self.sessionID = b"session"
        self.packets: list[tuple[int, bytes]] = []
        self.disconnects: list[tuple[int, bytes]] = []
        self.drops: list[tuple[str, bytes]] = []
        self.service: Any = None

    def isEncrypted(self, direction: str) -> bool:
        return True

    def sendPacket(self, kind: int, data: bytes) -> None:
        self.packets.append((kind, data))

    def sendDisconnect(self, code: int, text: bytes) -> None:
        self.disconnects.append((code, text))

    def drop(self, why: str, code: int = 0, text: bytes = b"") -> None:
        self.drops.append((why, text))
        self.dropped = True


class SlowAccounts:
    """Registered aliases whose password checks wait until the test answers them."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, str, str | None, Deferred[Account | None]]] = []

    def is_registered(self, alias: str) -> bool:
        return alias == "reg"

    def authenticate(self, alias: str, password: str, host: str | None = None) -> Any:
        answer: Deferred[Account | None] = Deferred()
        self.checks.append((alias, password, host, answer))
        return answer


def password_request(user: bytes, password: bytes) -> bytes:
    return NS(user) + NS(b"ssh-connection") + NS(b"password") + b"\x00" + NS(password)


def login_service(harness: SSHHarness) -> tuple[ssh.ChatUserAuth, StubSSHTransport]:
    service = ssh.ChatUserAuth()
    stub = StubSSHTransport(harness.factory)
    service.transport = stub  # type: ignore[assignment]
    stub.service = service
    service.serviceStarted()
    return service, stub


def test_pipelined_password_guesses_are_checked_one_at_a_time(harness: SSHHarness) -> None:
    """Password requests sent without waiting for answers wait their turn: one check at a
    time per connection, with the client's address passed on for the accounts' backoff."""
    accounts = SlowAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    service, _stub = login_service(harness)
    for guess in range(3):
        service.ssh_USERAUTH_REQUEST(password_request(b"reg", b"guess%d" % guess))
    assert [(a, p, h) for a, p, h, _ in accounts.checks] == [("reg", "guess0", PEER.host)]
    accounts.checks[0][3].callback(None)
    harness.clock.advance(ssh.WRONG_PASSWORD_DELAY_SECONDS)
    assert [p for _, p, _, _ in accounts.checks] == ["guess0", "guess1"]


def test_a_few_wrong_passwords_drop_the_connection(harness: SSHHarness) -> None:
    """After MAX_AUTH_FAILURES wrong passwords the next one ends the connection."""
    accounts = SlowAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    service, stub = login_service(harness)
    for guess in range(ssh.MAX_AUTH_FAILURES + 1):
        service.ssh_USERAUTH_REQUEST(password_request(b"reg", b"guess%d" % guess))
        accounts.checks[-1][3].callback(None)
        harness.clock.advance(ssh.WRONG_PASSWORD_DELAY_SECONDS)
    assert ssh.MAX_AUTH_FAILURES <= 6
    assert len(stub.disconnects) == 1


def test_endless_login_requests_drop_the_connection(harness: SSHHarness) -> None:
    """Login requests that never count as failures ("none", key queries) are capped too."""
    service, stub = login_service(harness)
    none = NS(b"guest") + NS(b"ssh-connection") + NS(b"none")
    for _ in range(ssh.MAX_AUTH_REQUESTS + 1):
        service.ssh_USERAUTH_REQUEST(none)
    assert [why for why, _ in stub.drops] == ["too many authentication requests"]


def test_a_client_gone_during_the_password_check_gets_no_session(harness: SSHHarness) -> None:
    """A right password that arrives after the client left starts nothing."""
    accounts = SlowAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    service, stub = login_service(harness)
    service.ssh_USERAUTH_REQUEST(password_request(b"reg", b"right"))
    stub.lost = True
    accounts.checks[0][3].callback(Account("reg", "hash", 0.0, ()))
    assert stub.packets == []
    assert stub.service is service


def test_a_banned_alias_is_refused_before_its_login_is_checked(harness: SSHHarness) -> None:
    """A banned alias (key or password) is turned away at the SSH login with the ban message."""
    harness.hub.bans.add(Ban("mallory", "alias", "spam", "op", 0.0, None))
    accounts = SlowAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    service, stub = login_service(harness)
    service.ssh_USERAUTH_REQUEST(password_request(b"mallory", b"pw"))
    assert accounts.checks == []
    assert stub.drops == [
        ("login as mallory refused: banned (mallory)", b"You are banned from this server: spam")
    ]


def test_a_banned_address_cannot_log_in_over_ssh(harness: SSHHarness) -> None:
    """An IP ban stops an SSH login before any chat session exists."""
    harness.hub.bans.add(Ban(PEER.host, "ip", "abuse", "op", 0.0, None))
    server, _client, _pump = harness.connect()
    assert server.transport.disconnecting
    assert harness.chat.live == set()


def test_the_password_checker_passes_the_address_on(harness: SSHHarness) -> None:
    """The SSH password check gives the accounts the client's address (per-IP backoff)."""
    accounts = SlowAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    checker = ssh.PasswordChecker(harness.chat)
    credentials = ssh.PeerUsernamePassword(b"reg", b"pw", "198.51.100.9")
    assert IUsernamePassword.providedBy(credentials)
    checker.requestAvatarId(credentials)
    assert accounts.checks[0][2] == "198.51.100.9"


def test_control_keys_are_dropped_without_a_log_line(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """Keys the editor does not know (a megabyte of Ctrl-A) are dropped quietly."""
    _, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    logged.clear()
    for _ in range(16):
        client.conn.sendData(channel, b"\x01" * 16384)
        pump.flush()
    assert logged == []


def test_a_long_line_and_an_endless_escape_stay_bounded(harness: SSHHarness) -> None:
    """The line being typed stops at the line limit, and an escape sequence that never
    ends is dropped, so typing cannot grow the server's memory."""
    server, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    client.conn.sendData(channel, b"a" * 5000)
    client.conn.sendData(channel, b"\x1b[" + b"1" * 5000)
    pump.flush()
    terminal = channel_of(server).terminal
    typed = terminal.terminalProtocol.buffer.text.encode("utf-8")
    assert len(typed) == harness.chat.config.max_line_bytes
    assert len(getattr(terminal, "escBuf", [])) <= ssh.MAX_ESCAPE_BYTES


def test_typing_while_the_window_is_shut_cannot_grow_the_echo(tmp_path: Path) -> None:
    """A client whose channel window is shut but who keeps typing has its keys dropped once
    MAX_UNSENT_BYTES of echo wait, instead of the echo growing without end."""
    harness = SSHHarness(tmp_path, flood=NO_FLOOD_LIMIT)
    server, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    served = channel_of(server)
    served.remoteWindowLeft = 0  # the client stopped adjusting its window
    for _ in range(100):
        client.conn.sendData(channel, b"a" * 1500 + b"\r")
        pump.flush()
    assert len(served.buf) <= ssh.MAX_UNSENT_BYTES + 2048
    assert harness.who() == ["alice"]


def channel_of(server: Any) -> Any:
    (channel,) = [c for c in server.service.channels.values() if c.terminal is not None]
    return channel


def test_a_window_change_resizes_the_editor(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """A resized terminal is taken by the editor, with no traceback."""
    server, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    client.conn.sendRequest(channel, b"window-change", packRequest_window_change((30, 100, 0, 0)))
    pump.flush()
    editor = channel_of(server).terminal.terminalProtocol
    assert (editor.width, editor.height) == (100, 30)
    assert not [e for e in logged if e.get("log_level") == LogLevel.critical]


def test_a_shell_without_a_terminal_is_refused_with_a_message(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """``ssh -T``: told a terminal is needed, exit status 1, channel closed, no traceback."""
    _, client, pump = harness.connect()
    channel = harness.shell(client, pump, pty=False)
    assert channel.errors == ssh.NO_TERMINAL
    assert channel.exit_status == 1
    assert channel.is_closed
    assert harness.chat.live == set()
    assert not [e for e in logged if e.get("log_failure")]


def test_a_command_is_refused_with_a_message(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """``ssh host command``: told no commands run, exit status 1, no traceback."""
    _, client, pump = harness.connect()
    channel = ClientChannel(conn=client.conn)
    client.conn.openChannel(channel)
    pump.flush()
    client.conn.sendRequest(channel, b"exec", NS(b"ls"))
    pump.flush()
    assert channel.errors == ssh.NO_COMMANDS
    assert channel.exit_status == 1
    assert channel.is_closed
    assert not [e for e in logged if e.get("log_failure")]


def test_an_ordinary_logout_logs_nothing_from_conch(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """A client's normal goodbye (disconnect code 11) logs nothing (conch said "error")."""
    _, client, pump = harness.connect()
    logged.clear()
    client.sendPacket(MSG_DISCONNECT, struct.pack(">L", DISCONNECT_BY_APPLICATION) + NS(b"bye"))
    pump.flush()
    assert [e for e in logged if not e["log_namespace"].startswith("tests.")] == []


def test_a_malformed_message_drops_the_connection_without_a_traceback(
    harness: SSHHarness, logged: list[dict[str, Any]]
) -> None:
    """A request for a channel that does not exist (conch raises on it) is answered with a
    disconnect and one log line, not a traceback."""
    server, client, pump = harness.connect()
    logged.clear()
    client.sendPacket(MSG_CHANNEL_REQUEST, struct.pack(">L", 99) + NS(b"shell") + b"\x01")
    pump.flush()
    assert server.transport.disconnecting
    assert not [e for e in logged if e.get("log_failure")]
    said = [e for e in logged if e.get("log_namespace") == "chatd.ssh"]
    assert [e["why"] for e in said] == ["unreadable SSH message (KeyError)"]


def test_a_connection_gone_during_the_key_check_leaves_no_ghost(harness: SSHHarness) -> None:
    """If the client leaves while its key is being looked up, nobody joins afterwards."""
    lookup: Deferred[Account | None] = Deferred()

    class KeyAccounts(SlowAccounts):
        def key_login(self, alias: str, public_key: str) -> Deferred[Account | None]:
            return lookup

    harness.hub.accounts = KeyAccounts()  # type: ignore[assignment]
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    _, client, pump = harness.connect(user=b"bob", key=key)
    harness.shell(client, pump)
    client.transport.loseConnection()
    pump.flush()
    lookup.callback(None)
    assert harness.hub.member_named("bob") is None
    assert harness.chat.live == set()


def resize(client: Client, channel: ClientChannel, columns: int, rows: int = 24) -> None:
    client.conn.sendRequest(
        channel, b"window-change", packRequest_window_change((rows, columns, 0, 0))
    )


def test_non_ascii_typing_arrives_whole(harness: SSHHarness) -> None:
    """UTF-8 typing reaches the room whole: héllo is not hllo, and wide characters pass."""
    _, alice, pump = harness.connect()
    typing = harness.shell(alice, pump)
    _, bob, bob_pump = harness.connect(user=b"bob")
    listening = harness.shell(bob, bob_pump)
    alice.conn.sendData(typing, "héllo 日本語 ✓\r".encode())
    pump.flush()
    harness.clock.advance(0)
    bob_pump.flush()
    assert "<alice> héllo 日本語 ✓".encode() in listening.received


def test_long_input_is_redrawn_whole_at_a_new_width_and_below_incoming_lines(
    harness: SSHHarness,
) -> None:
    """A resize redraws the line being typed at the new width, and an incoming line leaves
    no stale copy of its first row: the screen shows the line once, wrapped."""
    _, alice, pump = harness.connect()
    typing = harness.shell(alice, pump)
    screen = Screen(SIZE[1])
    screen.feed(typing.received)
    typing.received = b""
    alice.conn.sendData(typing, b"x" * 30)
    pump.flush()
    screen.feed(typing.received)
    typing.received = b""
    resize(alice, typing, 12)
    pump.flush()
    screen.resize(12)
    screen.feed(typing.received)
    typing.received = b""
    (session,) = harness.chat.live
    session.send(b"<bob> hi\r\n")
    pump.flush()
    screen.feed(typing.received)
    lines = screen.lines()
    assert lines[lines.index("<bob> hi") :] == ["<bob> hi", "> " + "x" * 10, "x" * 12, "x" * 8]
    assert lines.count("> " + "x" * 10) == 1


def test_a_password_typed_at_the_chat_prompt_is_masked_and_forgotten(
    harness: SSHHarness,
) -> None:
    """At the chat's own Password: prompt the password is echoed as stars and never enters
    the editor's history, while the check gets it as typed."""

    class KeyAccounts(SlowAccounts):
        def key_login(self, alias: str, public_key: str) -> Deferred[Account | None]:
            return succeed(None)  # a key not bound to the alias: its password is asked

    accounts = KeyAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    server, client, pump = harness.connect(user=b"reg", key=key)
    channel = harness.shell(client, pump)
    assert b"*** reg is registered. Password:" in channel.received
    client.conn.sendData(channel, b"s3cret!\r")
    pump.flush()
    assert [(alias, password) for alias, password, _, _ in accounts.checks] == [("reg", "s3cret!")]
    assert b"s3cret" not in channel.received
    assert b"*******" in channel.received
    client.conn.sendData(channel, b"\x1b[A")  # the up arrow brings nothing back
    pump.flush()
    editor = channel_of(server).terminal.terminalProtocol
    assert editor.buffer.text == "" and editor.buffer.history == []


def test_window_changes_while_the_window_is_shut_stay_bounded(tmp_path: Path) -> None:
    """Resizes while the client takes no output cannot pile up redraws past the bound."""
    harness = SSHHarness(tmp_path, flood=NO_FLOOD_LIMIT)
    server, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    client.conn.sendData(channel, b"a" * 2000)  # a long line being typed (not sent)
    pump.flush()
    served = channel_of(server)
    served.remoteWindowLeft = 0  # the client stopped adjusting its window
    for i in range(2000):
        request = packRequest_window_change((24, 1 + i % 2, 0, 0))  # widths 1 and 2
        client.conn.sendRequest(channel, b"window-change", request)
        if i % 50 == 0:
            pump.flush()
    pump.flush()
    assert len(served.buf) <= ssh.MAX_UNSENT_BYTES + 2048


def test_a_run_of_combining_marks_is_capped_as_it_is_typed(tmp_path: Path) -> None:
    """Marks past the cap are not taken, so no key redraws (and re-measures) a long run."""
    harness = SSHHarness(tmp_path, flood=NO_FLOOD_LIMIT)
    server, client, pump = harness.connect()
    channel = harness.shell(client, pump)
    client.conn.sendData(channel, b"e")
    pump.flush()
    channel.received = b""
    mark = "\u0300".encode()
    for _ in range(1000):
        client.conn.sendData(channel, mark)  # one SSH packet each
        pump.flush()
    editor = channel_of(server).terminal.terminalProtocol
    assert editor.buffer.text == "e" + "\u0300" * 4
    assert len(channel.received) < 1000 * 64  # a refused key draws nothing much


class RegisteredByKeyAccounts(SlowAccounts):
    """Accounts where the SSH key is bound to nothing, so the chat asks the password."""

    def key_login(self, alias: str, public_key: str) -> Deferred[Account | None]:
        return succeed(None)


def test_a_password_typed_again_during_the_check_is_masked_and_forgotten(
    tmp_path: Path,
) -> None:
    """Typed again while the first is checked, a password is still drawn as * and kept
    out of the editor's history (and dropped by the session, whatever the answer)."""
    harness = SSHHarness(tmp_path)
    harness.hub.accounts = RegisteredByKeyAccounts()  # type: ignore[assignment]
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    server, client, pump = harness.connect(user=b"reg", key=key)
    channel = harness.shell(client, pump)
    client.conn.sendData(channel, b"s3cret!\r")
    pump.flush()
    client.conn.sendData(channel, b"s3cret!\r")
    pump.flush()
    editor = channel_of(server).terminal.terminalProtocol
    assert b"s3cret!" not in channel.received
    assert editor.buffer.history == []


def test_a_paste_during_the_password_check_is_bounded_like_every_front_end_s(
    tmp_path: Path,
) -> None:
    """Lines pasted into the terminal while its password is checked are counted by the
    session: past its bound the user is cut off, and none reaches the room."""
    harness = SSHHarness(tmp_path)
    harness.hub.accounts = RegisteredByKeyAccounts()  # type: ignore[assignment]
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    _, client, pump = harness.connect(user=b"reg", key=key)
    channel = harness.shell(client, pump)
    client.conn.sendData(channel, b"s3cret!\r")
    pump.flush()
    for _ in range(10):
        client.conn.sendData(channel, b"hi\r" * 30)
        pump.flush()
    assert b"!!! Excess flood; goodbye." in channel.received
    assert channel.is_closed
    assert harness.chat.live == set()


def test_a_password_typed_ahead_during_the_key_lookup_is_never_an_alias(
    harness: SSHHarness,
) -> None:
    """What is typed while the SSH key is still being looked up waits for the alias: a
    password typed ahead goes to the password prompt that follows, masked, and never
    becomes an alias (or a chat line) for the room to see."""
    lookup: Deferred[Account | None] = Deferred()

    class KeyAccounts(SlowAccounts):
        def key_login(self, alias: str, public_key: str) -> Deferred[Account | None]:
            return lookup

    accounts = KeyAccounts()
    harness.hub.accounts = accounts  # type: ignore[assignment]
    _, bob, bob_pump = harness.connect(user=b"bob")
    listening = harness.shell(bob, bob_pump)
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    server, client, pump = harness.connect(user=b"reg", key=key)
    channel = harness.shell(client, pump)
    client.conn.sendData(channel, b"hunter2\r")
    pump.flush()
    lookup.callback(None)  # the key is bound to nothing: the password is asked for
    pump.flush()
    harness.clock.advance(0)
    bob_pump.flush()
    assert harness.hub.member_named("hunter2") is None
    assert b"hunter2" not in listening.received
    assert b"hunter2" not in channel.received  # masked as it was typed
    assert b"*** reg is registered. Password:" in channel.received
    assert [(alias, password) for alias, password, _, _ in accounts.checks] == [("reg", "hunter2")]
    assert channel_of(server).terminal.terminalProtocol.buffer.history == []
