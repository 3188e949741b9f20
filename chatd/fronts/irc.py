"""The IRC front end (``--irc ENDPOINT``): irssi, WeeChat, HexChat or The Lounge in chatd's rooms.

An IRC client is one more peer of the line, web and SSH users, behind a
:class:`~chatd.session.ChatSession` like theirs: the alias rule, the flood,
send-queue, ban and mute rules and the connection limits are the same. This
module frames IRC lines, holds the registration (``NICK``/``USER``, ``CAP``,
``PASS``, SASL PLAIN) and translates IRC commands into the session's input
(chatd's own command lines: ``/join #room``, ``/msg bob text``, ``/me``,
``/topic`` ...); the session's events come back as IRC messages
(:mod:`chatd.fronts.ircformat`). A chatd room is the channel of the same name.

What IRC does differently here, and why:

- A member is in one room at a time, as everywhere in chatd (``CHANLIMIT=#:1``):
  ``JOIN #other`` moves them, and the client is first sent a ``PART`` of the
  channel it leaves. ``PART`` of the channel moves them to the default room;
  the default room itself cannot be left (a notice says so), only quit.
- The client is welcomed (001-005, the MOTD) as soon as it has registered, then
  joins the default room. A registered alias is taken only with its password,
  given as the server password (``PASS``), by SASL PLAIN, or after the welcome
  with ``/msg NickServ IDENTIFY password``; until then the client is told so by
  NickServ and can do nothing else but change nick (or quit), and the session's
  alias timeout runs. A nick another member has gets 433; one that breaks the
  alias rule 432.
- Every line a client sends, whatever its command, takes a token of the same
  flood control a line user's lines take (:class:`~chatd.flood.FloodGate`, with
  the session's limits): PING floods and ``WHO`` floods are floods too.
- Lines longer than IRC allows (512 bytes with CRLF, plus up to 8191 of tags) are
  answered with 417 and dropped; the session's ``--max-line-bytes`` still holds
  for the text inside. Bytes that are not UTF-8 become U+FFFD; mIRC formatting
  and colour codes are removed here, and other control codes by the session's
  clean_text, as for everyone.
- chatd's own commands that IRC has no name for (``MUTE``, ``BAN``, ``HISTORY``
  ...) work as IRC commands of the same name, e.g. ``/quote MUTE bob 10m``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import cast

from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConsumer, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd import __version__
from chatd.accounts import WRONG_PASSWORD_DELAY_SECONDS
from chatd.flood import FloodGate
from chatd.fronts.ircformat import NICKSERV_PREFIX, SERVER_NAME, IrcFormat, user_prefix
from chatd.fronts.ircwire import (
    MAX_MESSAGE_BYTES,
    MAX_TAG_BYTES,
    TooLong,
    check_length,
    line,
    parse,
    strip_formatting,
)
from chatd.hub import MAX_TOPIC_CHARS
from chatd.interfaces import IConnection
from chatd.model import Account
from chatd.passwords import PasswordsBusy
from chatd.session import ChatSession, Sessions
from chatd.text import (
    MAX_ALIAS_CHARS,
    AliasRefused,
    RoomRefused,
    alias_key,
    check_alias,
    check_room,
    clean_text,
    room_key,
)

# The longest line framed: the most tags and the longest message, with their CRLF.
MAX_LINE_BYTES = MAX_TAG_BYTES + MAX_MESSAGE_BYTES
# The capabilities chatd offers (IRCv3): the time history lines were said, tags
# (clients may send them; chatd relays none) and SASL PLAIN for registered aliases.
CAPABILITIES = ("message-tags", "server-time", "sasl")
# A SASL PLAIN response (base64, in 400-byte pieces): an alias and a password fit.
MAX_SASL_BYTES = 1200
SASL_CHUNK_BYTES = 400
ISUPPORT = (
    f"AWAYLEN={MAX_TOPIC_CHARS}",
    "CASEMAPPING=ascii",
    "CHANLIMIT=#:1",
    "CHANMODES=,,,nt",
    f"CHANNELLEN={MAX_ALIAS_CHARS + 1}",
    "CHANTYPES=#",
    "MODES=0",
    f"NETWORK={SERVER_NAME}",
    f"NICKLEN={MAX_ALIAS_CHARS}",
    "PREFIX=",
    "TARGMAX=JOIN:1,KICK:1,NAMES:1,NOTICE:1,PART:1,PRIVMSG:1,WHOIS:1",
    f"TOPICLEN={MAX_TOPIC_CHARS}",
    "UTF8ONLY",
)
# chatd's commands that IRC has no command of its own for, sent on as they are.
CHATD_COMMANDS = frozenset(
    {
        "ban",
        "bans",
        "help",
        "history",
        "ignore",
        "mentions",
        "mute",
        "password",
        "register",
        "replay",
        "rooms",
        "sshkey",
        "unban",
        "unignore",
        "unmute",
    }
)
# What a client may send before it is registered (RFC 2812 3.1; IRCv3 CAP and SASL).
BEFORE_REGISTRATION = frozenset(
    {"CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT"}
)
# ... and before the session has joined (a registered alias waiting for its password).
BEFORE_JOINING = BEFORE_REGISTRATION | {
    "PRIVMSG",
    "NOTICE",
    "NICKSERV",
    "NS",
    "JOIN",
    "MOTD",
    "MODE",
    "TAGMSG",
}
log = Logger(namespace="chatd.irc")


@implementer(IConnection)
class IrcConnection(Protocol):
    """One IRC client: framing, registration, and its commands as its session's input."""

    transport: ITCPTransport
    session: ChatSession

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self.view = IrcFormat(sessions.clock)
        self._buffer = b""
        self._skipping_to_line_end = False
        self._closed = False
        # Registration: what the client gave so far.
        self._nick: str | None = None
        self._user_given = False
        self._negotiating_caps = False
        self._password: str | None = None
        self._sasl: bytes | None = None  # a SASL PLAIN response being received
        self._sasl_account: Account | None = None
        self._checking = False  # a password (SASL, PASS, IDENTIFY) is being checked
        self._registered = False  # the client was welcomed (001)
        self._join_once_in: str | None = None  # a JOIN sent before the session joined
        self._gate: FloodGate | None = None
        flood = sessions.config.flood
        if flood.enabled:
            self._gate = FloodGate(
                sessions.clock,
                flood,
                handle=self._handle,
                ready=lambda: not self._closed,
                warn=self._flooding,
                flood=self._flooded,
            )

    def connectionMade(self) -> None:
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.session = self._sessions.open(self, self.view)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        if self._gate is not None:
            self._gate.stop()
        self.session.connection_lost(clean=reason.check(ConnectionDone) is not None)

    # IConnection.

    @property
    def address(self) -> IAddress:
        return self.transport.getPeer()

    @property
    def consumer(self) -> IConsumer:
        return cast(IConsumer, self.transport)

    def close(self) -> None:
        """Say goodbye the IRC way (``ERROR``), after what was sent, and close."""
        if not self._closed:
            self._closed = True
            self.transport.write(line(None, "ERROR", "Closing link").encode())
        self.transport.loseConnection()

    def abort(self) -> None:
        self._closed = True
        self.transport.abortConnection()

    def discard_pending_input(self) -> int:
        """Nothing to discard: the session checks no password typed as a line here
        (this front end checks them itself, as IRC commands), so nothing a client
        sends can be taken for one."""
        return 0

    # Framing.

    def dataReceived(self, data: bytes) -> None:
        """Split on LF (a CR before it dropped), as line.py's LineReceiver does.

        Framed here rather than by LineReceiver: each line is held to IRC's two
        limits (the message and the tags in front of it), and a line with no end
        in sight is answered with IRC's 417 once and skipped to its end.
        """
        if self._skipping_to_line_end:
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._skipping_to_line_end = False
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while not self._closed:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            raw = buffer[start:end]
            start = end + 1
            self._line(raw[:-1] if raw.endswith(b"\r") else raw)
        rest = buffer[start:]
        if len(rest) > MAX_LINE_BYTES and not self._closed:
            self._too_long()
            rest = b""
            self._skipping_to_line_end = True
        self._buffer = rest

    def _line(self, raw: bytes) -> None:
        try:
            check_length(raw)
        except TooLong:
            self._too_long()
            return
        # Any line keeps a client alive for --idle-timeout, as a line user's empty
        # one does: a client's own PINGs (irssi's lag check) are its "still here".
        self.session.last_line_at = self._sessions.clock.seconds()
        text = strip_formatting(raw.decode("utf-8", "replace"))
        if self._gate is None:
            self._handle(text)
        else:
            self._gate.feed(text)

    def _too_long(self) -> None:
        self._reply(self.view.numeric("417", "Input line was too long; dropped"))

    # Flood control (the session's limits; see the module's docstring).

    # The gate is made before the session (in connectionMade), so it calls these.
    def _flooding(self, waiting: int) -> None:
        self.session.flooding(waiting)

    def _flooded(self) -> None:
        self.session.flooded()

    # Commands.

    def _handle(self, text: str) -> None:
        message = parse(text)
        if message is None or self._closed:
            return
        command = message.command
        if not self._registered and command not in BEFORE_REGISTRATION:
            if command in COMMANDS or command.lower() in CHATD_COMMANDS:
                self._reply(self.view.numeric("451", "You have not registered"))
            else:
                self._unknown(command)
            return
        if not self.view.welcomed and command not in BEFORE_JOINING:
            self._identify_first()
            return
        handler = COMMANDS.get(command)
        if handler is not None:
            handler(self, message.params)
        elif command.lower() in CHATD_COMMANDS:
            self._hand(" ".join([f"/{command.lower()}", *message.params]))
        else:
            self._unknown(command)

    def _unknown(self, command: str) -> None:
        shown = shown_word(command)
        self._reply(self.view.numeric("421", shown, "Unknown command"))

    def _reply(self, *lines: str) -> None:
        """Send lines of this front end's own, in order with what the hub sends."""
        data = "".join(lines).encode("utf-8")
        self._sessions.hub.counters.delivered(data)
        self.session.send(data)

    def _nickserv_notice(self, text: str) -> None:
        self._reply(line(NICKSERV_PREFIX, "NOTICE", self.view.nick, text))

    def _hand(self, text: str) -> None:
        """Give the session a line of chat or a chatd command, as if typed."""
        self.session.line_received(text.encode("utf-8"))

    def _ask(self, query: str, subject: str, text: str) -> None:
        """Hand a chatd command whose answer is the client's ``query`` about ``subject``.

        The hub answers a command at once; a query not answered then (the
        session dropped the line) is forgotten, so it cannot claim a later answer.
        """
        self.view.expect(query, subject)
        self._hand(text)
        self.view.queries.clear()

    def _need(self, params: tuple[str, ...], count: int, command: str) -> bool:
        """Whether ``params`` has ``count`` parameters; if not, the client is told (461)."""
        if len(params) >= count:
            return True
        self._reply(self.view.numeric("461", command, "Not enough parameters"))
        return False

    # Registration.

    def _cap(self, params: tuple[str, ...]) -> None:
        if not self._need(params, 1, "CAP"):
            return
        subcommand = params[0].upper()
        target = self.view.nick
        if subcommand == "LS":
            if not self._registered:
                self._negotiating_caps = True
            offered = " ".join(
                "sasl=PLAIN" if cap == "sasl" and params[1:2] == ("302",) else cap
                for cap in CAPABILITIES
            )
            self._reply(line(SERVER_NAME, "CAP", target, "LS", offered))
        elif subcommand == "LIST":
            self._reply(line(SERVER_NAME, "CAP", target, "LIST", " ".join(sorted(self.view.caps))))
        elif subcommand == "REQ":
            if not self._registered:
                self._negotiating_caps = True
            asked = params[1] if len(params) > 1 else ""
            names = asked.split()
            if names and all(name.removeprefix("-") in CAPABILITIES for name in names):
                for name in names:
                    if name.startswith("-"):
                        self.view.caps.discard(name[1:])
                    else:
                        self.view.caps.add(name)
                self._reply(line(SERVER_NAME, "CAP", target, "ACK", " ".join(names)))
            else:
                self._reply(line(SERVER_NAME, "CAP", target, "NAK", clean_text(asked)[:400]))
        elif subcommand == "END":
            if not self._registered:
                self._negotiating_caps = False
                self._try_to_register()
        else:
            shown = shown_word(params[0])
            self._reply(self.view.numeric("410", shown, "Invalid CAP command"))

    def _pass(self, params: tuple[str, ...]) -> None:
        if self._registered:
            self._reply(self.view.numeric("462", "You may not reregister"))
        elif self._need(params, 1, "PASS"):
            self._password = params[0]

    def _user(self, params: tuple[str, ...]) -> None:
        if self._registered:
            self._reply(self.view.numeric("462", "You may not reregister"))
        elif self._need(params, 4, "USER"):
            self._user_given = True
            self._try_to_register()

    def _nick_command(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self._reply(self.view.numeric("431", "No nickname given"))
            return
        nick = params[0]
        try:
            check_alias(nick)
        except AliasRefused as refusal:
            shown = shown_word(nick)
            self._reply(self.view.numeric("432", shown, f"Erroneous nickname: {refusal}"))
            return
        if not self._registered:
            self._nick = nick
            self._try_to_register()
        elif not self.view.welcomed:
            self._nick_before_joining(nick)
        else:
            self._rename(nick)

    def _rename(self, nick: str) -> None:
        """A nick change in chat: refused here if taken (433), else asked of the hub."""
        # The session's alias, not the client's: a NICK sent just before may have
        # changed it, its NICK line not sent yet (the room sends at the turn's end).
        current = self.session.alias or self.view.nick
        if nick == current:
            return
        if alias_key(nick) != alias_key(current):
            if self._taken(nick):
                self._reply(self.view.numeric("433", nick, "Nickname is already in use"))
                return
            if self._registered_alias(nick):
                self._reply(
                    self.view.numeric("433", nick, "Nickname is registered to someone else")
                )
                # Clients show 433 in their own words ("already in use"): say how to get it.
                self._nickserv_notice(
                    f"{nick} is registered. To use it, connect as {nick} with its password"
                    " (the server password, or SASL), or /msg NickServ IDENTIFY after"
                    f" connecting as {nick}."
                )
                return
        self._hand(f"/nick {nick}")

    def _taken(self, nick: str) -> bool:
        hub = self._sessions.hub
        return hub.member_named(nick) is not None or hub.directory.find(nick) is not None

    def _registered_alias(self, nick: str) -> bool:
        accounts = self._sessions.hub.accounts
        return accounts is not None and accounts.is_registered(nick)

    def _try_to_register(self) -> None:
        """Welcome the client once it has given NICK and USER and ended CAP and SASL."""
        nick = self._nick
        if (
            self._registered
            or nick is None
            or not self._user_given
            or self._negotiating_caps
            or self._checking
        ):
            return
        account = self._sasl_account
        if account is not None:
            nick = account.alias
        elif not self._registered_alias(nick):
            try:
                self._sessions.hub.check_available(nick)
            except AliasRefused:
                self._reply(self.view.numeric("433", nick, "Nickname is already in use"))
                self._nick = None
                return
        self._welcome(nick)
        if account is not None:
            self.session.log_in_verified(account.alias, account)
        elif self._registered_alias(nick):
            if self._password is not None:
                self._identify(nick, self._password)
            else:
                self._ask_for_password(nick)
        else:
            self._take_alias(nick)

    def _welcome(self, nick: str) -> None:
        """001-005 and the MOTD: the client is registered as ``nick``."""
        self._registered = True
        view = self.view
        view.nick = nick
        hub = self._sessions.hub
        self._reply(
            view.numeric("001", f"Welcome to {SERVER_NAME}, {nick}"),
            view.numeric("002", f"Your host is {SERVER_NAME}, running chatd {__version__}"),
            view.numeric("003", "This server speaks chatd's rooms as IRC channels"),
            view.numeric("004", SERVER_NAME, f"chatd-{__version__}", "i", "nt"),
            view.numeric("005", *ISUPPORT, "are supported by this server"),
            *view.motd_lines(hub.motd),
        )

    def _take_alias(self, nick: str) -> None:
        """Hand ``nick`` to the session as the alias it asks for (unregistered: no password)."""
        if not self.view.asks_alias:
            return
        self.view.asks_alias = False
        self._hand(nick)

    def _ask_for_password(self, nick: str) -> None:
        self._nickserv_notice(
            f"{nick} is registered. Identify with /msg NickServ IDENTIFY <password>"
            " (or connect with it as the server password, or SASL), or change nick with /nick."
        )

    def _nick_before_joining(self, nick: str) -> None:
        """A new nick while a registered one waits for its password."""
        if self._checking:
            self._nickserv_notice("Your password is being checked; wait for the answer.")
            return
        registered = self._registered_alias(nick)
        if not registered and self._taken(nick):
            self._reply(self.view.numeric("433", nick, "Nickname is already in use"))
            return
        self._reply(line(user_prefix(self.view.nick), "NICK", nick))
        self.view.nick = nick
        if registered:
            self._ask_for_password(nick)
        else:
            self._take_alias(nick)
            self._make_waiting_join()

    # Passwords: SASL PLAIN, PASS and NickServ IDENTIFY, checked here as the SSH
    # front end checks its logins, then the session is logged in (log_in_verified).

    def _authenticate(self, params: tuple[str, ...]) -> None:
        if not self._need(params, 1, "AUTHENTICATE"):
            return
        view = self.view
        if self._registered or self._sasl_account is not None:
            self._reply(view.numeric("907", "You have already authenticated"))
            return
        argument = params[0]
        if argument == "*":
            self._sasl = None
            self._reply(view.numeric("906", "SASL authentication aborted"))
            return
        if self._sasl is None:
            if argument.upper() != "PLAIN":
                self._reply(
                    view.numeric("908", "PLAIN", "are available SASL mechanisms"),
                    view.numeric("904", "SASL authentication failed"),
                )
                return
            if self._checking:
                self._reply(view.numeric("904", "SASL authentication failed"))
                return
            self._sasl = b""
            self._reply("AUTHENTICATE +\r\n")  # as the specification spells it
            return
        if argument != "+":
            self._sasl += argument.encode("utf-8", "replace")
        if len(self._sasl) > MAX_SASL_BYTES:
            self._sasl = None
            self._reply(view.numeric("905", "SASL message too long"))
            return
        if len(argument) == SASL_CHUNK_BYTES:
            return  # more to come
        response, self._sasl = self._sasl, None
        try:
            decoded = base64.b64decode(response, validate=True).decode("utf-8", "replace")
            identity, alias, password = decoded.split("\0")
        except (binascii.Error, ValueError):
            self._reply(view.numeric("904", "SASL authentication failed"))
            return
        if identity and alias_key(identity) != alias_key(alias):
            # To act for another identity (RFC 4616): chatd has no such thing.
            self._reply(view.numeric("904", "SASL authentication failed"))
            return
        self._start_check(alias, password, sasl=True)

    def _identify(self, alias: str, password: str) -> None:
        """Check ``password`` for registered ``alias``, then log the session in as it."""
        self._start_check(alias, password, sasl=False)

    def _start_check(self, alias: str, password: str, sasl: bool) -> None:
        if self._checking:
            self._nickserv_notice("Your last password is still being checked; wait.")
            return
        self._checking = True
        ensureDeferred(self._check(alias, password, sasl)).addErrback(
            lambda failure: log.failure("checking the password of {alias}", failure, alias=alias)
        )

    async def _check(self, alias: str, password: str, sasl: bool) -> None:
        accounts = self._sessions.hub.accounts
        account = None
        why = f"Wrong password for {shown_word(alias)}."
        try:
            if accounts is not None and accounts.is_registered(alias):
                account = await accounts.authenticate(alias, password, host=self.session.host)
                if account is None:  # who guesses, logged as the line front end does
                    log.info(
                        "{peer}: wrong password for {alias}", peer=self.session.peer, alias=alias
                    )
            else:
                why = f"{shown_word(alias)} is not registered."
        except PasswordsBusy as busy:  # too many guesses lately: refused unchecked
            why = str(busy)
        except Exception:  # the store cannot answer (Redis down, disk error)
            log.failure("cannot check the password of {alias}", alias=alias)
            why = "Passwords cannot be checked right now; try again later."
        if account is None:
            await deferLater(self._sessions.clock, WRONG_PASSWORD_DELAY_SECONDS)
        self._checking = False
        if self._closed:
            return
        if sasl:
            self._sasl_answered(account, why)
        elif account is None:
            self._password = None
            self._reply(self.view.numeric("464", "Password incorrect"))
            self._nickserv_notice(why)
        elif not self.view.welcomed:
            self.session.log_in_verified(account.alias, account)
            self._make_waiting_join()

    def _sasl_answered(self, account: Account | None, why: str) -> None:
        view = self.view
        if account is None:
            self._reply(view.numeric("904", f"SASL authentication failed: {why}"))
        else:
            self._sasl_account = account
            alias = account.alias
            self._reply(
                view.numeric(
                    "900", user_prefix(alias), alias, f"You are now logged in as {alias}"
                ),
                view.numeric("903", "SASL authentication successful"),
            )
        self._try_to_register()

    def _identify_first(self) -> None:
        """Tell a client not in a room yet why (chat and queries wait for that)."""
        nick = self.view.nick
        if self._registered_alias(nick):
            self._nickserv_notice(
                f"{nick} is registered: /msg NickServ IDENTIFY <password> first,"
                " or change nick with /nick."
            )
        else:  # the session refused the nick after all (another server took it)
            self._reply(
                line(
                    SERVER_NAME,
                    "NOTICE",
                    nick,
                    f"{nick} could not be had: change nick with /nick.",
                )
            )

    def _nickserv(self, text: str) -> None:
        """What was sent to NickServ: IDENTIFY (before joining), REGISTER, HELP."""
        words = text.split()
        command = words[0].upper() if words else "HELP"
        if command == "IDENTIFY" and len(words) in (2, 3):
            alias = words[1] if len(words) == 3 else self.view.nick
            if not self.view.welcomed:
                self._identify(alias, words[-1])
            elif self._logged_in():
                self._nickserv_notice(f"You are logged in as {self.view.nick} already.")
            else:  # chatd has no logging in from the chat, on any front end
                self._nickserv_notice(
                    "IDENTIFY is for the nick you connect with: to use a registered nick,"
                    " reconnect with it (and its password as the server password, by SASL,"
                    " or IDENTIFY then)."
                )
        elif command == "REGISTER" and len(words) >= 2 and self.view.welcomed:
            self._hand(f"/register {words[1]}")
        else:
            self._nickserv_notice(
                "NickServ understands IDENTIFY [nick] <password> (to use a registered nick)"
                " and REGISTER <password> (to make yours registered)."
            )

    def _logged_in(self) -> bool:
        """Whether the client chats under a registered alias whose password it gave."""
        try:
            return self._sessions.hub.is_registered(self.session)
        except LookupError:  # gone from the hub, its connection closing
            return False

    # Chat.

    def _privmsg(self, params: tuple[str, ...]) -> None:
        view = self.view
        if not params:
            self._reply(view.numeric("411", "No recipient given (PRIVMSG)"))
            return
        if len(params) < 2 or not params[1]:
            self._reply(view.numeric("412", "No text to send"))
            return
        target, text = params[0], params[1]
        if "," in target:
            shown = shown_word(target)
            self._reply(view.numeric("407", shown, "Too many targets; send to one at a time"))
            return
        if alias_key(target) == "nickserv":
            self._nickserv(text)
            return
        if not view.welcomed:
            self._identify_first()
            return
        if alias_key(target) == SERVER_NAME:
            # chatd's own command text, slash or not (/msg chatd /mute bob 10m): a
            # command, never a chat line (the server's name is no member's alias).
            command = text.strip().lstrip("/")
            self._hand(f"/{command}" if command else "/help")
            return
        if target.startswith("#") and not self._in_channel(target):
            shown = shown_word(target)
            self._reply(
                view.numeric("404", shown, f"You are in {view.channel}; /join {shown} first")
            )
            return
        self._say(target, text)

    def _notice(self, params: tuple[str, ...]) -> None:
        """A NOTICE is said as a PRIVMSG is, but never answered, not even with an error
        (RFC 2812 3.3.2): a bot that answers notices cannot go on answering chatd's."""
        if len(params) < 2 or not params[1] or not self.view.welcomed:
            return
        target, text = params[0], params[1]
        if (
            "," in target
            or alias_key(target) in (SERVER_NAME, "nickserv")
            or (target.startswith("#") and not self._in_channel(target))
        ):
            return
        self.view.expect("notice")  # the session's answers to it are dropped
        self._say(target, text)
        self.view.queries.clear()

    def _in_channel(self, channel: str) -> bool:
        return self.view.channel is not None and room_key(channel) == room_key(self.view.channel)

    def _say(self, target: str, text: str) -> None:
        """Hand ``text`` for ``target`` (the client's channel, or a nick) to the session."""
        action = text.startswith("\x01ACTION ")
        if text.startswith("\x01") and not action:
            return  # other CTCP (VERSION, PING ...): chatd answers none and relays none
        body = text[8:].removesuffix("\x01") if action else text
        if not target.startswith("#"):
            self._hand(f"/msg {target} {f'* {self.view.nick} {body}' if action else body}")
        elif action:
            self._hand(f"/me {body}")
        else:
            cleaned = clean_text(body).lstrip()
            # A line that starts with '/' is chat here: the client ran its commands.
            self._hand(f"/{cleaned}" if cleaned.startswith("/") else body)

    def _join(self, params: tuple[str, ...]) -> None:
        if not self._need(params, 1, "JOIN"):
            return
        if params[0] == "0":
            return  # "part every channel": a member is always in one
        first, *others = params[0].split(",")
        view = self.view
        if others:  # one answer for them all: a list of a hundred is no reason for a hundred
            shown = shown_word(others[0])
            self._reply(view.numeric("405", shown, "You can be in one channel at a time"))
        if self._in_channel(first):
            return
        try:
            check_room(first)
        except RoomRefused as refusal:
            shown = shown_word(first)
            self._reply(view.numeric("403", shown, str(refusal)))
            return
        if view.welcomed:
            self._hand(f"/join {first}")
        else:  # welcomed, its password being checked: an autojoin, made once in
            self._join_once_in = first

    def _make_waiting_join(self) -> None:
        """The session has just joined: the JOIN that waited for that is made."""
        wanted, self._join_once_in = self._join_once_in, None
        if wanted is not None and self.view.welcomed and not self._in_channel(wanted):
            self._hand(f"/join {wanted}")

    def _part(self, params: tuple[str, ...]) -> None:
        if not self._need(params, 1, "PART"):
            return
        view = self.view
        default = self._sessions.hub.default_room
        channel, *others = params[0].split(",")
        if others:  # TARGMAX=PART:1; one answer for the rest, however many
            shown = shown_word(others[0])
            self._reply(view.numeric("407", shown, "Too many targets; part one at a time"))
        if not self._in_channel(channel):
            shown = shown_word(channel)
            self._reply(view.numeric("442", shown, "You're not on that channel"))
        elif room_key(channel) == room_key(default):
            self._reply(
                line(
                    SERVER_NAME,
                    "NOTICE",
                    view.nick,
                    f"You are always in a channel, and {default} is where chatd starts:"
                    " /join another, or /quit.",
                )
            )
        else:
            self._hand(f"/join {default}")

    def _names(self, params: tuple[str, ...]) -> None:
        view = self.view
        channel = params[0].split(",")[0] if params else view.channel
        if channel is not None and self._in_channel(channel):
            self._ask("names", channel, "/who")
        else:
            shown = shown_word(channel or "*")
            self._reply(view.numeric("366", shown, "End of /NAMES list."))

    def _who(self, params: tuple[str, ...]) -> None:
        view = self.view
        mask = params[0] if params else "*"
        if self._in_channel(mask):
            self._ask("who", mask, "/who")
        elif not mask.startswith("#") and self._valid_alias(mask):
            self._ask("who", mask, f"/whois {mask}")
        else:
            shown = shown_word(mask)
            self._reply(view.numeric("315", shown, "End of /WHO list."))

    def _whois(self, params: tuple[str, ...]) -> None:
        if not params:
            self._reply(self.view.numeric("431", "No nickname given"))
            return
        nick = params[-1].split(",")[0]
        if self._valid_alias(nick):
            self._ask("whois", nick, f"/whois {nick}")
        else:
            shown = shown_word(nick)
            self._reply(
                self.view.numeric("401", shown, "No such nick"),
                self.view.numeric("318", shown, "End of /WHOIS list."),
            )

    @staticmethod
    def _valid_alias(nick: str) -> bool:
        try:
            check_alias(nick)
        except AliasRefused:
            return False
        return True

    def _topic(self, params: tuple[str, ...]) -> None:
        if not self._need(params, 1, "TOPIC"):
            return
        view = self.view
        channel = params[0]
        if not self._in_channel(channel):
            shown = shown_word(channel)
            self._reply(view.numeric("442", shown, "You're not on that channel"))
        elif len(params) == 1:
            self._reply(*view.topic_lines())
        else:
            self._hand(f"/topic {params[1]}" if params[1].strip() else "/topic -")

    def _list(self, params: tuple[str, ...]) -> None:
        self._ask("list", "", "/rooms")

    def _away(self, params: tuple[str, ...]) -> None:
        text = params[0] if params else ""
        self._ask("away", "", f"/away {text}" if text.strip() else "/away")

    def _quit(self, params: tuple[str, ...]) -> None:
        if self.view.welcomed:
            self._hand(f"/quit {params[0]}" if params else "/quit")
        else:
            self.session.disconnect("quit before choosing an alias")

    def _motd(self, params: tuple[str, ...]) -> None:
        self._reply(*self.view.motd_lines(self._sessions.hub.motd))

    def _ping(self, params: tuple[str, ...]) -> None:
        if not params:
            self._reply(self.view.numeric("409", "No origin specified"))
        else:
            # The token as it came, but for control characters (a lone CR, a NUL).
            self._reply(line(SERVER_NAME, "PONG", SERVER_NAME, clean_text(params[0])))

    def _ignore(self, params: tuple[str, ...]) -> None:
        """PONG, TAGMSG: nothing to answer (chatd relays no tags)."""

    def _mode(self, params: tuple[str, ...]) -> None:
        if not self._need(params, 1, "MODE"):
            return
        view = self.view
        target = params[0]
        if target.startswith("#"):
            shown = shown_word(target)
            if len(params) == 1:
                self._reply(view.numeric("324", shown, "+nt"))
            elif params[1].lstrip("+") == "b":
                self._reply(view.numeric("368", shown, "End of channel ban list"))
            else:
                self._reply(view.numeric("482", shown, "Channel modes are chatd's own"))
        elif alias_key(target) == alias_key(view.nick):
            if len(params) == 1:
                self._reply(view.numeric("221", "+"))
        else:
            self._reply(view.numeric("502", "Can't change mode for other users"))

    def _userhost(self, params: tuple[str, ...]) -> None:
        found = [f"{nick}=+{nick}@{SERVER_NAME}" for nick in params[:5] if self._online(nick)]
        self._reply(self.view.numeric("302", " ".join(found)))

    def _ison(self, params: tuple[str, ...]) -> None:
        nicks = " ".join(params).split()[:32]
        self._reply(self.view.numeric("303", " ".join(n for n in nicks if self._online(n))))

    def _online(self, nick: str) -> bool:
        return self._valid_alias(nick) and self._taken(nick)

    def _oper(self, params: tuple[str, ...]) -> None:
        if self._need(params, 2, "OPER"):
            self._hand(f"/oper {params[0]} {params[1]}")

    def _kick(self, params: tuple[str, ...]) -> None:
        if self._need(params, 2, "KICK"):
            self._kick_out(params[1], params[2] if len(params) > 2 else "")

    def _kill(self, params: tuple[str, ...]) -> None:
        if self._need(params, 1, "KILL"):
            self._kick_out(params[0], params[1] if len(params) > 1 else "")

    def _kick_out(self, nicks: str, reason: str) -> None:
        """chatd's /kick of the first of ``nicks`` (one nick is all a KICK may name here)."""
        nick = nicks.replace(",", " ").split(" ")[0]
        if not nick:
            self._reply(self.view.numeric("461", "KICK", "Not enough parameters"))
            return
        self._hand(f"/kick {nick} {reason}".rstrip())

    def _nickserv_command(self, params: tuple[str, ...]) -> None:
        self._nickserv(" ".join(params))


COMMANDS: dict[str, Callable[[IrcConnection, tuple[str, ...]], None]] = {
    "CAP": IrcConnection._cap,
    "PASS": IrcConnection._pass,
    "USER": IrcConnection._user,
    "NICK": IrcConnection._nick_command,
    "AUTHENTICATE": IrcConnection._authenticate,
    "PRIVMSG": IrcConnection._privmsg,
    "NOTICE": IrcConnection._notice,
    "JOIN": IrcConnection._join,
    "PART": IrcConnection._part,
    "NAMES": IrcConnection._names,
    "WHO": IrcConnection._who,
    "WHOIS": IrcConnection._whois,
    "TOPIC": IrcConnection._topic,
    "LIST": IrcConnection._list,
    "AWAY": IrcConnection._away,
    "QUIT": IrcConnection._quit,
    "MOTD": IrcConnection._motd,
    "PING": IrcConnection._ping,
    "PONG": IrcConnection._ignore,
    "TAGMSG": IrcConnection._ignore,
    "MODE": IrcConnection._mode,
    "USERHOST": IrcConnection._userhost,
    "ISON": IrcConnection._ison,
    "OPER": IrcConnection._oper,
    "KICK": IrcConnection._kick,
    "KILL": IrcConnection._kill,
    "NICKSERV": IrcConnection._nickserv_command,
    "NS": IrcConnection._nickserv_command,
}


def shown_word(text: str) -> str:
    """What a client sent (a nick, a channel, a command) made fit to be sent back as one
    parameter of a reply: clean, one word, not starting with ':', short."""
    word = clean_text(text).replace(" ", "_").lstrip(":")[: MAX_ALIAS_CHARS + 8]
    return word or "*"


def refusal_irc(why: str) -> bytes:
    """A refusal at accept time as an IRC ``ERROR`` message, which IRC clients show
    before the close (as :meth:`IrcConnection.close` says goodbye)."""
    return line(None, "ERROR", f"Closing link: {why}").encode()


class IrcFactory(ServerFactory):
    """Builds an IrcConnection per accepted connection, each with a session of ``sessions``.

    Which connections get this far is decided at accept time by the
    :class:`~chatd.admission.AdmittingFactory` around it.
    """

    noisy = False  # the listening port already logs where it listens

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def buildProtocol(self, addr: IAddress | None) -> IrcConnection:
        return IrcConnection(self.sessions)
