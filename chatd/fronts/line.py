"""The line front end (``--port``, ``--json-port``): bytes from telnet, nc, chatd-client or
a bot, split into lines.

This module only frames: each line goes to the connection's
:class:`~chatd.session.ChatSession`, which does everything else, and the
session's output goes straight to the transport. The output is protocol lines
(:mod:`chatd.fronts.lineformat`) or, in bot mode (``/format json``, or from the
start on a ``--json-port``), one JSON object per line both ways
(:mod:`chatd.fronts.jsonformat` out, :mod:`chatd.fronts.jsoninput` in): the
session switches between the two :data:`FORMATS` itself, since ``/format`` is
a line like any other, in order, behind the flood gate.

Lines end in LF or CRLF. LineReceiver does the splitting, with two changes a chat
daemon needs: telnet negotiation is filtered out first, and an overlong line is
dropped (the session says so) instead of closing the connection: the stream
resynchronises at the next line end.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConsumer, ITCPTransport
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.events import Error
from chatd.fronts import jsonformat, jsoninput, lineformat
from chatd.fronts.telnet import TelnetFilter
from chatd.interfaces import IConnection
from chatd.session import ChatSession, Sessions
from chatd.wireformats import WireFormat

# What /format switches a line connection between.
FORMATS: dict[str, WireFormat] = {
    "line": WireFormat(lineformat.encode),
    "json": WireFormat(jsonformat.encode, jsoninput.read_line),
}


@implementer(IConnection)
class LineConnection(LineReceiver):
    """One byte-stream connection: framing for its chat session."""

    delimiter = b"\n"
    # TCP, TLS or UNIX (which alone lacks setTcpNoDelay): each has a peer, can be
    # aborted and takes a producer. Typed once here rather than cast at each use.
    transport: ITCPTransport
    session: ChatSession

    # The format the connection starts in, a key of FORMATS (a class attribute: an
    # instance's would cost every idle connection memory).
    first_format = "line"

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        # One byte of slack for the CR of a CRLF ending; the session checks exactly.
        self.MAX_LENGTH = sessions.config.max_line_bytes + 1
        self._telnet = TelnetFilter()
        self._closed = False
        self._skipping_to_line_end = False
        self._rest_after_long_line = b""

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.session = self._sessions.open(
            self, FORMATS[self.first_format].encode, formats=FORMATS
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.connection_lost(clean=reason.check(ConnectionDone) is not None)

    # IConnection: what the session asks of its connection. (Properties, not
    # attributes: each costs every idle connection memory.)

    @property
    def address(self) -> IAddress:
        return self.transport.getPeer()

    @property
    def consumer(self) -> IConsumer:
        """The transport itself: nothing between the hub's delivery and the socket."""
        return cast(IConsumer, self.transport)

    def close(self) -> None:
        self._closed = True
        self.transport.loseConnection()

    def abort(self) -> None:
        self._closed = True
        self.transport.abortConnection()

    def discard_pending_input(self) -> int:
        """Forget the input not split into lines yet; return how many lines it held."""
        pending = self._buffer + self._rest_after_long_line
        self._buffer = self._rest_after_long_line = b""
        lines = pending.count(self.delimiter)
        if pending and not pending.endswith(self.delimiter):
            lines += 1
            self._skipping_to_line_end = True
        return lines

    # Framing.

    def dataReceived(self, data: bytes) -> None:
        data = self._telnet.feed(data)
        if self._skipping_to_line_end:
            line_end = data.find(b"\n")
            if line_end < 0:
                self.session.more_of_long_line(len(data))
                return
            self.session.more_of_long_line(line_end + 1)
            self._skipping_to_line_end = False
            data = data[line_end + 1 :]
        while not self._closed:
            super().dataReceived(data)
            data, self._rest_after_long_line = self._rest_after_long_line, b""
            if not data:
                break

    def lineLengthExceeded(self, line: bytes) -> None:
        """Drop the overlong line, tell the session, and go on at the next line end.

        LineReceiver hands over the whole unprocessed buffer and forgets it; what
        follows the overlong line is fed back in by dataReceived.
        """
        long_line, line_end, rest = line.partition(b"\n")
        if line_end:
            self._rest_after_long_line = rest
        else:
            self._skipping_to_line_end = True
        self.session.line_too_long(len(long_line) + len(line_end))

    def lineReceived(self, line: bytes) -> None:
        self.session.line_received(line)


class JSONLineConnection(LineConnection):
    """A ``--json-port`` connection: in bot mode from the greeting on."""

    first_format = "json"


def refusal_json(why: str) -> bytes:
    """A refusal at accept time as the JSON ``error`` event a ``--json-port`` bot reads."""
    return jsonformat.encode(Error(why))


class LineFactory(ServerFactory):
    """Builds a LineConnection per accepted connection, each with a session of ``sessions``;
    with ``json`` (for --json-port), one that speaks JSON from the start.

    Which connections get this far is decided at accept time by the
    :class:`~chatd.admission.AdmittingFactory` around it.
    """

    noisy = False  # the listening port already logs where it listens

    def __init__(self, sessions: Sessions, json: bool = False) -> None:
        self.sessions = sessions
        self.connection_type = JSONLineConnection if json else LineConnection

    def buildProtocol(self, addr: IAddress | None) -> LineConnection:
        return self.connection_type(self.sessions)
