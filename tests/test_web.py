"""Tests for chatd.fronts.web: the session, the WebSocket and the page's site, all in memory.

The site is driven as a real connection would drive it: bytes into twisted.web's
channel, which hands the connection to autobahn on an upgrade. Autobahn's own
timers (handshake timeouts, pings) run on the global reactor, so they are turned
off here; the HTTP deadlines run on the test's clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import directlyProvides
from zope.interface.verify import verifyObject

from chatd.admission import AdmittingFactory, ConnectionLimits, refusal_http
from chatd.fronts.httpsite import HEAD_DEADLINE_SECONDS, MAX_HEAD_LINE_BYTES
from chatd.fronts.web import (
    MAX_FRAMES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    MAX_PINGS_PER_WINDOW,
    ChatWebSocket,
    WebSocketOutput,
    web_site,
)
from chatd.interfaces import IConnection
from chatd.sendqueue import BoundedSender
from chatd.session import ChatSession
from tests.test_accounts import AccountServer, register
from tests.test_protocol import RegisteredServer, Server
from tests.wsclient import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    client_frame,
    split_frames,
    upgrade_request,
)

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = "127.0.0.1:8080"
ORIGIN = "http://127.0.0.1:8080"
# Two bytes of JSON per quote: one line of these is about 4 KiB of JSON.
QUOTES = '"' * 2040


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AccountServer]:
    server = AccountServer(tmp_path / "chatd.sqlite3")
    yield server
    server.store.stop()


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every event logged during the test."""
    found: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(found.append)
    yield found
    globalLogPublisher.removeObserver(found.append)


def site_for(server: Server, origins: tuple[str, ...] = ()) -> Site:
    site = web_site(server.sessions, list(origins))
    site.resource.factory.setProtocolOptions(  # type: ignore[attr-defined]
        openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0
    )
    return site


class TlsTransport(StringTransport):
    """A transport that says it is TLS (as a ``ssl:`` listener's is)."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class HttpConnection:
    """One in-memory connection to a site: what a browser (or anyone) sends, and the answer."""

    def __init__(self, site: Site, secure: bool = False) -> None:
        self.transport = (
            TlsTransport(peerAddress=PEER) if secure else StringTransport(peerAddress=PEER)
        )
        if secure:
            directlyProvides(self.transport, ISSLTransport)
        self.channel = site.buildProtocol(PEER)
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def answer(self) -> bytes:
        """What the server sent since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return data

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)


class WebUser(HttpConnection):
    """A WebSocket client in memory, upgraded and holding a chat session."""

    def __init__(self, site: Site, origin: str | None = ORIGIN, clock: Any = None) -> None:
        super().__init__(site)
        self.clock = clock
        self.send(upgrade_request(HOST, origin))
        head, _, self.rest = self.answer().partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert isinstance(self.channel.upgraded, ChatWebSocket)
        self.socket = self.channel.upgraded
        self.frames_seen: list[tuple[int, bytes]] = []

    @property
    def session(self) -> ChatSession:
        assert isinstance(self.socket.session, ChatSession)
        return self.socket.session

    def say(self, text: str) -> None:
        self.send(client_frame(TEXT, text.encode()))

    def frames(self) -> list[tuple[int, bytes]]:
        """The frames the server sent since the last call (the hub's turn ended first)."""
        if self.clock is not None:
            self.clock.advance(0)
        frames, self.rest = split_frames(self.rest + self.answer())
        self.frames_seen += frames
        return frames

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for opcode, payload in self.frames()
            if opcode == TEXT
            for line in payload.decode().splitlines()
        ]


def tracebacks(logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logged if "log_failure" in e or e.get("isError")]


# The session.


def test_one_message_carries_alias_password_and_chat_in_order(server: AccountServer) -> None:
    """Lines after a password wait for its check, then go on in order."""
    register(server, "alice", "correct-horse").type("/quit\n")
    (bob,) = server.join("bob")
    web = WebUser(site_for(server), clock=server.clock)
    assert web.events()[0]["type"] == "notice"
    web.say("alice\ncorrect-horse\nhello from the web\n")
    kinds = [(e["type"], e.get("text", e.get("welcome"))) for e in web.events()]
    assert kinds[:2] == [("notice", "alice is registered. Password:"), ("room", "alice")]
    assert "<alice> hello from the web" in bob.lines()


def test_a_message_of_many_short_lines_during_a_password_check_is_a_flood() -> None:
    """Ten thousand short lines in one message while a password is checked: the sender is cut
    off at the session's bound, and none of them becomes an alias or a chat line."""
    server = RegisteredServer()
    (bob,) = server.join("bob")
    server.accounts.hold = True
    web = WebUser(site_for(server), clock=server.clock)
    web.events()
    web.say("owner\nwrong")
    web.say("\n".join(["bob2"] * 10_000))
    assert web.events()[-1] == {"type": "error", "text": "Excess flood; goodbye."}
    assert [opcode for opcode, _ in web.frames_seen][-1] == CLOSE
    server.accounts.answer()
    server.clock.advance(2)
    assert bob.lines() == []
    assert server.hub.online() == ("bob",)


def test_a_websocket_is_its_sessions_connection() -> None:
    """The WebSocket gives its session all that IConnection promises."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    assert verifyObject(IConnection, web.socket)
    assert web.session.connection is web.socket


def test_an_empty_message_is_one_empty_line(server: AccountServer) -> None:
    """An empty WebSocket message is an (empty, refused) alias, not nothing."""
    web = WebUser(site_for(server), clock=server.clock)
    web.events()
    web.say("")
    assert web.events()[0]["type"] == "error"  # no alias in it


# Output of any size, and writes that never raise.


def test_a_burst_of_long_lines_reaches_a_web_user_in_one_message() -> None:
    """Ten lines of quotes from each of three users in one turn: over 64 KiB of JSON, all sent."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    web.say("webby")
    web.events()
    liners = server.join("ann", "ben", "cat")
    web.frames()
    for liner in liners:
        liner.type("".join(f"{QUOTES}\n" for _ in range(10)))
    frames = web.frames()
    assert len(frames) == 1 and len(frames[0][1]) > MAX_MESSAGE_BYTES
    said = [json.loads(line) for line in frames[0][1].decode().splitlines()]
    assert len(said) == 30 and {e["text"] for e in said} == {QUOTES}
    web.say("still here")
    assert "<webby> still here" in liners[0].lines()


def test_a_replay_of_long_history_reaches_a_web_user_and_it_stays() -> None:
    """Twenty long lines in a room's history: joining, /history 100 and /join all arrive."""
    server = Server(history_replay=100)
    (poster,) = server.join("poster")
    poster.type("".join(f"{QUOTES}\n" for _ in range(25)))
    server.clock.advance(0)
    web = WebUser(site_for(server), clock=server.clock)
    web.say("reader")
    replays = [e for e in web.events() if e["type"] == "history"]
    assert len(replays[0]["entries"]) >= 20
    web.say("/history 100")
    assert [e["type"] for e in web.events()] == ["history"]
    web.say("/join #elsewhere")
    web.say("/join #lobby")
    assert "history" in [e["type"] for e in web.events()]
    assert not web.closed


def test_a_write_on_a_closing_socket_is_dropped_quietly(logged: list[dict[str, Any]]) -> None:
    """Once the closing handshake started, what the hub delivers is dropped, not raised."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    web.frames()
    web.socket.sendClose(1000)
    WebSocketOutput(web.socket).write(b"late\n")
    assert [opcode for opcode, _ in web.frames()] == [CLOSE]
    assert tracebacks(logged) == []


def test_a_failing_write_cuts_off_that_connection_only_and_logs_once(
    logged: list[dict[str, Any]],
) -> None:
    """A write that raises is logged once, that connection is aborted, and nothing propagates."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)

    def broken(data: bytes) -> None:
        raise RuntimeError("broken")

    web.socket.send_text = broken  # type: ignore[method-assign]
    output = WebSocketOutput(web.socket)
    output.write(b"one\n")
    output.write(b"two\n")
    assert web.transport.disconnecting
    assert len(tracebacks(logged)) == 1


def test_a_closed_websocket_gives_its_connection_slot_back() -> None:
    """Behind the accept-time admission wrapper, a WebSocket's close still frees its slot."""
    server = Server(connections=ConnectionLimits(max_conns=1, max_per_ip=0, max_rate_per_ip=0))
    admission = server.sessions.admission
    outer = AdmittingFactory(site_for(server), admission, refusal_http).buildProtocol(PEER)
    assert outer is not None
    transport = StringTransport(peerAddress=PEER)
    transport.protocol = outer  # type: ignore[attr-defined]  # whom a TCP transport calls
    outer.makeConnection(transport)
    transport.protocol.dataReceived(upgrade_request(HOST, ORIGIN))  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 101 ") and admission.connected == 1
    transport.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    assert admission.connected == 0
    assert server.sessions.live == set()


# The WebSocket's own limits.


def test_the_session_send_queue_is_paused_by_the_tcp_transport() -> None:
    """The session's BoundedSender is the TCP transport's producer: it queues, then cuts off."""
    server = Server(sendq_bytes=10_000)
    web = WebUser(site_for(server), clock=server.clock)
    web.say("slow")
    web.frames()
    sender = web.transport.producer
    assert isinstance(sender, BoundedSender)
    sender.pauseProducing()  # what the TCP transport does when its buffer is full
    (liner,) = server.join("liner")
    liner.type("x" * 1000 + "\n")
    server.clock.advance(0)
    assert web.frames() == [] and sender.queued_bytes > 0
    for _ in range(10):
        liner.type("y" * 1000 + "\n")
        server.clock.advance(0)
    assert web.transport.disconnecting
    assert "slow has left (Send queue exceeded)" in " ".join(liner.lines())


def test_a_binary_message_gets_an_error_and_a_close() -> None:
    """A binary message is answered with an error and the closing handshake."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    web.events()
    web.send(client_frame(BINARY, b"\x00\x01"))
    frames = web.frames()
    assert json.loads(frames[0][1])["text"] == "Send text messages; goodbye."
    assert frames[-1][0] == CLOSE


def test_a_message_in_too_many_frames_is_refused() -> None:
    """Empty continuation frames count towards no size: their number is limited instead."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    web.frames()
    web.send(client_frame(TEXT, b"", fin=False))
    for _ in range(MAX_FRAMES_PER_MESSAGE - 1):
        web.send(client_frame(0, b"", fin=False))
    assert not web.closed
    web.send(client_frame(0, b"", fin=False))
    assert web.closed


def test_a_ping_flood_is_cut_off() -> None:
    """Pings are answered up to a rate; a client that pings faster is closed."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    web.frames()
    for _ in range(MAX_PINGS_PER_WINDOW):
        web.send(client_frame(PING, b"hi"))
    assert [opcode for opcode, _ in web.frames()] == [PONG] * MAX_PINGS_PER_WINDOW
    server.clock.advance(11)
    web.send(client_frame(PING, b"hi"))
    assert [opcode for opcode, _ in web.frames()] == [PONG]
    for _ in range(MAX_PINGS_PER_WINDOW - 1):
        web.send(client_frame(PING, b"hi"))
    assert not web.closed
    web.send(client_frame(PING, b"hi"))
    assert web.closed


# Which sites may use it.


def test_the_page_and_websocket_refuse_a_host_that_is_not_this_server() -> None:
    """DNS rebinding: a foreign Host is refused for the page (421) and the WebSocket."""
    site = site_for(Server())
    page = HttpConnection(site)
    page.send(b"GET / HTTP/1.1\r\nHost: evil.example:8080\r\n\r\n")
    assert page.answer().startswith(b"HTTP/1.1 421 ")
    socket = HttpConnection(site)
    socket.send(upgrade_request("evil.example:8080", "http://evil.example:8080"))
    assert socket.answer().split(b" ")[1] in (b"403", b"421")


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil@127.0.0.1",
        "127.0.0.1\r\nHost: evil.example",
        "evil.example\r\nHost: 127.0.0.1",
        "127.0.0.1.",
        "",
    ],
)
def test_the_page_is_refused_to_any_other_host(host: str) -> None:
    """Another name, user info, two Hosts or none: the page is misdirected (421)."""
    page = HttpConnection(site_for(Server()))
    page.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert page.answer().startswith(b"HTTP/1.1 421 ")


@pytest.mark.parametrize(
    "host", [HOST, "localhost:8080", "[::1]:8080", "10.1.2.3", "CHAT.example.org"]
)
def test_the_page_is_served_to_its_own_hosts(host: str) -> None:
    """An address, localhost, or the host of a --web-origin gets the page."""
    page = HttpConnection(site_for(Server(), ("https://chat.example.org",)))
    page.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    answer = page.answer()
    assert answer.startswith(b"HTTP/1.1 200 ") and b"<title>chatd</title>" in answer
    assert b"frame-ancestors 'none'" in answer


@pytest.mark.parametrize("path", ["/favicon.svg", "/favicon.ico"])
def test_the_favicon_is_served_as_svg_under_the_page_s_policy(path: str) -> None:
    """The icon browsers ask for is an SVG with the page's headers, not a 404."""
    page = HttpConnection(site_for(Server()))
    page.send(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    head, _, body = page.answer().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ncontent-type: image/svg+xml\r\n" in head.lower()
    assert b"default-src 'none'" in head and b"nosniff" in head
    assert body.startswith(b"<svg ") and b"<script" not in body


def test_the_origin_must_match_the_scheme_the_page_was_reached_by() -> None:
    """http://host is this site over plain HTTP, not over TLS, and https://host the reverse."""
    site = site_for(Server())
    over_tls = HttpConnection(site, secure=True)
    over_tls.send(upgrade_request(HOST, ORIGIN))
    assert over_tls.answer().startswith(b"HTTP/1.1 403 ")
    plain = HttpConnection(site)
    plain.send(upgrade_request(HOST, "https://127.0.0.1:8080"))
    assert plain.answer().startswith(b"HTTP/1.1 403 ")
    factory = site.resource.factory  # type: ignore[attr-defined]
    assert factory.origin_allowed("https://127.0.0.1:8080", HOST, True)
    assert not factory.origin_allowed("http://evil.example:8080", "evil.example:8080")


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://[::1", "http://x:99"])
def test_a_foreign_origin_may_not_open_a_websocket(origin: str) -> None:
    """Another site, a sandboxed frame or nonsense in Origin is refused with 403, and closed."""
    connection = HttpConnection(site_for(Server()))
    connection.send(upgrade_request(HOST, origin))
    assert connection.answer().startswith(b"HTTP/1.1 403 ")
    assert connection.closed  # so that its log line is the connection's only one


def test_listed_origins_and_bots_without_one_get_a_websocket() -> None:
    """A --web-origin page (behind a proxy) and a client with no Origin are let in."""
    server = Server()
    site = site_for(server, ("https://chat.example.org",))
    assert WebUser(site, origin="https://chat.example.org", clock=server.clock).events()
    assert WebUser(site, origin=None, clock=server.clock).events()


# HTTP: bodies, deadlines, logging, odd requests.


def test_a_request_body_is_refused_before_it_is_read() -> None:
    """A POST (405) or a GET (413) announcing a body is answered and closed at once."""
    for head, status in [
        (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000\r\n\r\n", b"405"),
        (b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"405"),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n", b"413"),
    ]:
        connection = HttpConnection(site_for(Server()))
        connection.send(head)
        assert connection.answer().split(b" ")[1] == status
        assert connection.closed


def test_an_overlong_request_line_is_answered_431() -> None:
    """A path or header line past the limit gets 431 and a close, not a silent drop."""
    connection = HttpConnection(site_for(Server()))
    connection.send(b"GET /" + b"a" * MAX_HEAD_LINE_BYTES + b" HTTP/1.1\r\n")
    assert connection.answer().startswith(b"HTTP/1.1 431 ")
    assert connection.closed


def test_a_request_head_must_be_complete_within_the_deadline() -> None:
    """An HTTP slowloris that trickles a header every few seconds is answered 408 and closed."""
    server = Server()
    connection = HttpConnection(site_for(server))
    connection.send(b"GET / HTTP/1.1\r\n")
    for n in range(int(HEAD_DEADLINE_SECONDS) - 1):
        server.clock.advance(1)
        connection.send(f"X-Slow-{n}: 1\r\n".encode())
    assert not connection.closed
    server.clock.advance(1)
    assert connection.answer().startswith(b"HTTP/1.1 408 ")
    assert connection.closed


def test_a_keep_alive_connection_gets_the_same_deadline_for_its_next_request() -> None:
    """After one answer, a connection that sends no complete head in time is closed."""
    server = Server()
    connection = HttpConnection(site_for(server))
    connection.send(b"GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert connection.answer().startswith(b"HTTP/1.1 200 ")
    server.clock.advance(HEAD_DEADLINE_SECONDS - 1)
    assert not connection.closed
    server.clock.advance(1)
    assert connection.closed


def test_an_upgraded_websocket_outlives_the_http_deadlines() -> None:
    """Once a WebSocket, the connection is no longer held to the HTTP deadlines."""
    server = Server()
    web = WebUser(site_for(server), clock=server.clock)
    web.say("stayer")
    server.clock.advance(120)
    web.say("still here")
    assert not web.closed
    assert any(e["type"] == "room" for e in web.events())


def test_requests_are_not_access_logged(logged: list[dict[str, Any]]) -> None:
    """Serving the page logs nothing: anyone could fill the log with requests."""
    site = site_for(Server())
    site.doStart()  # as the listening port does: where twisted.web opens its access log
    try:
        connection = HttpConnection(site)
        for _ in range(3):
            connection.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert connection.answer().count(b"HTTP/1.1 200 ") == 3
    finally:
        site.doStop()
    assert logged == []


ODD_PATHS = [
    b"/index.html%00.js",
    b"/index.html\x00.js",
    b"/%00",
    b"//",
    b"//etc/passwd",
    b"/../../etc/passwd",
    b"/..%2f..%2fetc%2fpasswd",
    b"/%2e%2e/%2e%2e/",
    b"/app.js/",
    b"/app.js/x",
    b"/ws/x",
    b"/ws?x=%ff",
    b"/\xff\xfe",
    b"/%ff%fe",
    b"/" + b"a" * 7000,
    b"/?" + b"&" * 3000,
    b"*",
    b"http://evil.example/",
    b"",
    b"/index.html;x",
    b"/%",
    b"/%zz",
    b"/style.css%20",
]
ODD_METHODS = [
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"TRACE",
    b"CONNECT",
    b"\xff",
]
ODD_HEADERS = [
    b"Host: 127.0.0.1",
    b"Host: \xff\xfe",
    b"Host:",
    b"Host: [::1",
    b"Host: 127.0.0.1\r\nHost: evil.example",
    b"Host: 127.0.0.1\r\nUpgrade: websocket",
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: \xff",
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x",
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 99",
    b"Host: 127.0.0.1\r\nRange: bytes=999999-1",
    b"Host: 127.0.0.1\r\nIf-Modified-Since: \xff",
    b"Host: 127.0.0.1\r\nContent-Length: -1",
    b"Host: 127.0.0.1\r\nContent-Length: 0",
    b"Host: 127.0.0.1\r\nCookie: " + b"=" * 5000,
    b"Host: 127.0.0.1\r\nX: " + b"y" * 9000,
    b"\x00: \x00",
    b"Host 127.0.0.1",
]


def fuzz_requests() -> Iterator[bytes]:
    for method in ODD_METHODS:
        for path in ODD_PATHS:
            yield method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for headers in ODD_HEADERS:
        for path in (b"/", b"/ws", b"/index.html%00.js"):
            yield b"GET " + path + b" HTTP/1.1\r\n" + headers + b"\r\n\r\n"
    yield b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256))  # TLS hello
    yield b"GET / HTTP/9.9\r\n\r\n"
    yield b"GET /\r\n\r\n"
    yield b"\r\n\r\n\r\n"
    yield b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n"


def fuzz_site(site: Site, clock: Clock, logged: list[dict[str, Any]]) -> None:
    """Every odd request gets an answer or a close, and none logs a traceback or an error."""
    connections = []
    for request in fuzz_requests():
        connection = HttpConnection(site)
        connection.send(request)
        connections.append((request, connection))
    clock.advance(HEAD_DEADLINE_SECONDS)  # an incomplete head is answered by now
    for request, connection in connections:
        assert connection.answer() or connection.closed, request
    count = len(connections)
    assert count > 250
    assert tracebacks(logged) == []
    assert [
        e for e in logged if e.get("log_level") and e["log_level"].name in ("error", "critical")
    ] == []
    assert len(logged) <= count  # at most one line per connection


def test_odd_requests_to_the_web_site_log_no_traceback(logged: list[dict[str, Any]]) -> None:
    """A few hundred odd paths, methods and headers: each answered, none logs a traceback."""
    server = Server()
    fuzz_site(site_for(server), server.clock, logged)
