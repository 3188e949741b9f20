"""The chat session: one chatter, whatever front end they came through.

A session starts by negotiating an alias (a registered one's password is checked
first) and then chats; it is what the hub knows as a member (:class:`IMember`).
It holds the limits every front end shares: the alias timeout, flood control,
the idle timeout (swept by :class:`Sessions`), a bounded send queue, bans, and a
close that is aborted if the peer never lets it finish.

It knows no wire. A front end (``chatd.fronts``) hands it whole lines as bytes
and gives it an :class:`~chatd.interfaces.IConnection`: a consumer for the bytes
it sends, and a way to close. So every front end is one peer of the others,
under the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FunctionType, MappingProxyType

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import LoopingCall, deferLater
from zope.interface import implementer

from chatd import __version__
from chatd.accounts import WRONG_PASSWORD_DELAY_SECONDS
from chatd.admission import Admission, ConnectionLimits, describe_peer, peer_host
from chatd.commands import run_command
from chatd.deadlines import Deadlines
from chatd.events import Error, Event, Notice
from chatd.flood import FloodGate, FloodLimits
from chatd.hub import Hub
from chatd.interfaces import IConnection, IFormatSwitch, IMember
from chatd.logs import Logger
from chatd.model import Account, Ban
from chatd.passwords import PasswordsBusy
from chatd.sendqueue import BoundedSender
from chatd.text import ALIAS_RULE, AliasRefused, clean_text, count_of, decode_line, utc_stamp
from chatd.wireformats import Expecting, InputRefused, WireFormat

ALIAS_PROMPT = f"Choose an alias ({ALIAS_RULE}):"
# What a session takes in while a password is checked (each line dropped as it
# comes, and counted for the notice at the answer): an honest user types a
# password again, or pastes a few dozen lines. Past either bound the sender is
# flooding (nobody types 8 KiB in a second).
MAX_LINES_DURING_CHECK = 256
MAX_BYTES_DURING_CHECK = 8192
# A connection chatd asked to close is aborted if it is still open this long after:
# a close waits for the peer (a TLS handshake it never finishes, output it never
# reads), and the connection would hold its slot forever.
CLOSE_GRACE_SECONDS = 10.0
GREETING = Notice(f"Welcome to chatd {__version__}.\n{ALIAS_PROMPT}")
PROMPT = Notice(ALIAS_PROMPT)
# Constant events encoded and kept (see Sessions.encoded): a few per wire format.
MAX_CONSTANTS_KEPT = 32
REPLACED = Notice("You logged in again from elsewhere; this session is closed.")
# The formats of a front end whose wire carries one (the web, SSH): shared, not one each.
NO_FORMATS: Mapping[str, WireFormat] = MappingProxyType({})
CANNOT_SWITCH_FORMAT = (
    "This connection has one format: /format switches line connections (nc, telnet:"
    " --port, --json-port). The web page speaks JSON already; SSH is a terminal."
)


def discarded_notice(lines: int) -> Error:
    """What a client is told of the ``lines`` it sent while its password was checked."""
    if lines == 1:
        return Error("1 line typed during the password check was discarded.")
    return Error(f"{lines} lines typed during the password check were discarded.")


@dataclass(frozen=True)
class ChatConfig:
    """Limits of a chat session; the defaults are those of ``twistd chatd``."""

    alias_timeout_seconds: float = 60.0
    # 0: never. Otherwise chatting clients silent this long are disconnected.
    idle_timeout_seconds: float = 0.0
    max_line_bytes: int = 2048
    sendq_bytes: int = 1024 * 1024
    shutdown_grace_seconds: float = 3.0
    flood: FloodLimits = field(default_factory=FloodLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)


@implementer(IMember, IFormatSwitch)
class ChatSession:
    """One chatter: alias negotiation first, then chat. Made by :meth:`Sessions.open`."""

    # Slots: there is one per connection, and idle ones are most of a server's memory.
    __slots__ = (
        "_checking",
        "_clock",
        "_closing_reason",
        "_dropped_bytes",
        "_dropped_lines",
        "_expects_password",
        "_formats",
        "_gate",
        "_handle_line",
        "_max_line_bytes",
        "_read",
        "_replay",
        "_sender",
        "_sessions",
        "alias",
        "connection",
        "encode",
        "host",
        "hub",
        "last_line_at",
        "peer",
    )
    log = Logger(namespace="chatd.session")

    def __init__(
        self,
        sessions: Sessions,
        connection: IConnection,
        encode: Callable[[Event], bytes],
        formats: Mapping[str, WireFormat] | None = None,
    ) -> None:
        self._sessions = sessions
        self.hub = sessions.hub
        self._clock = sessions.clock
        self.connection = connection
        self.encode = encode
        # What /format can switch between (nothing on a wire of one format), and how
        # the current one reads what comes in (None: typed lines, taken as they are).
        self._formats = NO_FORMATS if formats is None else formats
        self._read = _reader(self._formats, encode)
        self.alias: str | None = None
        address = connection.address
        self.peer = describe_peer(address)
        self.host = peer_host(address)
        config = sessions.config
        self._max_line_bytes = config.max_line_bytes
        self._sender = BoundedSender(
            connection.consumer, config.sendq_bytes, self._send_queue_overflowed
        )
        self._closing_reason: str | None = None
        self._handle_line: Callable[[str], None] = self._negotiate_alias
        self._expects_password = False
        # A password is being checked: lines are dropped, and counted (see
        # _drop_during_check) for the notice at the answer.
        self._checking = False
        self._dropped_lines = 0
        self._dropped_bytes = 0
        self._replay = True
        # When the last line came in, for the idle sweep (see Sessions).
        self.last_line_at = self._clock.seconds()
        self._gate: FloodGate | None = None
        if config.flood.enabled:
            self._gate = FloodGate(
                self._clock,
                config.flood,
                handle=self._take_line,
                ready=self._ready_for_lines,
                warn=self.flooding,
                flood=self.flooded,
            )

    # Life cycle.

    def start(self) -> None:
        """Greet and start the alias timer, or refuse a banned address."""
        # Not logged here: the hub logs each arrival with its peer, and
        # connection_lost (only) those who never chose an alias. (twistd writes debug
        # events too, and every log line is a write: four a session cost churn ~15%.)
        if (ban := self.hub.banned(host=self.host)) is not None:
            self._refuse_banned(ban)
            return
        self._reply_constant(GREETING)
        self._sessions.choosing.add(self)

    def connection_lost(self, clean: bool) -> None:
        """The front end's connection is gone (``clean``: closed rather than lost)."""
        self._sessions.choosing.discard(self)
        self._sessions.closing.discard(self)
        if self._gate is not None:
            self._gate.stop()
        why = self._closing_reason
        if why is None:
            why = "Connection closed" if clean else "Connection lost"
            # Closing for good: a password check still running must not join a ghost.
            self._closing_reason = why
        if self.alias is None:
            self.log.info(
                "{peer} disconnected before choosing an alias: {why}", peer=self.peer, why=why
            )
        else:
            self.hub.leave(self, why)
        self._sessions.closed(self)

    @property
    def expects_password(self) -> bool:
        """Whether what is typed now is, or may be, a password: at the prompt, and while
        the password is checked (a user unsure it arrived types it again). A front
        end masks it and keeps it out of its history."""
        return self._expects_password

    def reply(self, event: Event) -> None:
        """Say something of the session's own (greeting, prompts, refusals), counted.

        As an event, encoded like everything the hub sends, so a front end with
        another wire format (JSON over WebSocket) gets these in its own format too.
        """
        data = self.encode(event)
        self.hub.counters.delivered(data)
        self._sender.write(data)

    def _reply_constant(self, event: Event) -> None:
        """:meth:`reply` with one of the constant events (the greeting, the prompt),
        encoded once per wire format."""
        data = self._sessions.encoded(self.encode, event)
        self.hub.counters.delivered(data)
        self._sender.write(data)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for this client (bounded; see BoundedSender).

        The hub calls this and counts what it delivers; the session's own lines
        go through reply.
        """
        self._sender.write(data)

    def disconnect(self, reason: str) -> None:
        """Close after flushing what is queued; ``reason`` goes to the log."""
        if self._closing_reason is not None:
            return
        self._closing_reason = reason
        self._sender.close()
        self.connection.close()
        self._sessions.closing.add(self)  # aborted if not closed in CLOSE_GRACE_SECONDS

    def abort(self) -> None:
        """Cut the connection now (a shutdown's deadline has passed)."""
        self.connection.abort()

    # Input.

    def line_received(self, line: bytes) -> None:
        """Handle one line from the front end (without its LF; a CR before it is dropped)."""
        if self._closing_reason is not None:
            return
        if self._checking:
            self._drop_during_check(1, len(line) + 1)  # with its line end
            return
        self.last_line_at = self._clock.seconds()
        self.hub.counters.lines_received += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max_line_bytes:
            self._refuse_long_line()
            return
        if self._gate is None:
            self._take_line(decode_line(line))
        else:
            self._gate.feed(decode_line(line))

    def line_too_long(self, length: int) -> None:
        """The front end dropped a line over the limit, of which ``length`` bytes came so
        far, its end included if it came (the rest, as it comes, is reported to
        :meth:`more_of_long_line`)."""
        if self._closing_reason is not None:
            return
        if self._checking:
            self._drop_during_check(1, length)
            return
        self._refuse_long_line()

    def more_of_long_line(self, length: int) -> None:
        """``length`` more bytes of a dropped overlong line went by, unread."""
        if self._checking and self._closing_reason is None:
            self._drop_during_check(0, length)

    def _refuse_long_line(self) -> None:
        self.log.debug("{peer}: overlong line dropped", peer=self.peer)
        self.reply(Error(f"Line too long (over {self._max_line_bytes} bytes); dropped."))

    def _drop_during_check(self, lines: int, size: int) -> None:
        """Drop ``lines`` lines of ``size`` bytes in all that came while a password is
        checked, counting them; past the bounds the sender is flooding.

        They are dropped whatever the answer: they were sent before their sender could
        see the answer (a password typed again, a script's next line), and would
        otherwise become the next alias, or chat for everyone to see.
        """
        self._dropped_lines += lines
        self._dropped_bytes += size
        if (
            self._dropped_lines > MAX_LINES_DURING_CHECK
            or self._dropped_bytes > MAX_BYTES_DURING_CHECK
        ):
            self.flooded()

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
            self._reply_constant(PROMPT)
            return
        self._accepted()

    def _accepted(self) -> None:
        """The alias is ours: the handshake timer stops and chatting starts."""
        self._sessions.choosing.discard(self)
        self._handle_line = self._chat

    def _check_password(self, alias: str, password: str) -> None:
        # Nothing more is handled until the (slow, threaded) check has answered; what
        # comes meanwhile is dropped whatever the answer (see _drop_during_check).
        self._handle_line = self._negotiate_alias
        self._checking = True
        ensureDeferred(self._authenticate(alias, password)).addErrback(
            lambda failure: self.log.failure(
                "checking the password of {alias}", failure, alias=alias
            )
        )

    async def _authenticate(self, alias: str, password: str) -> None:
        assert self.hub.accounts is not None
        try:
            account = await self.hub.accounts.authenticate(alias, password, host=self.host)
        except PasswordsBusy as busy:  # too many checks (here, or of this alias): wait
            await deferLater(self._clock, WRONG_PASSWORD_DELAY_SECONDS)
            self._refuse_password(str(busy))
            return
        except Exception:
            self.log.failure("cannot check the password of {alias}", alias=alias)
            self._refuse_password("Passwords cannot be checked right now; try again later.")
            return
        if account is None:
            await deferLater(self._clock, WRONG_PASSWORD_DELAY_SECONDS)
            self.log.info("{peer}: wrong password for {alias}", peer=self.peer, alias=alias)
            self._refuse_password(f"Wrong password for {alias}.")
            return
        discarded = self._end_password_check()
        if self._enter_registered(alias, account) and discarded:
            self.reply(discarded_notice(discarded))

    def log_in_verified(self, alias: str, account: Account) -> None:
        """Take registered ``alias`` without asking: its front end has checked already
        (an SSH key bound with /sshkey, or the password at the SSH prompt).

        Not while a password typed at the prompt is checked: that check decides,
        or its answer would log in (or replace as a ghost) a session already in.
        """
        if self._handle_line == self._negotiate_alias and not self._checking:
            self._enter_registered(alias, account)

    def _enter_registered(self, alias: str, account: Account) -> bool:
        """Join as registered ``alias``; False if refused."""
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
            self.hub.join(
                self, alias, registered=True, replay=self._replay, ignores=account.ignores
            )
        except AliasRefused as refusal:
            self._refuse_alias(str(refusal))
            return False
        self._accepted()
        return True

    def _refuse_banned(self, ban: Ban) -> None:
        until = "" if ban.expires_at is None else f" until {utc_stamp(ban.expires_at)}"
        if self.alias is not None:  # else connection_lost logs the one line, with this reason
            self.log.info("{peer}: refused, banned ({mask})", peer=self.peer, mask=ban.mask)
        self.reply(Error(f"You are banned from this server{until}: {ban.reason}"))
        self.disconnect(f"banned ({ban.mask})")

    def _refuse_alias(self, why: str) -> None:
        if self._closing_reason is None:
            self.reply(Error(why))
            self._reply_constant(PROMPT)

    def _refuse_password(self, why: str) -> None:
        """Refuse a password, and drop whatever came while it was checked."""
        discarded = self._end_password_check()
        if self._closing_reason is not None:
            return
        self.reply(Error(why))
        if discarded:
            self.reply(discarded_notice(discarded))
        self._reply_constant(PROMPT)

    def _end_password_check(self) -> int:
        """The check has answered: typing is no longer a password, and what came
        meanwhile is dropped; return how many lines that was.

        Those are the lines dropped as they came, those the front end has not
        handed over yet (an unfinished one is skipped to its end, so its rest
        does not become a line of its own) and those the flood gate held back.
        """
        self._expects_password = False
        self._checking = False
        lines = self._dropped_lines + self.connection.discard_pending_input()
        self._dropped_lines = self._dropped_bytes = 0
        if self._gate is not None:
            lines += self._gate.waiting
            self._gate.stop()
        return lines

    def _command_before_alias(self, words: list[str]) -> None:
        """/quit, and /replay and /format for bots (no history, JSON), work before an alias."""
        if words[0] == "/quit":
            self.reply(Notice("Goodbye."))
            self.disconnect("quit before choosing an alias")
        elif words[0] == "/replay" and words[1:] in (["on"], ["off"]):
            self._replay = words[1] == "on"
            self.reply(Notice(f"History replay is {words[1]}."))
            self._reply_constant(PROMPT)
        elif words[0] == "/format" and len(words) <= 2:
            self.switch_format(" ".join(words[1:]))
            self._reply_constant(PROMPT)
        else:
            self.reply(Error("Choose an alias first (or /quit, /replay off, /format json)."))
            self._reply_constant(PROMPT)

    def switch_format(self, name: str) -> None:
        """``/format``: say which format the connection speaks, or switch to format ``name``.

        What the room queued for this member before goes out in the old format,
        the answer in the new one: every line after the answer is in the new format.
        """
        if not self._formats:
            self._tell(Error(CANNOT_SWITCH_FORMAT))
            return
        names = "|".join(self._formats)
        name = name.strip().lower()
        if not name:
            current = next(n for n, wire in self._formats.items() if wire.encode is self.encode)
            self._tell(Notice(f"The format is {current} (/format {names} switches)."))
            return
        wire = self._formats.get(name)
        if wire is None:
            self._tell(Error(f"Usage: /format [{names}]"))
            return
        if self.alias is not None:
            self.hub.catch_up(self)
        self.encode, self._read = wire.encode, wire.read
        self._tell(Notice(f"The format is now {name}."))

    def _tell(self, event: Event) -> None:
        """Answer this member: through the hub once it is in a room (after what the
        room sent it), directly before."""
        if self.alias is None:
            self.reply(event)
        else:
            self.hub.tell(self, event)

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

    def alias_timed_out(self) -> None:
        """No alias was chosen within --alias-timeout: say so and close."""
        seconds = self._sessions.config.alias_timeout_seconds
        self.reply(Error(f"No alias chosen within {seconds:g} seconds; goodbye."))
        self.hub.counters.disconnects["alias_timeout"] += 1
        self.disconnect("alias timeout")

    def _take_line(self, text: str) -> None:
        """Handle a line (let through by the flood gate, if there is one), read first in
        the connection's format unless that is typed text.

        Read here, after the gate and the password check's drop, and not by the
        front end as it arrives: a flood of malformed lines is a flood like any other.
        """
        if self._read is not None:
            try:
                typed = self._read(text, self._expecting())
            except InputRefused as refusal:
                self._tell(Error(str(refusal)))
                return
            if typed is None:
                return
            text = typed
        self._handle_line(text)

    def _expecting(self) -> Expecting:
        if self.alias is not None:
            return "chat"
        return "password" if self._expects_password else "alias"

    def _ready_for_lines(self) -> bool:
        """Whether a line let through by the flood gate can be handled now."""
        return not self._checking and self._closing_reason is None

    def flooding(self, waiting: int) -> None:
        """Warn a sender over the flood limit, ``waiting`` lines held (the flood gate's
        warning: the session's own gate's, or a front end's with the session's limits)."""
        self.reply(
            Error(
                f"You are sending too fast: {count_of(waiting, 'line')} waiting."
                " Slow down or you will be disconnected."
            )
        )

    def flooded(self) -> None:
        """Cut off a sender past the flood limit, with the reason said and logged."""
        if self.alias is not None:  # else connection_lost logs the one line
            self.log.info(
                "{peer} ({alias}) cut off: excess flood", peer=self.peer, alias=self.alias
            )
        self.hub.counters.disconnects["flood"] += 1
        self.reply(Error("Excess flood; goodbye."))
        self.disconnect("Excess flood")

    def idle_timed_out(self) -> None:
        """Silent past --idle-timeout: say so and go."""
        seconds = self._sessions.config.idle_timeout_seconds
        self.reply(Error(f"Idle for more than {seconds:g} seconds; goodbye."))
        self.log.info("{peer} ({alias}): idle timeout", peer=self.peer, alias=self.alias)
        self.hub.counters.disconnects["idle"] += 1
        self.disconnect("Idle timeout")

    def _send_queue_overflowed(self) -> None:
        reason = "Send queue exceeded"
        self.hub.counters.disconnects["sendq"] += 1
        if self.alias is not None:  # else connection_lost logs the one line
            self.log.warn(
                "{peer} ({alias}) cut off: more than {limit} bytes waiting to be read",
                peer=self.peer,
                alias=self.alias,
                limit=self._sessions.config.sendq_bytes,
            )
        self._closing_reason = reason
        self.hub.leave(self, reason)
        self.connection.abort()


def _reader(
    formats: Mapping[str, WireFormat], encode: Callable[[Event], bytes]
) -> Callable[[str, Expecting], str | None] | None:
    """How the format of ``formats`` that encodes with ``encode`` reads; None for typed lines."""
    for wire in formats.values():
        if wire.encode is encode:
            return wire.read
    return None


def idle_sweep_interval(timeout: float) -> float:
    """How often idle sessions are looked for: a quarter of the timeout, 1 to 30 s."""
    return max(1.0, min(timeout / 4, 30.0))


class Sessions:
    """Every chat session of every front end: opens them, sweeps the idle, shuts them down.

    Which connections get as far as a session is decided at accept time, for
    every listener alike, by :class:`~chatd.admission.AdmittingFactory` around
    :attr:`admission`.
    """

    log = Logger(namespace="chatd.session")

    def __init__(self, hub: Hub, config: ChatConfig) -> None:
        self.hub = hub
        self.config = config
        self.clock = hub.clock
        self.live: set[ChatSession] = set()
        self.admission = Admission(self.clock, config.connections)
        self._running = False
        self._idle_sweep: LoopingCall | None = None
        self._all_closed: Deferred[None] | None = None
        # Why the server is going, once shut_down was called.
        self._shutdown_reason: str | None = None
        # Sessions choosing an alias, closed at --alias-timeout, and those closing,
        # aborted if still there after CLOSE_GRACE_SECONDS: one timer each for all.
        self.choosing: Deadlines[ChatSession] = Deadlines(
            self.clock, config.alias_timeout_seconds, ChatSession.alias_timed_out
        )
        self.closing: Deadlines[ChatSession] = Deadlines(
            self.clock, CLOSE_GRACE_SECONDS, ChatSession.abort
        )
        # The greeting and the prompt, encoded by each wire format's encode.
        self._constants: dict[tuple[Callable[[Event], bytes], Event], bytes] = {}

    def encoded(self, encode: Callable[[Event], bytes], event: Event) -> bytes:
        """A constant ``event`` (the greeting, the prompt) as ``encode`` makes it, made once.

        Only for a wire format's plain function: an encoder object of one
        connection's own (IRC's, which knows its client's nick) makes it anew,
        so that no connection's encoder is kept here, nor takes a shared place.
        """
        if not isinstance(encode, FunctionType):
            return encode(event)
        key = (encode, event)
        data = self._constants.get(key)
        if data is None:
            data = encode(event)
            if len(self._constants) < MAX_CONSTANTS_KEPT:
                self._constants[key] = data
        return data

    def open(
        self,
        connection: IConnection,
        encode: Callable[[Event], bytes],
        formats: Mapping[str, WireFormat] | None = None,
    ) -> ChatSession:
        """A session for a front end's new ``connection``, speaking ``encode``'s format.

        ``formats`` are those ``/format`` may switch it to, by name (``encode``
        among them); without them, it keeps its format.

        The connection was let in by its listener's AdmittingFactory; the session
        greets it (or refuses a banned address) before this returns. During a
        shutdown (a front end may still open one on a connection it accepted
        before: an SSH shell, a WebSocket) it is told why instead, and closed.
        """
        session = ChatSession(self, connection, encode, formats)
        self.live.add(session)
        if self._shutdown_reason is None:
            session.start()
        else:
            session.reply(Notice(self._shutdown_reason))
            session.disconnect("server shutting down")
        return session

    def start(self) -> None:
        """Start sweeping idle sessions (if --idle-timeout asks for it): the service
        starts, whichever front ends it has."""
        self._running = True
        self._shutdown_reason = None
        self._start_idle_sweep()

    def stop(self) -> None:
        """Stop the idle sweep: the service has stopped."""
        self._running = False
        self._stop_idle_sweep()

    def reconfigure(self, config: ChatConfig) -> None:
        """Take new limits (a reload).

        Connection limits, the idle timeout and the alias timeout (for those still
        choosing too) apply at once; a session keeps the line length, send queue and
        flood limits it started with.
        """
        idle_changed = config.idle_timeout_seconds != self.config.idle_timeout_seconds
        self.config = config
        if config.alias_timeout_seconds != self.choosing.seconds:
            self.choosing.change(config.alias_timeout_seconds)
        self.admission.limits = config.connections
        if idle_changed and self._running:
            self._stop_idle_sweep()
            self._start_idle_sweep()

    def _start_idle_sweep(self) -> None:
        timeout = self.config.idle_timeout_seconds
        if timeout > 0 and self._idle_sweep is None:
            # One sweep for everyone rather than a timer per session, reset by
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
        for session in list(self.live):
            if session.alias is not None and session.last_line_at <= cutoff:
                session.idle_timed_out()

    def closed(self, session: ChatSession) -> None:
        """Forget ``session``; completes a shutdown once the last one is gone."""
        self.live.discard(session)
        if not self.live and self._all_closed is not None:
            done, self._all_closed = self._all_closed, None
            done.callback(None)

    def shut_down(self, reason: str) -> Deferred[None]:
        """Tell every session ``reason`` and close them all.

        The Deferred fires when the last one is gone; those that have not
        closed within the grace period are aborted.
        """
        self._shutdown_reason = reason
        self.hub.close(reason)
        for session in list(self.live):
            if session.alias is None:
                session.reply(Notice(reason))
            session.disconnect("server shutting down")
        if not self.live:
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

        A session whose connection is already gone (a channel of a connection
        that closed without telling it) would never report its close, so the
        shutdown completes here whatever the connections do.
        """
        stragglers = list(self.live)
        for session in stragglers:
            try:
                session.abort()
            except Exception:
                self.log.failure("aborting {peer} at shutdown", peer=session.peer)
        for session in stragglers:
            if session in self.live:
                self.log.info(
                    "{peer} ({alias}) did not close at shutdown; forgotten",
                    peer=session.peer,
                    alias=session.alias,
                )
                self.hub.leave(session, "server shutting down")
                self.closed(session)
        if self._all_closed is not None:
            done, self._all_closed = self._all_closed, None
            done.callback(None)
