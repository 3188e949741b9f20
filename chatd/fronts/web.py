"""The web front end (``--web ENDPOINT``): a chat page and a WebSocket, on one port.

``twisted.web`` serves the page (four static files shipped in
``chatd/fronts/webpage/``, read once at start and served from memory) and
``/ws``, where ``autobahn`` speaks WebSocket. Behind the WebSocket is a
:class:`~chatd.session.ChatSession`, as behind every front end: lines arrive in
WebSocket text messages (one or more per message, each checked like a line from
telnet: length, flood control, alias rules) and events leave as JSON
(:mod:`chatd.fronts.jsonformat`). So browser users and line users are in the
same rooms under the same rules, and the same connection limits. The HTTP limits
(no request bodies, a deadline for the request head, no access log) are those of
:mod:`chatd.fronts.httpsite`.

Which sites may use it
----------------------
Two checks keep other web sites from using a visitor's browser to chat (or to read
the page) in their name:

- The ``Host`` header must name this server: an IP address, ``localhost``, or the
  host of a ``--web-origin``. Anything else is refused (421 for the page, 403 for
  the WebSocket): a hostile site whose own name has been made to resolve to this
  server's address (DNS rebinding) sends its own name there.
- A browser's ``Origin`` must be the page's own site, as the browser reached it
  (``http`` on a ``tcp:`` listener, ``https`` on ``ssl:``, with the same host and
  port), or one given with ``--web-origin``. Clients that send no origin (bots)
  are let in; ``null`` (a sandboxed frame, a local file) is not, since any site can
  produce it.

So a public deployment must pass its public origin, scheme included, e.g.
``--web-origin https://chat.example.org`` (and another for each other name the
page is reached by). Behind a reverse proxy that terminates TLS, that origin is
the only one the browser can send (the listener itself sees plain ``http``), and
the proxy must pass the browser's ``Host`` on unchanged.

Output
------
Whatever the hub delivers goes out in one text message, however large: the 64 KiB
limit of ``MAX_MESSAGE_BYTES`` is for what clients send. A history replay of long
lines, or ``/who`` on a busy server, is bigger than that. Memory is bounded by the
session's send queue, which the TCP transport under the WebSocket pauses.
"""

from __future__ import annotations

import ipaddress
from importlib import resources
from typing import Any, cast
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import IAddress, IConsumer, IProducer, ITCPTransport
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from chatd.admission import describe_peer
from chatd.events import Error
from chatd.fronts import jsonformat
from chatd.fronts.httpsite import NOT_FOUND, GuardedChannel, GuardedSite, Refusal
from chatd.interfaces import IConnection
from chatd.session import ChatSession, Sessions

# What a client may send in one message: a paste of several lines, each still held
# to --max-line-bytes. (What the server sends is not limited: see the docstring.)
MAX_MESSAGE_BYTES = 64 * 1024
# A message in more pieces than this is refused: empty pieces count towards no size
# limit, and each costs the work of a frame.
MAX_FRAMES_PER_MESSAGE = 64
PING_SECONDS = 30.0
# Pings a client may send per window before it is cut off: each is answered, and a
# client that does not read would leave the answers in the server's buffers.
MAX_PINGS_PER_WINDOW = 10
PING_WINDOW_SECONDS = 10.0
CLOSE_POLICY_VIOLATION = 1008  # the WebSocket close code (RFC 6455, 7.4.1)
log = Logger(namespace="chatd.web")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_FILES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}


@implementer(IConsumer)
class WebSocketOutput:
    """Where a session's output goes: each write is one WebSocket text message.

    Backpressure works as on plain TCP: the session's send queue registers with
    the TCP transport under the WebSocket, which pauses it when full.
    """

    def __init__(self, socket: ChatWebSocket) -> None:
        self._socket = socket
        self._failed = False

    def write(self, data: bytes) -> None:
        """Send ``data`` as one text message; never raise into the hub's delivery.

        On a socket that is closing or closed ``data`` is dropped: the session
        hears of the close from onClose. Anything else going wrong is a fault
        here, not the client's: it is logged once and this connection alone is
        cut off.
        """
        socket = self._socket
        if self._failed or socket.state != WebSocketProtocol.STATE_OPEN:
            return
        try:
            socket.send_text(data)
        except Exception:
            self._failed = True
            log.failure("cannot send to {peer}; cutting it off", peer=socket.peer)
            socket.abort()

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        tcp = cast(IConsumer, self._socket.transport)
        if getattr(tcp, "producer", None) is not None:
            # twisted.web's channel, which handed the connection over to the WebSocket.
            tcp.unregisterProducer()
        tcp.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        cast(IConsumer, self._socket.transport).unregisterProducer()


@implementer(IConnection)
class ChatWebSocket(WebSocketServerProtocol):
    """One browser (or bot) connection, its origin already checked: runs a chat session.

    Each line of a text message goes to the session, in order; what the session
    sends goes out as text messages (see WebSocketOutput).
    """

    factory: ChatWebSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self.session: ChatSession | None = None
        self.address: IAddress | None = None
        self.consumer = WebSocketOutput(self)
        self._lost = False
        self._frames_in_message = 0
        self._ping_window_start = 0.0
        self._pings_in_window = 0

    def onOpen(self) -> None:
        transport = cast(ITCPTransport, self.transport)
        self.address = transport.getPeer()
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.session = self.factory.sessions.open(self, jsonformat.encode)

    def send_text(self, data: bytes) -> None:
        """Send ``data`` as one text message, whatever its size.

        Not autobahn's sendMessage, which holds outgoing messages to
        maxMessagePayloadSize too, a limit meant here for what clients send.
        (No compression is negotiated, so a frame carries the data as it is.)
        """
        self.sendFrame(opcode=1, payload=data)

    # IConnection: what the session asks of its connection.

    def close(self) -> None:
        """Close with the WebSocket closing handshake, after what was sent."""
        self.sendClose(1000)

    def abort(self) -> None:
        transport = cast("ITCPTransport | None", self.transport)
        if transport is not None:
            transport.abortConnection()

    def discard_pending_input(self) -> int:
        """Nothing is pending here: every message's lines went to the session at once."""
        return 0

    # WebSocket events.

    def onMessageBegin(self, isBinary: bool) -> None:
        self._frames_in_message = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        self._frames_in_message += 1
        if self._frames_in_message > MAX_FRAMES_PER_MESSAGE:
            # autobahn's own way out for protocol violations: drops the connection, logs once.
            self._fail_connection(CLOSE_POLICY_VIOLATION, "message in too many frames")

    def onPing(self, payload: bytes) -> None:
        now = self.factory.sessions.clock.seconds()
        if now - self._ping_window_start >= PING_WINDOW_SECONDS:
            self._ping_window_start, self._pings_in_window = now, 0
        self._pings_in_window += 1
        if self._pings_in_window > MAX_PINGS_PER_WINDOW:
            self._fail_connection(CLOSE_POLICY_VIOLATION, "too many pings")
            return
        super().onPing(payload)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        if isBinary:
            session.reply(Error("Send text messages; goodbye."))
            session.disconnect("binary WebSocket message")
            return
        for line in payload.removesuffix(b"\n").split(b"\n"):
            session.line_received(line)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.session is not None and not self._lost:
            self._lost = True
            self.session.connection_lost(clean=wasClean)


class ChatWebSocketFactory(WebSocketServerFactory):
    """Makes ChatWebSockets for ``sessions``, and knows which sites may use them."""

    # Typed by Twisted for its own protocols; autobahn's ship no type hints.
    protocol = ChatWebSocket  # type: ignore[assignment]

    def __init__(self, sessions: Sessions, origins: list[str]) -> None:
        super().__init__()
        self.sessions = sessions
        self.origins = {origin.lower().rstrip("/") for origin in origins}
        self.hosts = ({"localhost"} | {host_name(origin) for origin in self.origins}) - {""}
        self.setProtocolOptions(
            maxMessagePayloadSize=MAX_MESSAGE_BYTES,
            maxFramePayloadSize=MAX_MESSAGE_BYTES,
            autoPingInterval=PING_SECONDS,
            autoPingTimeout=PING_SECONDS,
        )

    def host_allowed(self, host: str) -> bool:
        """Whether a request's ``Host`` names this server (not a rebound name of another)."""
        name = host_name(host)
        if name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def origin_allowed(self, origin: str, host: str, secure: bool = False) -> bool:
        """An origin given with --web-origin, or the page's own site as the browser reached it.

        ``host`` is the request's ``Host``; ``secure`` whether it came over TLS.
        """
        origin = origin.lower().rstrip("/")
        if origin in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        scheme = "https" if secure else "http"
        return parts.scheme == scheme and parts.netloc == host.lower() and self.host_allowed(host)


def host_name(host_or_origin: str) -> str:
    """The host name (or address) in a ``Host`` header or an origin, without port or brackets.

    Empty for anything a browser would not send as a host (user info, a path,
    several values).
    """
    netloc = host_or_origin.lower().rpartition("//")[2]
    if any(c in netloc for c in "@/?#\\, "):
        return ""
    try:
        return urlsplit("//" + netloc).hostname or ""
    except ValueError:
        return ""


def header(request: Request, name: bytes) -> str | None:
    """A request header as text, or None if absent.

    Undecodable bytes are replaced; several values are joined with commas, as
    HTTP would read them (and as autobahn does), so two Hosts name no host.
    """
    values = request.requestHeaders.getRawHeaders(name)
    return None if values is None else b",".join(values).decode("utf-8", "replace")


MISDIRECTED = Refusal(421, "This server does not serve that host name.")
FOREIGN_ORIGIN = Refusal(403, "Origin not allowed.")
NOT_A_WEBSOCKET = Refusal(426, "This is a WebSocket endpoint.")


class PageFile(Resource):
    """One file of the page, from memory, with headers that keep the page to itself."""

    isLeaf = True

    def __init__(self, content: bytes, content_type: bytes) -> None:
        super().__init__()
        self.content = content
        self.content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        self.render_HEAD(request)
        return self.content

    def render_HEAD(self, request: Request) -> bytes:
        """The headers alone (twisted.web would log each HEAD request it had to fake)."""
        request.setHeader(b"content-length", b"%d" % len(self.content))
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache")
        return b""


class WebSocketEntry(Resource):
    """``/ws``: checks the upgrade's origin, then hands the connection to autobahn."""

    isLeaf = True

    def __init__(self, factory: ChatWebSocketFactory) -> None:
        super().__init__()
        self.factory = factory

    def render(self, request: Request) -> Any:
        upgrade = header(request, b"upgrade") or ""
        if request.method != b"GET" or upgrade.lower() != "websocket":
            return NOT_A_WEBSOCKET.render(request)
        origin = header(request, b"origin")
        host = header(request, b"host") or ""
        if origin not in (None, "") and not self.factory.origin_allowed(
            origin, host, request.isSecure()
        ):
            log.info(
                "refused {peer}: origin {origin} is not this site",
                peer=describe_peer(request.getClientAddress()),
                origin=origin[:200],
            )
            # One such line per connection: the connection ends with the refusal.
            request.channel.persistent = False
            request.setHeader(b"connection", b"close")
            return FOREIGN_ORIGIN.render(request)
        return self._upgrade(request)

    def _upgrade(self, request: Request) -> object:
        """Hand the connection to a ChatWebSocket, which answers the handshake itself.

        As autobahn's WebSocketResource does, except that the HTTP channel keeps
        the connection and passes it on (see GuardedChannel.hand_over).
        """
        channel = request.channel
        assert isinstance(channel, GuardedChannel)
        socket = self.factory.buildProtocol(request.getClientAddress())
        assert isinstance(socket, ChatWebSocket)
        channel.hand_over(socket)
        head = [request.method + b" " + request.uri + b" HTTP/1.1\r\n"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            head.append(name + b": " + b",".join(values) + b"\r\n")
        socket.dataReceived(b"".join(head) + b"\r\n")
        return NOT_DONE_YET


class WebRoot(Resource):
    """The page's files, and ``/ws``; for a ``Host`` that names this server only."""

    def __init__(self, factory: ChatWebSocketFactory, files: dict[bytes, Resource]) -> None:
        super().__init__()
        self.factory = factory
        self.files = files
        self.websocket = WebSocketEntry(factory)

    def getChildWithDefault(self, name: bytes, request: Request) -> Resource:
        if not self.factory.host_allowed(header(request, b"host") or ""):
            return MISDIRECTED
        if name == b"ws":
            return self.websocket
        if request.postpath:  # nothing has children
            return NOT_FOUND
        return self.files.get(name, NOT_FOUND)

    def render(self, request: Request) -> bytes:
        """Only reached for a request without a path (``GET *``, say)."""
        return NOT_FOUND.render(request)


def page_files() -> dict[bytes, Resource]:
    """The page's files, read once (they are small, and served from memory)."""
    folder = resources.files("chatd.fronts") / "webpage"
    files: dict[bytes, Resource] = {
        name.encode(): PageFile((folder / name).read_bytes(), content_type)
        for name, content_type in PAGE_FILES.items()
    }
    files[b""] = files[b"index.html"]
    # Asked for by browsers (and feed readers, bookmarks ...) that never read the
    # page's <link rel="icon">: the same icon, rather than a 404 in every log.
    files[b"favicon.ico"] = files[b"favicon.svg"]
    return files


def web_site(sessions: Sessions, origins: list[str]) -> Site:
    """The page at ``/`` and the WebSocket at ``/ws``."""
    root = WebRoot(ChatWebSocketFactory(sessions, origins), page_files())
    return GuardedSite(root, reactor=sessions.clock)
