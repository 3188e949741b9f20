"""The web front end (``--web ENDPOINT``): a chat page and a WebSocket, on one port.

``twisted.web`` serves the page (static files shipped in ``chatd/webpage/``) and
``/ws``, where ``autobahn`` speaks WebSocket. Behind the WebSocket is the same
session the line protocol runs, :class:`~chatd.protocol.ChatProtocol`, with two
differences: lines arrive in WebSocket text messages (one or more per message,
each checked like a line from telnet: length, flood control, alias rules) and
events leave as JSON (:mod:`chatd.jsonformat`). So browser users and line users
are in the same rooms under the same rules, and the same connection limits.

Browsers send an ``Origin`` header; a page from another site may not open a
chat session in its visitor's name, so the origin must be this server's own
(the ``Host`` the browser asked for) or one given with ``--web-origin``. Clients
that send no origin (bots) are let in; ``null`` (a sandboxed frame, a local file)
is not, since any site can produce it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.resource import IResource
from twisted.web.server import Site
from twisted.web.static import File

from chatd import jsonformat
from chatd.events import Error
from chatd.protocol import ChatFactory, WholeLineSession

# A message may carry a paste of several lines; each is still held to --max-line-bytes.
MAX_MESSAGE_BYTES = 64 * 1024
PING_SECONDS = 30.0
log = Logger(namespace="chatd.web")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class WebSession(WholeLineSession):
    """A chat session fed by WebSocket messages and answering in JSON."""

    encode = staticmethod(jsonformat.encode)

    def feed(self, payload: bytes) -> None:
        """Handle each line of a text message as a line of the chat protocol, in order."""
        self.lines_received(payload.removesuffix(b"\n").split(b"\n"))


class WebSocketTransport:
    """What a session writes to, turned into WebSocket messages on the real connection.

    Backpressure works as on plain TCP: the session's send queue registers with
    the TCP transport under the WebSocket, which pauses it when full.
    """

    def __init__(self, socket: ChatWebSocket) -> None:
        self._socket = socket
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._socket.sendMessage(data, isBinary=False)

    def getPeer(self) -> IAddress:
        return self._socket.transport.getPeer()  # type: ignore[no-any-return]

    def getHost(self) -> IAddress:
        return self._socket.transport.getHost()  # type: ignore[no-any-return]

    def setTcpNoDelay(self, enabled: bool) -> None:
        set_no_delay = getattr(self._socket.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(enabled)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        transport = self._socket.transport
        if getattr(transport, "producer", None) is not None:
            # twisted.web's channel, which handed the connection over to the WebSocket.
            transport.unregisterProducer()
        transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._socket.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._socket.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._socket.transport.resumeProducing()

    def loseConnection(self) -> None:
        """Close with the WebSocket closing handshake, after what was written."""
        self.disconnecting = True
        self._socket.sendClose(1000)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._socket.transport.abortConnection()


class ChatWebSocket(WebSocketServerProtocol):
    """One browser (or bot) connection: checks its origin, then runs a WebSession."""

    factory: ChatWebSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self.session: Any = None
        self._lost = False

    def onConnect(self, request: Any) -> None:
        host = request.headers.get("host", "")  # request.host has lost the port
        if request.origin not in (None, "") and not self.factory.origin_allowed(
            request.origin, host
        ):
            log.info("refused {origin}: not this site", origin=request.origin)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "origin not allowed")

    def onOpen(self) -> None:
        self.session = self.factory.chat.admit(self.transport.getPeer(), WebSession)
        self.session.makeConnection(WebSocketTransport(self))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isinstance(self.session, WebSession):
            return
        if isBinary:
            self.session.reply(Error("Send text messages."))
            return
        self.session.feed(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if isinstance(self.session, WebSession) and not self._lost:
            self._lost = True
            lost = ConnectionDone() if wasClean else ConnectionLost()
            self.session.connectionLost(Failure(lost))


class ChatWebSocketFactory(WebSocketServerFactory):
    """Makes ChatWebSockets for one chat factory, and knows which origins may use them."""

    protocol = ChatWebSocket

    def __init__(self, chat: ChatFactory, origins: list[str]) -> None:
        super().__init__()
        self.chat = chat
        self.origins = {origin.lower().rstrip("/") for origin in origins}
        self.setProtocolOptions(
            maxMessagePayloadSize=MAX_MESSAGE_BYTES,
            maxFramePayloadSize=MAX_MESSAGE_BYTES,
            autoPingInterval=PING_SECONDS,
            autoPingTimeout=PING_SECONDS,
        )

    def origin_allowed(self, origin: str, host: str) -> bool:
        """The page's own site (scheme aside), or an origin given with --web-origin."""
        origin = origin.lower().rstrip("/")
        return origin in self.origins or urlsplit(origin).netloc == host.lower()


class PageFile(File):
    """Static files with headers that keep the page to itself (no framing, no foreign code)."""

    childNotFound = pages.notFound()

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return super().render(request)  # type: ignore[no-any-return]

    def directoryListing(self) -> IResource:
        return pages.forbidden()


def web_site(chat: ChatFactory, origins: list[str]) -> Site:
    """The page at ``/`` and the WebSocket at ``/ws``."""
    root = PageFile(str(resources.files("chatd") / "webpage"))
    root.indexNames = ["index.html"]
    root.putChild(b"ws", WebSocketResource(ChatWebSocketFactory(chat, origins)))
    site = Site(root)
    site.noisy = False
    return site
