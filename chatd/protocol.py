"""The line protocol: bytes from telnet, nc or chatd-client in, protocol lines out.

A connection starts by negotiating an alias and then chats. This module only turns
bytes into lines and lines into calls on the :class:`~chatd.hub.Hub`; who hears
what is decided there.

Lines end in LF or CRLF. LineReceiver does the splitting, with three changes a chat
daemon needs: telnet negotiation is filtered out first, an overlong line is dropped
with an error instead of closing the connection (the stream resynchronises at the
next line end), and output goes through a bounded queue so a stalled reader is cut
off instead of growing the server without limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chatd import __version__, lineformat
from chatd.accounts import WRONG_PASSWORD_DELAY_SECONDS
from chatd.admission import Admission, ConnectionLimits, describe_peer, peer_host
from chatd.commands import run_command
from chatd.events import Error, Event, Notice
from chatd.flood import FloodGate, FloodLimits
from chatd.hub import Hub
from chatd.model import Account, Ban
from chatd.passwords import PasswordsBusy
from chatd.sendqueue import BoundedSender
from chatd.telnet import TelnetFilter
from chatd.text import ALIAS_RULE, AliasRefused, clean_text, count_of, decode_line, utc_stamp

ALIAS_PROMPT = f"Choose an alias ({ALIAS_RULE}):"
# Lines a whole-line front end may have waiting while its session is paused (a
# password being checked): an honest paste is a few dozen.
MAX_HELD_LINES = 256
# A connection chatd asked to close is aborted if it is still open this long after:
# loseConnection waits for the peer (a TLS handshake it never finishes, output it
# never reads), and the connection would hold its slot forever.
CLOSE_GRACE_SECONDS = 10.0
# Bytes a stream front end reads on while a password is checked, to drop when it
# answers; past that the sender is flooding (nobody types 8 KiB in a second).
MAX_HELD_INPUT_BYTES = 8192
GREETING = Notice(f"Welcome to chatd {__version__}.\n{ALIAS_PROMPT}")
PROMPT = Notice(ALIAS_PROMPT)
REPLACED = Notice("You logged in again from elsewhere; this session is closed.")


def discarded_notice(lines: int) -> Error:
    """What a client is told of the ``lines`` it sent while its password was checked."""
    if lines == 1:
        return Error("1 line typed during the password check was discarded.")
    return Error(f"{lines} lines typed during the password check were discarded.")


@dataclass(frozen=True)
class ChatConfig:
    """Limits of the line protocol; the defaults are those of ``twistd chatd``."""

    alias_timeout_seconds: float = 60.0
    # 0: never. Otherwise chatting clients silent this long are disconnected.
    idle_timeout_seconds: float = 0.0
    max_line_bytes: int = 2048
    sendq_bytes: int = 1024 * 1024
    shutdown_grace_seconds: float = 3.0
    flood: FloodLimits = field(default_factory=FloodLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)


class ChatProtocol(LineReceiver):
    """One connection: alias negotiation first, then chat."""

    delimiter = b"\n"
    encode = staticmethod(lineformat.encode)
    log = Logger()

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.hub = factory.hub
        self.alias: str | None = None
        self.peer = "?"
        self.host: str | None = None
        config = factory.config
        self._max_line_bytes = config.max_line_bytes
        # One byte of slack for the CR of a CRLF ending; lineReceived checks exactly.
        self.MAX_LENGTH = config.max_line_bytes + 1
        self._telnet = TelnetFilter()
        self._sender: BoundedSender | None = None
        self._alias_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None
        self._closing_reason: str | None = None
        self._skipping_to_line_end = False
        self._rest_after_long_line = b""
        self._handle_line = self._negotiate_alias
        self._expects_password = False
        self._replay = True
        # When the last line came in, for the idle sweep (see ChatFactory).
        self.last_line_at = factory.clock.seconds()
        self._gate: FloodGate | None = None
        if config.flood.enabled:
            self._gate = FloodGate(
                factory.clock,
                config.flood,
                handle=self._handle_gated_line,
                ready=self._ready_for_lines,
                warn=self._flooding,
                flood=self._flooded,
            )

    # Connection life cycle.

    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.peer = describe_peer(address)
        self.host = peer_host(address)
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._sender = BoundedSender(
            self.transport, self.factory.config.sendq_bytes, self._send_queue_overflowed
        )
        self.factory.connections.add(self)
        # Not logged here: the hub logs each arrival with its peer, and
        # connectionLost (only) those who never chose an alias. (twistd writes debug
        # events too, and every log line is a write: four a session cost churn ~15%.)
        if (ban := self.hub.banned(host=self.host)) is not None:
            self._refuse_banned(ban)
            return
        self.reply(GREETING)
        self._alias_timer = self.factory.clock.callLater(
            self.factory.config.alias_timeout_seconds, self._alias_timed_out
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for timer in (self._alias_timer, self._abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._alias_timer = self._abort_timer = None
        if self._gate is not None:
            self._gate.stop()
        why = self._closing_reason
        if why is None:
            why = "Connection closed" if reason.check(ConnectionDone) else "Connection lost"
            # Closing for good: a password check still running must not join a ghost.
            self._closing_reason = why
        if self.alias is None:
            self.log.info(
                "{peer} disconnected before choosing an alias: {why}", peer=self.peer, why=why
            )
        else:
            self.hub.leave(self, why)
        self.factory.connection_closed(self)

    @property
    def expects_password(self) -> bool:
        """Whether what is typed now is, or may be, a password: at the prompt, and while
        the password is checked (a user unsure it arrived types it again). A front
        end masks it and keeps it out of its history."""
        return self._expects_password

    def reply(self, event: Event) -> None:
        """Say something of the protocol's own (greeting, prompts, refusals), counted.

        As an event, encoded like everything the hub sends, so a front end with
        another wire format (JSON over WebSocket) gets these in its own format too.
        """
        data = self.encode(event)
        self.hub.counters.delivered(data)
        self.send(data)

    def send(self, data: bytes) -> None:
        """Queue protocol line bytes for this client (bounded; see BoundedSender).

        The hub calls this and counts what it delivers; the protocol's own lines
        go through reply.
        """
        if self._sender is not None:
            self._sender.write(data)

    def disconnect(self, reason: str) -> None:
        """Close after flushing what is queued; ``reason`` goes to the log."""
        if self._closing_reason is not None:
            return
        self._closing_reason = reason
        if self._sender is not None:
            self._sender.close()
        self.transport.loseConnection()
        self._abort_timer = self.factory.clock.callLater(
            CLOSE_GRACE_SECONDS, self.transport.abortConnection
        )

    # Input.

    def dataReceived(self, data: bytes) -> None:
        data = self._telnet.feed(data)
        if self._skipping_to_line_end:
            line_end = data.find(b"\n")
            if line_end < 0:
                return
            self._skipping_to_line_end = False
            data = data[line_end + 1 :]
        # LineReceiver.resumeProducing calls this with b"" to process what it
        # buffered while paused, so the splitter runs at least once.
        while self._closing_reason is None:
            super().dataReceived(data)
            data, self._rest_after_long_line = self._rest_after_long_line, b""
            if not data:
                break
        if self.paused and len(self._buffer) > MAX_HELD_INPUT_BYTES:
            # More than anyone types during a password check: left unread, the rest
            # would be read after the answer, and taken for an alias or for chat.
            self._flooded()

    def lineLengthExceeded(self, line: bytes) -> None:
        """Drop the overlong line, tell its sender, and go on at the next line end.

        LineReceiver hands over the whole unprocessed buffer and forgets it; what
        follows the overlong line is fed back in by dataReceived.
        """
        self._refuse_long_line()
        _, line_end, rest = line.partition(b"\n")
        if line_end:
            self._rest_after_long_line = rest
        else:
            self._skipping_to_line_end = True

    def lineReceived(self, line: bytes) -> None:
        if self._closing_reason is not None:
            return
        self.last_line_at = self.factory.clock.seconds()
        self.hub.counters.lines_received += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max_line_bytes:
            self._refuse_long_line()
            return
        if self._gate is None:
            self._handle_line(decode_line(line))
        else:
            self._gate.feed(decode_line(line))

    def resumeProducing(self) -> None:
        """Go on after a pause: first the lines the flood gate holds, then the unsplit rest.

        A held line may pause again (a password to check): then the rest waits.
        """
        self.paused = False
        if self._gate is not None:
            self._gate.drain()
            if self.paused:
                return
        super().resumeProducing()

    def _refuse_long_line(self) -> None:
        self.log.debug("{peer}: overlong line dropped", peer=self.peer)
        self.reply(Error(f"Line too long (over {self._max_line_bytes} bytes); dropped."))

    # States.

    def _negotiate_alias(self, text: str) -> None:
        alias = text.strip()
        if alias.startswith("/"):
            self._command_before_alias(alias.lower().split())
            return
        # The address too: a ban may have come since this connection was let in.
        if (ban := self.hub.banned(host=self.host, alias=alias)) is not None:
            self._refuse_banned(ban)
            return
        accounts = self.hub.accounts
        if accounts is not None and accounts.is_registered(alias):
            self.reply(Notice(f"{alias} is registered. Password:"))
            self._expects_password = True
            self._handle_line = lambda password: self._check_password(alias, password)
            return
        try:
            self.hub.join(self, alias, replay=self._replay)
        except AliasRefused as refusal:
            self.reply(Error(str(refusal)))
            self.reply(PROMPT)
            return
        self._accepted()

    def _accepted(self) -> None:
        """The alias is ours: the handshake timer stops and chatting starts."""
        if self._alias_timer is not None:
            self._alias_timer.cancel()
            self._alias_timer = None
        self._handle_line = self._chat

    def _check_password(self, alias: str, password: str) -> None:
        # Nothing more is handled until the (slow, threaded) check has answered. What
        # comes meanwhile is read (up to MAX_HELD_INPUT_BYTES, past which the sender
        # is flooding) and dropped whatever the answer: it was sent before its sender
        # could see the answer (a password typed again, a script's next line), and
        # would otherwise become the next alias, or chat for everyone to see.
        self._handle_line = self._negotiate_alias
        self.paused = True
        ensureDeferred(self._authenticate(alias, password)).addErrback(
            self.log.failure, "checking the password of {alias}", alias=alias
        )

    async def _authenticate(self, alias: str, password: str) -> None:
        assert self.hub.accounts is not None
        try:
            account = await self.hub.accounts.authenticate(alias, password, host=self.host)
        except PasswordsBusy as busy:  # too many checks (here, or of this alias): wait
            await deferLater(self.factory.clock, WRONG_PASSWORD_DELAY_SECONDS)
            self._refuse_password(str(busy))
            return
        except Exception:
            self.log.failure("cannot check the password of {alias}", alias=alias)
            self._refuse_password("Passwords cannot be checked right now; try again later.")
            return
        if account is None:
            await deferLater(self.factory.clock, WRONG_PASSWORD_DELAY_SECONDS)
            self.log.info("{peer}: wrong password for {alias}", peer=self.peer, alias=alias)
            self._refuse_password(f"Wrong password for {alias}.")
            return
        discarded = self._end_password_check()
        if self._enter_registered(alias, account):
            if discarded:
                self.reply(discarded_notice(discarded))
            self.resumeProducing()

    def log_in_verified(self, alias: str, account: Account) -> None:
        """Take registered ``alias`` without asking: its front end has checked already
        (an SSH key bound with /sshkey, or the password at the SSH prompt)."""
        if self._handle_line == self._negotiate_alias:
            self._enter_registered(alias, account)

    def _enter_registered(self, alias: str, account: Account) -> bool:
        """Join as registered ``alias``; False if refused (the refusal resumed reading)."""
        if self._closing_reason is not None:
            return False
        if (ban := self.hub.banned(host=self.host, alias=alias)) is not None:
            # However the front end proved the alias is theirs (password, SSH key).
            self._refuse_banned(ban)
            return False
        ghost = self.hub.member_named(alias)
        if ghost is not None:
            # The owner is back while an old connection of theirs still hangs (or
            # is in use elsewhere: its user is told why it ends).
            ghost.send(ghost.encode(REPLACED))
            self.hub.leave(ghost, "Replaced by a new login")
            ghost.disconnect("ghost session replaced by a new login")
        try:
            self.hub.join(self, alias, registered=True, replay=self._replay)
        except AliasRefused as refusal:
            self._refuse_alias(str(refusal))
            return False
        self.hub.restore_ignores(self, account.ignores)
        self._accepted()
        return True

    def _refuse_banned(self, ban: Ban) -> None:
        until = "" if ban.expires_at is None else f" until {utc_stamp(ban.expires_at)}"
        if self.alias is not None:  # else connectionLost logs the one line, with this reason
            self.log.info("{peer}: refused, banned ({mask})", peer=self.peer, mask=ban.mask)
        self.reply(Error(f"You are banned from this server{until}: {ban.reason}"))
        self.disconnect(f"banned ({ban.mask})")

    def _refuse_alias(self, why: str) -> None:
        if self._closing_reason is None:
            self.reply(Error(why))
            self.reply(PROMPT)
            self.resumeProducing()

    def _refuse_password(self, why: str) -> None:
        """Refuse a password, and drop whatever came while it was checked.

        Those lines were sent before their sender could see the answer: a
        password typed again, or the next line of a script, would otherwise be
        taken as the next alias, for everyone to see.
        """
        discarded = self._end_password_check()
        if self._closing_reason is not None:
            return
        self.reply(Error(why))
        if discarded:
            self.reply(discarded_notice(discarded))
        self.reply(PROMPT)
        self.resumeProducing()

    def _end_password_check(self) -> int:
        """The check has answered: typing is no longer a password, and what came
        meanwhile is dropped; return how many lines that was."""
        self._expects_password = False
        return self._discard_pending_lines()

    def _discard_pending_lines(self) -> int:
        """Forget the input received but not handled yet; return how many lines it held.

        An unfinished line is skipped up to its end, so its rest does not become
        a line of its own.
        """
        pending = self._buffer + self._rest_after_long_line
        self._buffer = self._rest_after_long_line = b""
        lines = pending.count(self.delimiter)
        if pending and not pending.endswith(self.delimiter):
            lines += 1
            self._skipping_to_line_end = True
        if self._gate is not None:
            lines += self._gate.waiting
            self._gate.stop()
        return lines

    def _command_before_alias(self, words: list[str]) -> None:
        """/quit, and /replay for bots that want no history, work before an alias."""
        if words[0] == "/quit":
            self.reply(Notice("Goodbye."))
            self.disconnect("quit before choosing an alias")
        elif words[0] == "/replay" and words[1:] in (["on"], ["off"]):
            self._replay = words[1] == "on"
            self.reply(Notice(f"History replay is {words[1]}."))
            self.reply(PROMPT)
        else:
            self.reply(Error("Choose an alias first (or /quit, /replay off)."))
            self.reply(PROMPT)

    def _chat(self, text: str) -> None:
        """A command or a chat line, told apart by what is left once the line is cleaned.

        Decided on the cleaned text: a line that starts with an arrow key's escape
        sequence, a Ctrl-L or a space before ``/msg ann secret`` is still that
        command, never chat shown to the room and kept in history.
        """
        text = clean_text(text).lstrip()
        if text.startswith("/") and not text.startswith("//"):
            run_command(self.hub, self, text)
        else:
            self.hub.say(self, text[1:] if text.startswith("//") else text)

    # Limits.

    def _alias_timed_out(self) -> None:
        self._alias_timer = None
        seconds = self.factory.config.alias_timeout_seconds
        self.reply(Error(f"No alias chosen within {seconds:g} seconds; goodbye."))
        self.hub.counters.disconnects["alias_timeout"] += 1
        self.disconnect("alias timeout")

    def _handle_gated_line(self, text: str) -> None:
        self._handle_line(text)

    def _ready_for_lines(self) -> bool:
        """Whether a line let through by the flood gate can be handled now."""
        return not self.paused and self._closing_reason is None

    def _flooding(self, waiting: int) -> None:
        self.reply(
            Error(
                f"You are sending too fast: {count_of(waiting, 'line')} waiting."
                " Slow down or you will be disconnected."
            )
        )

    def _flooded(self) -> None:
        if self.alias is not None:  # else connectionLost logs the one line
            self.log.info(
                "{peer} ({alias}) cut off: excess flood", peer=self.peer, alias=self.alias
            )
        self.hub.counters.disconnects["flood"] += 1
        self.reply(Error("Excess flood; goodbye."))
        self.disconnect("Excess flood")

    def idle_timed_out(self) -> None:
        """Silent past --idle-timeout: say so and go."""
        seconds = self.factory.config.idle_timeout_seconds
        self.reply(Error(f"Idle for more than {seconds:g} seconds; goodbye."))
        self.log.info("{peer} ({alias}): idle timeout", peer=self.peer, alias=self.alias)
        self.hub.counters.disconnects["idle"] += 1
        self.disconnect("Idle timeout")

    def _send_queue_overflowed(self) -> None:
        reason = "Send queue exceeded"
        self.hub.counters.disconnects["sendq"] += 1
        if self.alias is not None:  # else connectionLost logs the one line
            self.log.warn(
                "{peer} ({alias}) cut off: more than {limit} bytes waiting to be read",
                peer=self.peer,
                alias=self.alias,
                limit=self.factory.config.sendq_bytes,
            )
        self._closing_reason = reason
        self.hub.leave(self, reason)
        self.transport.abortConnection()


class WholeLineSession(ChatProtocol):
    """A session whose front end hands it whole lines (WebSocket, SSH line editor).

    No byte stream to split and no telnet to filter; lines that come while the
    session is paused (a password being checked) wait, in order, as LineReceiver's
    buffer would make them wait. Unlike that buffer, nothing stops the front end
    from handing over more meanwhile, so what waits is bounded here: at most
    MAX_HELD_LINES lines, each kept only as far as a line may be long.
    """

    def __init__(self, factory: ChatFactory) -> None:
        super().__init__(factory)
        self._held: deque[bytes] = deque()

    def lines_received(self, lines: list[bytes]) -> None:
        """Handle ``lines`` in order, as far as the session is not paused."""
        held = self._held
        # The start of an overlong line is enough for lineReceived to refuse it.
        keep = self._max_line_bytes + 2
        for line in lines:
            if self._closing_reason is not None:
                return
            if not self.paused and not held:
                self.lineReceived(line)
            elif len(held) < MAX_HELD_LINES:
                held.append(line[:keep])
            else:
                self._flooded()
                return

    def _discard_pending_lines(self) -> int:
        """Forget the lines held (and any the flood gate holds); return how many."""
        lines = len(self._held)
        self._held.clear()
        return lines + super()._discard_pending_lines()

    def dataReceived(self, data: bytes) -> None:
        """Called with nothing by resumeProducing: go on with the held lines."""
        held = self._held
        while held and not self.paused and self._closing_reason is None:
            self.lineReceived(held.popleft())


def idle_sweep_interval(timeout: float) -> float:
    """How often idle connections are looked for: a quarter of the timeout, 1 to 30 s."""
    return max(1.0, min(timeout / 4, 30.0))


class ChatFactory(ServerFactory):
    """Builds a chat session per connection, and keeps track of all of them.

    Which connections get that far is decided at accept time, for every
    listener alike, by :class:`~chatd.admission.AdmittingFactory` around this
    factory's :attr:`admission` (see :func:`admitting`).
    """

    noisy = False  # the listening port already logs where it listens
    log = Logger()

    def __init__(self, hub: Hub, config: ChatConfig) -> None:
        self.hub = hub
        self.config = config
        self.clock = hub.clock
        self.connections: set[ChatProtocol] = set()
        self.admission = Admission(self.clock, config.connections)
        self._idle_sweep: LoopingCall | None = None
        self._all_closed: Deferred[None] | None = None

    def reconfigure(self, config: ChatConfig) -> None:
        """Take new limits (a reload).

        Connection limits and the idle timeout apply at once; a connection keeps
        the line length, send queue and flood limits it started with.
        """
        idle_changed = config.idle_timeout_seconds != self.config.idle_timeout_seconds
        self.config = config
        self.admission.limits = config.connections
        if idle_changed and self.numPorts:
            self._stop_idle_sweep()
            self._start_idle_sweep()

    def startFactory(self) -> None:
        self._start_idle_sweep()

    def stopFactory(self) -> None:
        self._stop_idle_sweep()

    def _start_idle_sweep(self) -> None:
        timeout = self.config.idle_timeout_seconds
        if timeout > 0:
            # One sweep for everyone rather than a timer per connection, reset by
            # every line: a few idle checks a minute cost nothing, timers per line do.
            self._idle_sweep = LoopingCall(self._sweep_idle)
            self._idle_sweep.clock = self.clock
            self._idle_sweep.start(idle_sweep_interval(timeout), now=False)

    def _stop_idle_sweep(self) -> None:
        if self._idle_sweep is not None and self._idle_sweep.running:
            self._idle_sweep.stop()
        self._idle_sweep = None

    def _sweep_idle(self) -> None:
        cutoff = self.clock.seconds() - self.config.idle_timeout_seconds
        for protocol in list(self.connections):
            if protocol.alias is not None and protocol.last_line_at <= cutoff:
                protocol.idle_timed_out()

    def buildProtocol(self, addr: IAddress) -> ChatProtocol:
        return self.admit(addr, ChatProtocol)

    def admit(self, addr: IAddress, kind: type[ChatProtocol]) -> ChatProtocol:
        """A ``kind`` session for a connection from ``addr``, already admitted.

        The connection was let in by its listener's AdmittingFactory; a front end
        that carries sessions over another protocol (WebSocket, SSH) builds each
        one here, so every session is known to the idle sweep and the shutdown.
        """
        return kind(self)

    def connection_closed(self, protocol: ChatProtocol) -> None:
        """Forget ``protocol``; completes a shutdown once the last one is gone."""
        self.connections.discard(protocol)
        if not self.connections and self._all_closed is not None:
            done, self._all_closed = self._all_closed, None
            done.callback(None)

    def shut_down(self, reason: str) -> Deferred[None]:
        """Tell every connection ``reason`` and close them all.

        The Deferred fires when the last connection is gone; connections that
        have not closed within the grace period are aborted.
        """
        self.hub.close(reason)
        for protocol in list(self.connections):
            if protocol.alias is None:
                protocol.reply(Notice(reason))
            protocol.disconnect("server shutting down")
        if not self.connections:
            return succeed(None)
        deadline = self.clock.callLater(self.config.shutdown_grace_seconds, self._abort_all)

        def stop_deadline(result: None) -> None:
            if deadline.active():
                deadline.cancel()
            return result

        self._all_closed = Deferred()
        self._all_closed.addBoth(stop_deadline)
        return self._all_closed

    def _abort_all(self) -> None:
        """The grace period is over: abort whoever is left, and stop waiting for them.

        A session whose transport is already gone (a channel of a connection that
        closed without telling it) would never report its close, so the
        shutdown completes here whatever the transports do.
        """
        stragglers = list(self.connections)
        for protocol in stragglers:
            try:
                protocol.transport.abortConnection()
            except Exception:
                self.log.failure("aborting {peer} at shutdown", peer=protocol.peer)
        for protocol in stragglers:
            if protocol in self.connections:
                self.log.info(
                    "{peer} ({alias}) did not close at shutdown; forgotten",
                    peer=protocol.peer,
                    alias=protocol.alias,
                )
                self.hub.leave(protocol, "server shutting down")
                self.connection_closed(protocol)
        if self._all_closed is not None:
            done, self._all_closed = self._all_closed, None
            done.callback(None)
