"""The SSH front end (``--ssh ENDPOINT``): ``ssh -p 2222 alice@host`` and chat.

``twisted.conch`` runs the SSH server. The SSH user name is the alias asked
for; behind the terminal runs the line protocol's own session
(:class:`~chatd.protocol.WholeLineSession`), so the alias rules, registered
aliases (their password is asked for in the terminal), commands, limits and
rooms are those of every other front end. The terminal has a line editor
(``twisted.conch.recvline``): incoming lines are written above the line being
typed, which is then drawn again, so typing is never interrupted.

Guests get in with any public key, or with any password. The owner of a
registered alias gets in with a key bound to it (``/sshkey``) or with its
password at the SSH prompt; any other key for a registered alias leads to the
chat's own password prompt. The host key is made on first start, in the data
directory, and reused, so clients can pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd import lineformat
from chatd.accounts import WRONG_PASSWORD_DELAY_SECONDS
from chatd.protocol import ChatFactory, WholeLineSession
from chatd.store import Account

HOST_KEY_FILE = "ssh_host_ed25519_key"
CTRL_C, CTRL_D = b"\x03", b"\x04"
log = Logger(namespace="chatd.ssh")


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
        self, chat: ChatFactory, login: SSHLogin, peer: IAddress, channel: FlowControlledChannel
    ) -> None:
        super().__init__()
        self._chat = chat
        self._login = login
        self._peer = peer
        self._channel = channel
        self.session: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.keyHandlers[CTRL_D] = self._quit
        self.keyHandlers[CTRL_C] = self._quit
        # A refusal by a connection limit is a protocol too: it says why and closes.
        session = self._chat.admit(self._peer, SSHChatSession)
        session.makeConnection(TerminalOutput(self, self._peer, self._channel))
        if not isinstance(session, SSHChatSession):
            return
        self.session = session
        ensureDeferred(self._take_alias(session)).addErrback(
            log.failure, "SSH login of {alias}", alias=self._login.alias
        )

    async def _take_alias(self, session: SSHChatSession) -> None:
        """Straight in if SSH proved the alias is theirs (its password, or a key bound
        to it with /sshkey); else as if the alias were typed at the prompt."""
        accounts = self._chat.hub.accounts
        alias, account = self._login.alias, self._login.account
        key = self._login.public_key
        if account is None and key is not None and accounts is not None:
            try:
                account = await accounts.key_login(alias, key)
            except Exception as problem:  # the store cannot answer (Redis down, disk error)
                # As if typed at the prompt: a registered alias then asks for its
                # password, and the password check says it cannot be done now.
                log.warn("cannot check the SSH key of {alias}: {p}", alias=alias, p=problem)
        if account is not None:
            session.log_in_verified(alias, account)
        else:
            session.lines_received([alias.encode("utf-8", "replace")])

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
    """Opens a ChatTerminal for the avatar's login, knowing where it connects from."""

    chat: ChatFactory
    _terminal: insults.ServerProtocol | None = None

    def openShell(self, proto: Any) -> None:
        user = IConchUser(self.original)
        peer = proto.session.conn.transport.transport.getPeer()
        self._terminal = insults.ServerProtocol(
            ChatTerminal, self.chat, user.login, peer, proto.session
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
    def __init__(self, original: Any, login: SSHLogin) -> None:
        super().__init__(original, login)
        self.login = login
        self.channelLookup[b"session"] = FlowControlledChannel


class ChatRealm(TerminalRealm):
    userFactory = ChatUser
    sessionFactory = ChatTerminalSession

    def __init__(self, chat: ChatFactory) -> None:
        super().__init__()
        self._chat = chat

    def _getAvatar(self, avatarId: SSHLogin) -> Any:
        user = super()._getAvatar(avatarId)
        session = ISession(user.original)
        session.chat = self._chat
        return user


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

    def requestAvatarId(self, credentials: Any) -> Deferred[SSHLogin]:
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

    def __init__(self, chat: ChatFactory) -> None:
        self._chat = chat

    def requestAvatarId(self, credentials: Any) -> Deferred[SSHLogin]:
        return ensureDeferred(self._check(credentials))

    async def _check(self, credentials: Any) -> SSHLogin:
        alias = credentials.username.decode("utf-8", "replace")
        accounts = self._chat.hub.accounts
        if accounts is None or not accounts.is_registered(alias):
            return SSHLogin(alias)  # a guest: the password is not checked
        account = await accounts.authenticate(
            alias, credentials.password.decode("utf-8", "replace")
        )
        if account is None:
            await deferLater(self._chat.clock, WRONG_PASSWORD_DELAY_SECONDS)
            raise UnauthorizedLogin("wrong password")
        return SSHLogin(alias, account=account)


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
    portal = Portal(ChatRealm(chat), [AnyKeyChecker(), PasswordChecker(chat)])
    factory = ConchFactory(portal)
    key = host_key(data_dir)
    factory.publicKeys = {key.sshType(): key.public()}
    factory.privateKeys = {key.sshType(): key}
    return factory
