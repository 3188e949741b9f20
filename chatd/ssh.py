"""The SSH front end (``--ssh ENDPOINT``): ``ssh -p 2222 alice@host`` and chat.

``twisted.conch`` runs the SSH server. The SSH user name is the alias asked
for; behind the terminal runs the line protocol's own session
(:class:`~chatd.protocol.WholeLineSession`), so the alias rules, registered
aliases (their password is asked for in the terminal), commands, limits and
rooms are those of every other front end. The terminal has a line editor
(``twisted.conch.recvline``): incoming lines are written above the line being
typed, which is then drawn again, so typing is never interrupted.

Anyone may connect as a guest with any public key (every OpenSSH client has
one; the key proves nothing about the alias, which is why registered aliases
still ask for their password). The host key is made on first start, in the
data directory, and reused, so clients can pin it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import recvline
from twisted.conch.error import ValidPublicKey
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.manhole_ssh import (
    ConchFactory,
    TerminalRealm,
    TerminalSession,
    TerminalSessionTransport,
    TerminalUser,
)
from twisted.conch.ssh import keys
from twisted.conch.ssh.session import SSHSession
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd import lineformat
from chatd.events import Error
from chatd.protocol import ChatFactory, WholeLineSession

HOST_KEY_FILE = "ssh_host_ed25519_key"
CTRL_C, CTRL_D = b"\x03", b"\x04"


class SSHChatSession(WholeLineSession):
    """The chat session behind one SSH terminal: text lines, as telnet users get them."""

    encode = staticmethod(lineformat.encode)


class FlowControlledChannel(SSHSession):
    """An SSH session channel that passes the client's window on to the chat's send queue.

    conch buffers without limit what a channel is asked to write past the
    client's window, and only hints (stopWriting/startWriting) when the window
    closes and opens. Passing the hints on as pause/resume makes the session's
    send queue (--sendq-bytes) hold the backlog, and cut off an SSH user who
    stops reading as it does on every other front end.
    """

    producer: IPushProducer | None = None

    def stopWriting(self) -> None:
        if self.producer is not None:
            self.producer.pauseProducing()

    def startWriting(self) -> None:
        if self.producer is not None:
            self.producer.resumeProducing()


class TerminalOutput:
    """What the session writes to: the terminal, above the line being typed."""

    def __init__(
        self, terminal: ChatTerminal, peer: IAddress, channel: FlowControlledChannel
    ) -> None:
        self._terminal = terminal
        self._peer = peer
        self._channel = channel
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        self._terminal.show(data)

    def getPeer(self) -> IAddress:
        return self._peer

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._channel.producer = producer

    def unregisterProducer(self) -> None:
        self._channel.producer = None

    def pauseProducing(self) -> None:
        """Nothing to pause: the line editor hands over lines one at a time."""

    def resumeProducing(self) -> None:
        """See pauseProducing."""

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._terminal.terminal.loseConnection()

    def abortConnection(self) -> None:
        self.loseConnection()


class ChatTerminal(recvline.HistoricRecvLine):
    """The line editor of one SSH user, wired to their chat session."""

    ps = (b"> ", b"> ")

    def __init__(
        self, chat: ChatFactory, alias: str, peer: IAddress, channel: FlowControlledChannel
    ) -> None:
        super().__init__()
        self._chat = chat
        self._alias = alias
        self._peer = peer
        self._channel = channel
        self.session: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.keyHandlers[CTRL_D] = self._quit
        self.keyHandlers[CTRL_C] = self._quit
        session = self._chat.admit(self._peer, SSHChatSession)
        if not isinstance(session, SSHChatSession):
            self.show(lineformat.encode(Error(session.why)))  # type: ignore[attr-defined]
            self.terminal.loseConnection()
            return
        self.session = session
        session.makeConnection(TerminalOutput(self, self._peer, self._channel))
        session.lines_received([self._alias.encode("utf-8", "replace")])

    def show(self, data: bytes) -> None:
        """Write server lines above the input line, then draw the input line again."""
        self.terminal.write(b"\r")
        self.terminal.eraseLine()
        self.terminal.write(data)
        self.drawInputLine()
        behind = len(self.lineBuffer) - self.lineBufferIndex
        if behind:
            self.terminal.cursorBackward(behind)

    def terminalSize(self, width: int, height: int) -> None:
        """Note the size; recvline's own version clears the screen, lines and all."""
        self.width, self.height = width, height

    def lineReceived(self, line: bytes) -> None:
        if self.session is not None:
            self.session.lines_received([line])

    def _quit(self) -> None:
        self.lineReceived(b"/quit")

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self.session is not None:
            session, self.session = self.session, None
            session.connectionLost(reason)


class ChatTerminalSession(TerminalSession):
    """Opens a ChatTerminal for the avatar's alias, knowing where it connects from."""

    chat: ChatFactory
    _terminal: insults.ServerProtocol | None = None

    def openShell(self, proto: Any) -> None:
        user = IConchUser(self.original)
        peer = proto.session.conn.transport.transport.getPeer()
        alias = user.avatarId.decode("utf-8", "replace")
        self._terminal = insults.ServerProtocol(
            ChatTerminal, self.chat, alias, peer, proto.session
        )
        TerminalSessionTransport(proto, self._terminal, user, self.width, self.height)

    def eofReceived(self) -> None:
        """The client will send no more: close the channel (the session then ends)."""
        if self._terminal is not None:
            self._terminal.transport.loseConnection()

    def closed(self) -> None:
        """The channel is gone, however it went: the terminal and its chat session end.

        conch tells the session, not the terminal protocol, so without this the
        chat would keep a member whose connection no longer exists.
        """
        if self._terminal is not None:
            terminal, self._terminal = self._terminal, None
            terminal.connectionLost(Failure(ConnectionDone()))


class ChatUser(TerminalUser):
    def __init__(self, original: Any, avatarId: bytes) -> None:
        super().__init__(original, avatarId)
        self.avatarId = avatarId
        self.channelLookup[b"session"] = FlowControlledChannel


class ChatRealm(TerminalRealm):
    userFactory = ChatUser
    sessionFactory = ChatTerminalSession

    def __init__(self, chat: ChatFactory) -> None:
        super().__init__()
        self._chat = chat

    def _getAvatar(self, avatarId: bytes) -> Any:
        user = super()._getAvatar(avatarId)
        session = ISession(user.original)
        session.chat = self._chat
        return user


@implementer(ICredentialsChecker)
class GuestKeyChecker:
    """Any public key, once the client proves it holds the private half.

    The key says nothing about the alias (the chat checks that); asking for one
    keeps password guessing off the SSH layer, and every OpenSSH client has one.
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        if not credentials.signature:
            return fail(ValidPublicKey())  # asks the client to sign
        try:
            key = keys.Key.fromString(credentials.blob)
            signed = key.verify(credentials.signature, credentials.sigData)
        except Exception:  # a key or signature that cannot be read
            signed = False
        if not signed:
            return fail(UnauthorizedLogin("bad key signature"))
        return succeed(credentials.username)


def host_key(data_dir: Path) -> keys.Key:
    """The server's Ed25519 host key, made on first start and kept in ``data_dir``."""
    path = data_dir / HOST_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        path.touch(mode=0o600)
        path.write_bytes(pem)
    return keys.Key.fromFile(str(path))


def ssh_factory(chat: ChatFactory, data_dir: Path) -> ConchFactory:
    """The SSH server: guests by any public key, a terminal each, the host key kept."""
    portal = Portal(ChatRealm(chat), [GuestKeyChecker()])
    factory = ConchFactory(portal)
    key = host_key(data_dir)
    factory.publicKeys = {key.sshType(): key.public()}
    factory.privateKeys = {key.sshType(): key}
    return factory
