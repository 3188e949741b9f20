"""HTTP for chatd's two small web sites (``--web`` and ``--metrics``), with tight limits.

Both sites answer a few GET requests (a page, three static files, a WebSocket
upgrade, a metrics scrape). ``twisted.web``'s defaults suit a general web server
instead: a request body of any size is spooled to a temporary file, a client may
take as long as it likes to send a request head as long as it sends a byte now and
then, a connection may stay idle for minutes, and every request is written to the
access log. So the channel here:

- refuses any request body (a ``Content-Length`` above 0, or a
  ``Transfer-Encoding``) as soon as its header is read, before a byte of the body:
  405 for a method other than GET and HEAD, 413 otherwise; then it closes;
- allows a request head ``MAX_HEAD_BYTES``, a line of it ``MAX_HEAD_LINE_BYTES``,
  and ``MAX_HEADERS`` headers;
- gives a client ``HEAD_DEADLINE_SECONDS`` to send a complete request head,
  counted from the connection or from the end of the previous request, however
  slowly it trickles in (an HTTP slowloris), and closes a keep-alive connection
  idle for ``IDLE_TIMEOUT_SECONDS``;
- keeps no access log (errors are still logged).

Once a request has become a WebSocket, none of this applies any more: the head
deadline stopped when the head was complete, and the WebSocket keeps its own
ping and timeouts.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

log = Logger(namespace="chatd.httpsite")
HEAD_DEADLINE_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 15.0
# Seconds a timed-out client gets to take its answer before the connection is aborted.
ABORT_AFTER_SECONDS = 5
# A request head, and one line of it (browsers send every cookie of the host name).
MAX_HEAD_BYTES = 16 * 1024
MAX_HEAD_LINE_BYTES = 8 * 1024
MAX_HEADERS = 50
BODILESS_METHODS = (b"GET", b"HEAD")


class GuardedChannel(HTTPChannel):
    """An HTTP channel that takes no request bodies and waits only so long for a head."""

    maxHeaders = MAX_HEADERS
    totalHeadersSize = MAX_HEAD_BYTES
    MAX_LENGTH = MAX_HEAD_LINE_BYTES
    _head_deadline: IDelayedCall | None = None
    _abort_call: IDelayedCall | None = None
    upgraded: IProtocol | None = None  # the WebSocket, once handed over

    @property
    def _socket(self) -> ITCPTransport:
        """The connection's transport (TCP, TLS or UNIX: each can be aborted)."""
        return cast(ITCPTransport, self.transport)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._start_head_deadline()

    def hand_over(self, protocol: IProtocol) -> None:
        """Give the rest of the connection to ``protocol`` (a WebSocket), HTTP timers off.

        The channel stays the transport's protocol and passes everything on, so
        whatever wraps the channel (TLS, accept-time admission) still sees the
        data and the close. (autobahn's own takeover replaces the transport's
        protocol, and a wrapper that is not a ProtocolWrapper never hears of
        the close: its connection slot was never given back.) The HTTP timers
        are off already: the head deadline stopped when the head was complete,
        and twisted.web's idle timeout is off while a request is being answered,
        which this one never finishes being.
        """
        self.upgraded = protocol
        protocol.makeConnection(self._socket)

    def dataReceived(self, data: bytes) -> None:
        if self.upgraded is not None:
            self.upgraded.dataReceived(data)
        else:
            super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self.upgraded is None:
            super().rawDataReceived(data)
        elif data:  # what followed the upgrade request in the same read
            self.upgraded.dataReceived(data)

    def headerReceived(self, line: bytes) -> bool:
        """Refuse a request that announces a body, before the body is read."""
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding" or (
            name == b"content-length" and value.strip().lstrip(b"0")
        ):
            if self._command in BODILESS_METHODS:
                self._refuse(b"413 Content Too Large")
            else:
                self._refuse(b"405 Method Not Allowed", b"Allow: GET, HEAD\r\n")
            return False
        return super().headerReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line of the head is too long: say so (LineReceiver would just close)."""
        self._refuse(b"431 Request Header Fields Too Large")

    def allHeadersReceived(self) -> None:
        self._stop_head_deadline()
        super().allHeadersReceived()

    def requestDone(self, request: object) -> None:
        # Started first: a pipelined request already buffered is parsed (and
        # stops the deadline) inside requestDone.
        if self.persistent:
            self._start_head_deadline()
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_head_deadline()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        if self.upgraded is not None:
            self.upgraded.connectionLost(reason)
        super().connectionLost(reason)

    def timeoutConnection(self) -> None:
        """Close, and abort if the client will not take the close: as twisted.web does,
        but without its log line for every keep-alive connection that goes idle."""
        if self._abort_call is None:
            self._abort_call = self.callLater(ABORT_AFTER_SECONDS, self._socket.abortConnection)
        self.loseConnection()

    def _refuse(self, status: bytes, headers: bytes = b"") -> None:
        self._socket.write(
            b"HTTP/1.1 " + status + b"\r\n" + headers + b"Connection: close\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self._stop_head_deadline()
        self.loseConnection()

    def _start_head_deadline(self) -> None:
        self._stop_head_deadline()
        self._head_deadline = self.callLater(HEAD_DEADLINE_SECONDS, self._head_too_slow)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        socket = self._socket
        if getattr(socket, "disconnecting", False):  # refused already, the answer not taken
            socket.abortConnection()
            return
        log.debug("{peer}: no complete request head in time", peer=socket.getPeer())
        socket.write(
            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        self.timeoutConnection()


class Refusal(Resource):
    """A short plain-text answer with an error status, to any method and any path below.

    Unlike twisted.web's error pages, it answers HEAD itself: twisted.web logs
    every HEAD request whose resource returns a body.
    """

    isLeaf = True

    def __init__(self, code: int, text: str) -> None:
        super().__init__()
        self.code = code
        self.text = text.encode() + b"\n"

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(self.text))
        return b"" if request.method == b"HEAD" else self.text


NOT_FOUND = Refusal(404, "Not found.")


class GuardedSite(Site):
    """A site on GuardedChannels, with a short idle timeout and no access log.

    The access log is off because anyone who can reach the port could fill
    chatd's log with requests (and a scrape every few seconds would anyway).
    """

    # Plain HTTP/1.1: no HTTP/2, which nothing here needs. (twisted.web types this
    # as its own HTTP/1.1-or-2 wrapper; a channel class is what buildProtocol calls.)
    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(self, resource: IResource, reactor: IReactorTime | None = None) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT_SECONDS, reactor=reactor)
        self.noisy = False

    def startFactory(self) -> None:
        """Open no access log (twisted.web's default, under twistd, is chatd's own log)."""

    def stopFactory(self) -> None:
        """Nothing to close: no access log was opened."""
