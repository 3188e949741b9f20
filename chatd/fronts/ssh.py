"""The SSH front end (``--ssh ENDPOINT``): ``ssh -p 2222 alice@host`` and chat.

``twisted.conch`` runs the SSH server. The SSH user name is the alias asked
for; behind the terminal runs a :class:`~chatd.session.ChatSession`, as
behind every front end, so the alias rules, registered aliases (their password
is asked for in the terminal), commands, limits and rooms are those of every
other front end. The terminal has a line editor
(:mod:`chatd.fronts.editor`: Unicode, wrapping, readline keys, history):
incoming lines are written above the line being typed, which is then drawn
again, so typing is never interrupted; a password typed at the chat's prompt
is masked and never kept in the history.

Guests get in with any public key, or with any password. The owner of a
registered alias gets in with a key bound to it (``/sshkey``) or with its
password at the SSH prompt; any other key for a registered alias leads to the
chat's own password prompt. The host key is made on first start, in the data
directory, and reused, so clients can pin it.

An SSH connection carries at most one chat, in a session channel with a
terminal; another shell on it (OpenSSH multiplexing), ``ssh -T`` and
``ssh host command`` get a message and exit status 1. conch itself sets no
useful time limits and logs freely, so this module adds deadlines (logging
in, then asking for a shell), one login check at a time per connection,
bounded output (the channel window *and* the TCP write buffer pause the
session's send queue), and quiet logs: conch's own per-connection chatter is
dropped, and each connection this module closes says why in one line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError, ValidPublicKey
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.connection import (
    EXTENDED_DATA_STDERR,
    OPEN_ADMINISTRATIVELY_PROHIBITED,
    SSHConnection,
)
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.session import parseRequest_pty_req, parseRequest_window_change
from twisted.conch.ssh.transport import (
    DISCONNECT_BY_APPLICATION,
    DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
    DISCONNECT_PROTOCOL_ERROR,
    SSHServerTransport,
)
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProducer,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.accounts import WRONG_PASSWORD_DELAY_SECONDS
from chatd.admission import describe_peer, peer_host
from chatd.files import create_private
from chatd.fronts import lineformat
from chatd.fronts.editor import Keyboard, LineEditor
from chatd.interfaces import IConnection
from chatd.model import Account, Ban
from chatd.passwords import PasswordsBusy
from chatd.session import MAX_LINES_DURING_CHECK, ChatSession, Sessions
from chatd.text import utc_stamp

HOST_KEY_FILE = "ssh_host_ed25519_key"
# From TCP connect to authenticated (version and key exchange included).
AUTH_DEADLINE_SECONDS = 30.0
# From authenticated (or the end of a chat) to the next shell request.
SHELL_DEADLINE_SECONDS = 30.0
# A peer told to go that does not read the goodbye is cut off after this long.
DISCONNECT_GRACE_SECONDS = 5.0
# Failed password logins before the connection is dropped (conch's default is 20).
MAX_AUTH_FAILURES = 6
# Userauth requests of any kind ("none", key queries...) one connection may make.
MAX_AUTH_REQUESTS = 30
# Lines kept for the up arrow, and bytes of an escape sequence before it is dropped.
MAX_HISTORY_LINES = 100
MAX_ESCAPE_BYTES = 32
DEFAULT_TERMINAL_SIZE = (80, 24)  # columns, rows
# Output waiting for the client's window past which its typing is dropped: conch
# opens the input window again by itself, and every key typed is echoed.
MAX_UNSENT_BYTES = 64 * 1024
# A channel whose packets may carry less would cost an SSH packet per few bytes
# of chat (OpenSSH offers 32 KiB).
MIN_CHANNEL_PACKET_BYTES = 1024
# A chat's channel, and one more to be told why it cannot have a second chat.
MAX_CHANNELS_PER_CONNECTION = 2
ONE_CHAT_PER_CONNECTION = b"One chat per SSH connection: connect again for another.\r\n"
NO_TERMINAL = b"chatd needs a terminal: run ssh without -T (or with -t).\r\n"
NO_COMMANDS = b"chatd runs no commands: run ssh without one to chat.\r\n"
log = Logger(namespace="chatd.ssh")


@implementer(ILogObserver)
def _unexpected_failures_only(event: dict[str, Any]) -> None:
    """Pass on conch's tracebacks of real faults; drop the rest of its per-connection talk.

    conch logs a line or more for every channel, request, key exchange and
    disconnect (a normal logout at error level), which a client can repeat at
    will. What a client can cause is answered here instead, in one line a
    connection; a failure that is not a ConchError (conch's way of refusing)
    is a fault worth its traceback.
    """
    failure = event.get("log_failure")
    critical = event.get("log_level") == LogLevel.critical
    if critical and failure is not None and not failure.check(ConchError, UnauthorizedLogin):
        globalLogPublisher(event)


CONCH_LOG = Logger(observer=_unexpected_failures_only)


@implementer(IPushProducer)
class Flow:
    """Holds the chat session's send queue while the client is not taking what it is sent.

    Two things say so: the channel window (the client's SSH flow control) and
    the connection's TCP write buffer (a client may open a huge window and
    then stop reading the socket). Registered on the TCP transport, this also
    stops reading from a client whose output is stuck, since all it sends
    (typing, requests) makes more output. The session's BoundedSender keeps
    what waits, and cuts the client off past --sendq-bytes.
    """

    def __init__(self, tcp: Any) -> None:
        self._tcp = tcp
        self._holds: set[str] = set()
        self._producer: IPushProducer | None = None

    def attach(self, producer: IPushProducer | None) -> None:
        """Pause and resume ``producer`` (the session's send queue) from now on."""
        self._producer = producer
        if producer is not None and self._holds:
            producer.pauseProducing()

    def hold(self, why: str) -> None:
        """``why`` ("window" or "tcp") says stop."""
        held = bool(self._holds)
        self._holds.add(why)
        if not held and self._producer is not None:
            self._producer.pauseProducing()

    def release(self, why: str) -> None:
        """``why`` says go on; the queue resumes once nothing holds it."""
        if why not in self._holds:
            return
        self._holds.discard(why)
        if not self._holds and self._producer is not None:
            self._producer.resumeProducing()

    def pauseProducing(self) -> None:
        """The TCP write buffer is full."""
        self._tcp.pauseProducing()
        self.hold("tcp")

    def resumeProducing(self) -> None:
        """The TCP write buffer has drained."""
        self._tcp.resumeProducing()
        self.release("tcp")

    def stopProducing(self) -> None:
        """The connection is gone; its channels end the session."""


class ChatSSHTransport(SSHServerTransport):
    """One SSH connection: deadlines, flow control on its socket, and quiet logs."""

    _log = CONCH_LOG
    factory: ChatSSHFactory

    @property
    def socket(self) -> ITCPTransport:
        """The connection SSH runs on (TCP or UNIX; TLS is not offered)."""
        return cast(ITCPTransport, self.transport)

    @property
    def _socket_consumer(self) -> IConsumer:
        return cast(IConsumer, self.transport)

    def connectionMade(self) -> None:
        self.peer = describe_peer(self.socket.getPeer())
        self.host: str | None = peer_host(self.socket.getPeer())  # IPv4-mapped: IPv4
        self.lost = False
        self.dropped = False
        self.chatted = False
        self._deadline: IDelayedCall | None = None
        self._abort: IDelayedCall | None = None
        # conch registers nothing on its socket; the session's send queue needs to know.
        self.flow = Flow(self.transport)
        self._socket_consumer.registerProducer(self.flow, True)
        self._set_deadline(
            AUTH_DEADLINE_SECONDS, f"not logged in within {AUTH_DEADLINE_SECONDS:g} seconds"
        )
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """conch raises on malformed messages: answer with a disconnect, not a traceback."""
        if self.dropped:
            return
        try:
            super().dataReceived(data)
        except Exception as problem:
            self.drop(
                f"unreadable SSH message ({type(problem).__name__})",
                DISCONNECT_PROTOCOL_ERROR,
                b"unreadable message",
            )

    def logged_in(self) -> None:
        """Authenticated: now a shell must be asked for in time."""
        self._set_deadline(
            SHELL_DEADLINE_SECONDS, f"no shell asked for within {SHELL_DEADLINE_SECONDS:g} seconds"
        )

    def shell_opened(self) -> None:
        """A chat started: it has its own alias and idle limits."""
        self.chatted = True
        self._cancel_deadline()

    def channel_closed(self) -> None:
        """A channel went: a connection that stays without a chat is dropped in time."""
        if not self.lost and not self.dropped and self._deadline is None:
            self.logged_in()

    def drop(self, why: str, code: int = DISCONNECT_BY_APPLICATION, text: bytes = b"") -> None:
        """Log ``why`` (one line) and disconnect, telling the client ``text`` (or ``why``)."""
        if self.dropped or self.lost:
            return
        log.info("{peer}: SSH connection closed: {why}", peer=self.peer, why=why)
        self.dropped = True
        self.sendDisconnect(code, text or why.encode("utf-8", "replace"))

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        """Say goodbye and close; a client that does not read it is cut off soon after."""
        if not self.dropped:  # conch's own reasons (too many failures, bad MAC...)
            log.info(
                "{peer}: SSH connection closed: {why}",
                peer=self.peer,
                why=desc.decode("utf-8", "replace"),
            )
            self.dropped = True
        self._cancel_deadline()
        # A paused producer would keep the socket open after its buffer drained.
        self._socket_consumer.unregisterProducer()
        super().sendDisconnect(reason, desc)
        if not self.lost and self._abort is None:
            self._abort = self.factory.sessions.clock.callLater(
                DISCONNECT_GRACE_SECONDS, self.socket.abortConnection
            )

    def ssh_DISCONNECT(self, packet: bytes) -> None:
        self.dropped = True
        self._socket_consumer.unregisterProducer()
        super().ssh_DISCONNECT(packet)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        """The client said goodbye: an ordinary logout, not worth a log line."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = True
        self._cancel_deadline()
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None
        super().connectionLost(reason)

    def _set_deadline(self, seconds: float, why: str) -> None:
        self._cancel_deadline()
        self._deadline = self.factory.sessions.clock.callLater(seconds, self._expired, why)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, why: str) -> None:
        self._deadline = None
        self.drop(why)


class PeerUsernamePassword(UsernamePassword):
    """A password login, with the address it comes from (for the accounts' backoff)."""

    def __init__(self, username: bytes, password: bytes, host: str | None) -> None:
        super().__init__(username, password)
        self.host = host


def ban_message(ban: Ban) -> str:
    """What a banned user is told, as the line protocol tells it."""
    until = "" if ban.expires_at is None else f" until {utc_stamp(ban.expires_at)}"
    return f"You are banned from this server{until}: {ban.reason}"


class ChatUserAuth(SSHUserAuthServer):
    """conch's login service, one check at a time, with bans and few failures allowed.

    conch starts a check for each request as it arrives, so a client could
    pipeline many password guesses; here a request that comes while one is
    being checked waits its turn.
    """

    _log = CONCH_LOG
    attemptsBeforeDisconnect = MAX_AUTH_FAILURES
    # PasswordChecker already makes a wrong password wait.
    passwordDelay = 0
    transport: ChatSSHTransport

    def serviceStarted(self) -> None:
        self.clock = self.transport.factory.sessions.clock
        self._checking = False
        self._waiting: list[bytes] = []
        self._requests = 0
        super().serviceStarted()

    def ssh_USERAUTH_REQUEST(self, packet: bytes) -> None:
        self._requests += 1
        if self._requests > MAX_AUTH_REQUESTS:
            self.transport.drop(
                "too many authentication requests", DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE
            )
            return
        self._waiting.append(packet)
        self._next()

    def _next(self) -> None:
        if self._checking or not self._waiting:
            return
        if self.transport.lost or self.transport.dropped or self.transport.service is not self:
            self._waiting.clear()  # gone, going, or logged in: the rest is moot
            return
        self._checking = True
        checked = maybeDeferred(self._check, self._waiting.pop(0))
        checked.addErrback(self._unreadable)
        checked.addBoth(self._checked)

    def _check(self, packet: bytes) -> Deferred[Any] | None:
        user = getNS(packet)[0]
        alias = user.decode("utf-8", "replace")
        ban = self.transport.factory.sessions.hub.banned(host=self.transport.host, alias=alias)
        if ban is not None:
            self.transport.drop(
                f"login as {alias} refused: banned ({ban.mask})",
                DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                ban_message(ban).encode("utf-8", "replace"),
            )
            return None
        return super().ssh_USERAUTH_REQUEST(packet)

    def _unreadable(self, failure: Failure) -> None:
        self.transport.drop(
            f"unreadable login request ({failure.type.__name__})", DISCONNECT_PROTOCOL_ERROR
        )

    def _checked(self, result: object) -> None:
        self._checking = False
        self._next()

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        """As conch's, with the client's address in the credentials."""
        password = getNS(packet[1:])[0]
        credentials = PeerUsernamePassword(self.user, password, self.transport.host)
        return self.portal.login(credentials, None, IConchUser).addErrback(self._ebPassword)

    def _cbFinishedAuth(self, result: tuple[Any, Any, Any]) -> None:
        if self.transport.lost or self.transport.dropped:
            return  # the client left (or was dropped) during the check: nothing starts
        super()._cbFinishedAuth(result)
        self.transport.logged_in()


class ChatConnection(SSHConnection):
    """conch's connection service, with its per-channel log lines dropped."""

    _log = CONCH_LOG


class ChannelTransport:
    """What the terminal writes to: the channel."""

    def __init__(self, channel: ChatChannel) -> None:
        self._channel = channel

    def write(self, data: bytes) -> None:
        self._channel.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self._channel.write(b"".join(data))

    def loseConnection(self) -> None:
        self._channel.loseConnection()


class ChatServerProtocol(Keyboard):
    """The editor's key parser, with escape sequences bounded (insults buffers them
    without limit)."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.state == b"bracket-escaped" and len(self.escBuf) > MAX_ESCAPE_BYTES:
            self.state = b"data"
            self.escBuf = []


class ChatChannel(SSHChannel):
    """One session channel: a terminal running a chat, or a refusal of anything else.

    All that belongs to one chat lives here, per channel (conch's own session
    object is one per login, shared by every channel of a connection).
    """

    name = b"session"
    _log = CONCH_LOG
    conn: ChatConnection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._size = DEFAULT_TERMINAL_SIZE
        self._has_pty = False
        self._started = False
        self._gone = False
        self.terminal: ChatServerProtocol | None = None

    @property
    def ssh_transport(self) -> ChatSSHTransport:
        """The SSH connection this channel belongs to."""
        return cast(ChatSSHTransport, self.conn.transport)

    @property
    def _user(self) -> ChatUser:
        return cast(ChatUser, self.avatar)

    def requestReceived(self, requestType: bytes, data: bytes) -> int:
        """Answer the requests a chat needs; refuse the rest without a log line."""
        handler = {
            b"pty-req": self._pty_requested,
            b"window-change": self._window_changed,
            b"shell": self._shell_requested,
            b"exec": self._exec_requested,
        }.get(requestType)
        if handler is None:
            return 0
        try:
            return handler(data)
        except (struct.error, IndexError, ValueError):  # a malformed request
            return 0

    def _pty_requested(self, data: bytes) -> int:
        _term, (rows, columns, _, _), _modes = parseRequest_pty_req(data)
        self._has_pty = True
        self._size = (columns, rows)
        return 1

    def _window_changed(self, data: bytes) -> int:
        rows, columns, _, _ = parseRequest_window_change(data)
        self._size = (columns, rows)
        # A resize redraws the input line: while the client takes no output, only
        # the size is noted (redrawn once the window opens), or a flood of resizes
        # would pile up redraws without bound, past the send queue.
        if len(self.buf) <= MAX_UNSENT_BYTES:
            self._resize_terminal()
        return 1

    def _resize_terminal(self) -> None:
        if self.terminal is not None and self.terminal.terminalProtocol is not None:
            self.terminal.terminalProtocol.terminalSize(*self._size)

    def _shell_requested(self, data: bytes) -> int:
        if self._started:
            return 0
        self._started = True
        if self.ssh_transport.chatted:
            # Each chat counts against the connection limits once, when its
            # connection is accepted: a chat per channel would get round them.
            self._refuse(ONE_CHAT_PER_CONNECTION)
            return 1
        if not self._has_pty:
            self._refuse(NO_TERMINAL)
            return 1
        self.ssh_transport.shell_opened()
        peer = self.ssh_transport.socket.getPeer()
        self.terminal = ChatServerProtocol(
            ChatTerminal, self._user.sessions, self._user.login, peer, self
        )
        self.terminal.makeConnection(ChannelTransport(self))
        if self.terminal.terminalProtocol is not None:
            self.terminal.terminalProtocol.terminalSize(*self._size)
        return 1

    def _exec_requested(self, data: bytes) -> int:
        if self._started:
            return 0
        self._started = True
        self._refuse(NO_COMMANDS)
        return 1

    def _refuse(self, message: bytes) -> None:
        """Say why on stderr, exit with status 1, close: after the request's reply."""
        self._user.sessions.clock.callLater(0, self._say_and_close, message)

    def _say_and_close(self, message: bytes) -> None:
        if self._gone or self.closing:
            return
        self.writeExtended(EXTENDED_DATA_STDERR, message)
        self.conn.sendRequest(self, b"exit-status", struct.pack(">L", 1))
        self.conn.sendEOF(self)
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        """Typing, for the terminal; dropped while the client does not take its output."""
        if self.terminal is not None and len(self.buf) <= MAX_UNSENT_BYTES:
            self.terminal.dataReceived(data)

    def eofReceived(self) -> None:
        """The client will send no more: close the channel (the chat then ends).

        A refusal on its way closes the channel itself, once it is said.
        """
        if self.terminal is not None or not self._started:
            self.loseConnection()

    def closeReceived(self) -> None:
        """The client closed: close at once, dropping what its window still holds back.

        conch's default waits for the window to let that out first, which a
        client that has closed never does: the chat would never end.
        """
        self.buf = b""
        self.extBuf = []
        self.conn.sendClose(self)

    def stopWriting(self) -> None:
        """The client's window is shut: the chat's output waits (a refusal just buffers)."""
        if self.terminal is not None:
            self.ssh_transport.flow.hold("window")

    def startWriting(self) -> None:
        if self.terminal is not None:
            self.ssh_transport.flow.release("window")
            self._resize_terminal()  # a no-op unless a resize came while it was shut

    def abort(self) -> None:
        """Cut the whole connection (a stuck client): everything on it ends at once."""
        self.ssh_transport.socket.abortConnection()

    def closed(self) -> None:
        """The channel is gone, however it went: the terminal and its chat end."""
        self._gone = True
        terminal, self.terminal = self.terminal, None
        if terminal is not None:
            self.ssh_transport.flow.release("window")
            terminal.connectionLost(Failure(ConnectionDone()))
        self.ssh_transport.channel_closed()


@implementer(IConnection, IConsumer)
class ChatTerminal(LineEditor):
    """The line editor of one SSH user, wired to their chat session.

    Lines typed go to the session; what the session sends is written above the
    line being typed (the terminal is the session's consumer). A registered
    alias's password, typed at the chat's own prompt, is masked and kept out of
    the editor's history.
    """

    def __init__(
        self, sessions: Sessions, login: SSHLogin, peer: IAddress, channel: ChatChannel
    ) -> None:
        super().__init__(sessions.config.max_line_bytes, MAX_HISTORY_LINES)
        self._sessions = sessions
        self._login = login
        self.address = peer
        self.consumer: IConsumer = self
        self._channel = channel
        self.session: ChatSession | None = None
        # Lines typed before the alias is handed over (while the SSH key is looked
        # up): a password typed ahead must reach the password prompt, not the alias's.
        self._typed_ahead: list[str] | None = []

    def connectionMade(self) -> None:
        super().connectionMade()
        session = self._sessions.open(self, lineformat.encode)
        self.session = session
        ensureDeferred(self._take_alias(session)).addErrback(
            lambda failure: log.failure("SSH login of {alias}", failure, alias=self._login.alias)
        )

    async def _take_alias(self, session: ChatSession) -> None:
        """Straight in if SSH proved the alias is theirs (its password, or a key bound
        to it with /sshkey); else as if the alias were typed at the prompt."""
        accounts = self._sessions.hub.accounts
        alias, account = self._login.alias, self._login.account
        key = self._login.public_key
        if account is None and key is not None and accounts is not None:
            try:
                account = await accounts.key_login(alias, key)
            except Exception as problem:  # the store cannot answer (Redis down, disk error)
                # As if typed at the prompt: a registered alias then asks for its
                # password, and the password check says it cannot be done now.
                log.warn("cannot check the SSH key of {alias}: {p}", alias=alias, p=problem)
            if self.session is not session:
                return  # the connection went during the check: nobody to join
        if account is not None:
            session.log_in_verified(alias, account)
        else:
            session.line_received(alias.encode("utf-8", "replace"))
        typed_ahead, self._typed_ahead = self._typed_ahead or [], None
        for line in typed_ahead:
            self.line_entered(line)

    def is_secret(self) -> bool:
        """At the password prompt, and before the alias is handed over: what is typed
        then may be a password typed ahead."""
        if self._typed_ahead is not None:
            return True
        return self.session is not None and self.session.expects_password

    def line_entered(self, line: str) -> None:
        if self.session is None:
            return
        if self._typed_ahead is not None:
            # As many as the session takes during a password check; past that, dropped.
            if len(self._typed_ahead) < MAX_LINES_DURING_CHECK:
                self._typed_ahead.append(line)
            return
        self.session.line_received(line.encode("utf-8"))

    def interrupted(self) -> None:
        """Ctrl-C, or Ctrl-D on an empty line: leave the chat."""
        self.line_entered("/quit")

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self.session is not None:
            session, self.session = self.session, None
            session.connection_lost(clean=reason.check(ConnectionDone) is not None)

    # IConsumer: the session's output, above the line being typed.

    def write(self, data: bytes) -> None:
        self.show(data)

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """The SSH connection's Flow pauses the session's send queue (see Flow)."""
        self._channel.ssh_transport.flow.attach(cast(IPushProducer, producer))

    def unregisterProducer(self) -> None:
        self._channel.ssh_transport.flow.attach(None)

    # IConnection: what the session asks of its connection.

    def close(self) -> None:
        self.terminal.loseConnection()

    def abort(self) -> None:
        self._channel.abort()

    def discard_pending_input(self) -> int:
        """Nothing is pending here: the editor hands over each line as it is entered."""
        return 0


class ChatUser(ConchUser):
    """Who logged in over one SSH connection; opens at most one session channel at a time."""

    _log = CONCH_LOG

    def __init__(self, sessions: Sessions, login: SSHLogin) -> None:
        super().__init__()
        self.sessions = sessions
        self.login = login
        self.channelLookup[b"session"] = ChatChannel

    def lookupChannel(
        self, channelType: bytes, windowSize: int, maxPacket: int, data: bytes
    ) -> SSHChannel:
        """A session channel, unless the connection has as many open as it may, or
        its packets would be tiny."""
        if len(self.conn.channels) >= MAX_CHANNELS_PER_CONNECTION:
            raise ConchError(OPEN_ADMINISTRATIVELY_PROHIBITED, "too many channels")
        if maxPacket < MIN_CHANNEL_PACKET_BYTES:
            raise ConchError(OPEN_ADMINISTRATIVELY_PROHIBITED, "maximum packet size too small")
        return super().lookupChannel(channelType, windowSize, maxPacket, data)

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> int:
        """No port forwarding or other global requests: refused."""
        return 0


@implementer(IRealm)
class ChatRealm:
    """Makes a ChatUser for each login."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        if IConchUser not in interfaces:
            raise NotImplementedError("chatd's SSH logins are IConchUser only")
        return IConchUser, ChatUser(self._sessions, avatarId), lambda: None


@dataclass(frozen=True)
class SSHLogin:
    """Who logged in: the alias asked for, and how.

    ``public_key`` (an OpenSSH line) if they proved they hold that key;
    ``account`` if they gave the registered alias's password at the SSH prompt.
    """

    alias: str
    public_key: str | None = None
    account: Account | None = None


@implementer(ICredentialsChecker)
class AnyKeyChecker:
    """Any public key, once the client proves it holds the private half.

    The key is a guest's ticket: it says nothing about the alias, unless its
    owner bound it to a registered alias with /sshkey, which the terminal checks.
    Asking for a key keeps password guessing off the SSH layer, and every
    OpenSSH client has one.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    # Twisted types avatar ids as bytes; chatd's realm is given an SSHLogin instead.
    def requestAvatarId(self, credentials: Any) -> Deferred[SSHLogin]:  # type: ignore[override]
        if not credentials.signature:
            return fail(ValidPublicKey())  # asks the client to sign
        try:
            key = keys.Key.fromString(credentials.blob)
            signed = key.verify(credentials.signature, credentials.sigData)
        except Exception:  # a key or signature that cannot be read
            signed = False
        if not signed:
            return fail(UnauthorizedLogin("bad key signature"))
        alias = credentials.username.decode("utf-8", "replace")
        return succeed(SSHLogin(alias, public_key=key.toString("openssh").decode()))


@implementer(ICredentialsChecker)
class PasswordChecker:
    """For clients without a key: a registered alias's password, or anything for a guest.

    A registered alias is checked here, at the SSH password prompt (which does
    not echo), and logs straight in; a wrong password waits a moment, like the
    line protocol's, and the client may try again.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    # Twisted types avatar ids as bytes; chatd's realm is given an SSHLogin instead.
    def requestAvatarId(self, credentials: Any) -> Deferred[SSHLogin]:  # type: ignore[override]
        return ensureDeferred(self._check(credentials))

    async def _check(self, credentials: Any) -> SSHLogin:
        alias = credentials.username.decode("utf-8", "replace")
        accounts = self._sessions.hub.accounts
        if accounts is None or not accounts.is_registered(alias):
            return SSHLogin(alias)  # a guest: the password is not checked
        password = credentials.password.decode("utf-8", "replace")
        host = getattr(credentials, "host", None)  # for the accounts' per-address backoff
        try:
            account = await accounts.authenticate(alias, password, host=host)
        except PasswordsBusy as busy:  # too many guesses lately: refused unchecked
            raise UnauthorizedLogin("passwords cannot be checked now") from busy
        except Exception as problem:  # the store cannot answer (Redis down, disk error)
            log.warn("cannot check the password of {alias}: {p}", alias=alias, p=problem)
            raise UnauthorizedLogin("passwords cannot be checked now") from problem
        if account is None:
            await deferLater(self._sessions.clock, WRONG_PASSWORD_DELAY_SECONDS)
            raise UnauthorizedLogin("wrong password")
        return SSHLogin(alias, account=account)


class ChatSSHFactory(SSHFactory):
    """The SSH server: chatd's transport, login and connection services."""

    protocol = ChatSSHTransport
    noisy = False  # the listening port already logs where it listens
    _log = CONCH_LOG  # it would log a line per connection about DH moduli

    def __init__(self, sessions: Sessions, portal: Portal, key: keys.Key) -> None:
        self.sessions = sessions
        self.portal = portal
        self.services = {b"ssh-userauth": ChatUserAuth, b"ssh-connection": ChatConnection}
        self.publicKeys = {key.sshType(): key.public()}
        self.privateKeys = {key.sshType(): key}


def host_key(data_dir: Path) -> keys.Key:
    """The server's Ed25519 host key, made on first start and kept in ``data_dir``."""
    path = data_dir / HOST_KEY_FILE
    if not path.exists():
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        create_private(path)  # the directory 0700, the key 0600, before a byte is written
        path.write_bytes(pem)
    return keys.Key.fromFile(str(path))


def ssh_factory(sessions: Sessions, data_dir: Path) -> ChatSSHFactory:
    """The SSH server: guests by any public key, a terminal each, the host key kept."""
    portal = Portal(ChatRealm(sessions), [AnyKeyChecker(), PasswordChecker(sessions)])
    return ChatSSHFactory(sessions, portal, host_key(data_dir))
