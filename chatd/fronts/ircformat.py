"""Events as IRC messages, for the IRC front end (:mod:`chatd.fronts.irc`).

Unlike the line and JSON formats, an IRC rendering depends on its recipient: a
numeric reply is addressed to the client's own nick, a private message names it
as the target, and a chat line names the channel the client is in (chatd's
events do not carry the room of a chat line: everyone who hears one is in it).
So each IRC connection has its own :class:`IrcFormat`, the session's ``encode``,
which keeps what that client has been told: its nick, its channel and that
channel's topic, and the queries it asked that an event answers (``NAMES`` and
``WHO`` are both chatd's ``/who``; which one was asked decides the numerics).

The price is in the fan-out: a room encodes its batch once per IRC member
rather than once per wire format (see :class:`chatd.room.Room`). Broadcasts
whose form depends on the channel alone (chat lines, actions, joins, quits ...)
are made once per channel and event, in a small shared cache, so what each IRC
member costs is a lookup. The sessions' cache of constant events passes such
per-connection encoders by (:meth:`chatd.session.Sessions.encoded`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from chatd import __version__
from chatd.events import (
    Acted,
    Comings,
    Departed,
    Error,
    Event,
    History,
    InRoom,
    Joined,
    Left,
    Mentioned,
    Mentions,
    Notice,
    OfflineMessage,
    Renamed,
    RoomList,
    Roster,
    Said,
    TopicChanged,
    Whispered,
    WhisperSent,
    Whois,
)
from chatd.fronts.ircwire import MAX_MESSAGE_BYTES, line, split_text
from chatd.model import HistoryEntry
from chatd.session import GREETING, PROMPT
from chatd.text import alias_key, room_key, utc_stamp

SERVER_NAME = "chatd"
# Where the server's notices about the alias's password come from: clients know
# the name from IRC networks, and "/msg NickServ IDENTIFY" is what users type.
NICKSERV = "NickServ"
NICKSERV_PREFIX = "NickServ!NickServ@services"
MOTD_START = "Message of the day:\n"
# Queries answered by an event: what the client asked, and about what.
Query = tuple[str, str]


def user_prefix(alias: str) -> str:
    """The ``nick!user@host`` chatd shows for ``alias`` (the same for every member)."""
    return f"{alias}!{alias}@{SERVER_NAME}"


def iso_time(at: float) -> str:
    """Epoch seconds as IRCv3 server-time: 2026-12-03T07:00:00.000Z."""
    whole = int(at)
    millis = int((at - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class IrcFormat:
    """One IRC client's view of the chat, and the events it is sent, as IRC lines.

    Called (as the session's ``encode``) in the order the client receives what
    it makes, so what it remembers (nick, channel, topic) is what the client knows.
    """

    __slots__ = (
        "asks_alias",
        "caps",
        "channel",
        "clock",
        "nick",
        "queries",
        "topic",
        "topic_set",
        "welcomed",
    )

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        # The nick the client knows as its own ("*" before registration).
        self.nick = "*"
        # The channel the client is in, and its topic, as it was told.
        self.channel: str | None = None
        self.topic: str | None = None
        # Who set it and when (for 333), if the client saw it set.
        self.topic_set: tuple[str, int] | None = None
        # The IRCv3 capabilities the client asked for.
        self.caps: set[str] = set()
        # The session has joined (the welcome arrived): chatting, not negotiating.
        self.welcomed = False
        # The session waits for an alias: at the start, and after refusing one.
        self.asks_alias = True
        # What the client asked that the hub's next answer is for (see expect): a
        # list, as it holds one query at most for a moment (an empty deque is 600 bytes).
        self.queries: list[Query] = []

    def __call__(self, event: Event) -> bytes:
        kind = type(event)
        if kind is Renamed:
            self._follow_rename(event)  # type: ignore[arg-type]
        elif kind is TopicChanged:
            self._follow_topic(event)  # type: ignore[arg-type]
        channel = self.channel
        if kind in _SAME_IN_A_CHANNEL and channel is not None:
            # The room's other IRC members make the same bytes: made once for them all.
            key = (channel, event)
            data = _shared.get(key)
            if data is None:
                data = "".join(_RENDER[kind](self, event)).encode("utf-8")
                _shared.put(key, data)
            return data
        return "".join(_RENDER[kind](self, event)).encode("utf-8")

    # Lines.

    def numeric(self, code: str, *params: str) -> str:
        """A numeric reply, addressed to the client's nick."""
        return line(SERVER_NAME, code, self.nick, *params)

    def server_notice(self, text: str) -> list[str]:
        """``text`` (one or more lines) as notices from the server."""
        return [line(SERVER_NAME, "NOTICE", self.nick, part) for part in text.split("\n") if part]

    def from_user(
        self, alias: str, command: str, target: str, text: str, tags: str | None = None
    ) -> list[str]:
        """``alias`` sending ``text`` to ``target``, cut to fit IRC's message size."""
        prefix = user_prefix(alias)
        room = MAX_MESSAGE_BYTES - len(f":{prefix} {command} {target} :\r\n".encode())
        if command == "PRIVMSG" and text.startswith("\x01ACTION "):
            pieces = [f"\x01ACTION {piece}\x01" for piece in split_text(text[8:-1], room - 9)]
        else:
            pieces = split_text(text, room)
        return [line(prefix, command, target, piece, tags=tags) for piece in pieces]

    def expect(self, query: str, subject: str = "") -> None:
        """The client asked something the next answer of kind ``query`` is for."""
        self.queries.append((query, subject))

    def _answered(self, *kinds: str) -> Query | None:
        """The client's oldest query, if it is one of ``kinds`` (it is then answered)."""
        if self.queries and self.queries[0][0] in kinds:
            return self.queries.pop(0)
        return None

    # Events.

    def _said(self, event: Said) -> list[str]:
        return self.from_user(event.sender, "PRIVMSG", self.channel or self.nick, event.text)

    def _acted(self, event: Acted) -> list[str]:
        target = self.channel or self.nick
        return self.from_user(event.sender, "PRIVMSG", target, f"\x01ACTION {event.text}\x01")

    def _whispered(self, event: Whispered) -> list[str]:
        return self.from_user(event.sender, "PRIVMSG", self.nick, event.text)

    def _whisper_sent(self, event: WhisperSent) -> list[str]:
        return []  # IRC clients show what they send themselves

    def _joined(self, event: Joined) -> list[str]:
        return [line(user_prefix(event.alias), "JOIN", event.room)]

    def _departed(self, event: Departed) -> list[str]:
        channel = self.channel or event.went_to
        return [line(user_prefix(event.alias), "PART", channel, f"gone to {event.went_to}")]

    def _left(self, event: Left) -> list[str]:
        return [line(user_prefix(event.alias), "QUIT", event.reason)]

    def _comings(self, event: Comings) -> list[str]:
        parts = []
        if event.joined:
            parts.append(f"{event.joined} joined ({', '.join(event.joined_names)})")
        if event.left:
            parts.append(f"{event.left} left ({', '.join(event.left_names)})")
        text = f"{'; '.join(parts)} in the last {event.seconds:g}s; {event.present} here"
        return [line(SERVER_NAME, "NOTICE", event.room, f"{text} (/names lists them)")]

    def _follow_rename(self, event: Renamed) -> None:
        if alias_key(event.old) == alias_key(self.nick):
            self.nick = event.new

    def _renamed(self, event: Renamed) -> list[str]:
        return [line(user_prefix(event.old), "NICK", event.new)]

    def _in_room(self, event: InRoom) -> list[str]:
        lines = []
        if event.welcome is not None:
            self.welcomed = True
            if event.welcome != self.nick:
                lines.append(line(user_prefix(self.nick), "NICK", event.welcome))
                self.nick = event.welcome
        elif self.channel is not None and room_key(self.channel) != room_key(event.room):
            lines.append(
                line(user_prefix(self.nick), "PART", self.channel, f"gone to {event.room}")
            )
        self.channel, self.topic, self.topic_set = event.room, event.topic, None
        lines.append(line(user_prefix(self.nick), "JOIN", event.room))
        if event.topic:
            lines.append(self.numeric("332", event.room, event.topic))
        lines += self._names(event.room, event.names)
        if event.present > len(event.names):
            more = event.present - len(event.names)
            lines.append(
                line(SERVER_NAME, "NOTICE", event.room, f"{more} more here: /names lists everyone")
            )
        return lines

    def _names(self, room: str, names: tuple[str, ...]) -> list[str]:
        """353 lines listing ``names`` (as many a line as fit), then 366."""
        budget = MAX_MESSAGE_BYTES - len(f":{SERVER_NAME} 353 {self.nick} = {room} :\r\n")
        lines: list[str] = []
        batch: list[str] = []
        size = 0
        for name in names:
            if batch and size + len(name) + 1 > budget:
                lines.append(self.numeric("353", "=", room, " ".join(batch)))
                batch, size = [], 0
            batch.append(name)
            size += len(name) + 1
        if batch:
            lines.append(self.numeric("353", "=", room, " ".join(batch)))
        lines.append(self.numeric("366", room, "End of /NAMES list."))
        return lines

    def _roster(self, event: Roster) -> list[str]:
        query = self._answered("names", "who")
        room = event.room or "*"
        if query is not None and query[0] == "who":
            lines = [
                self.numeric("352", room, name, SERVER_NAME, SERVER_NAME, name, "H", f"0 {name}")
                for name in event.names
            ]
            return [*lines, self.numeric("315", query[1] or room, "End of /WHO list.")]
        return self._names(room, event.names)

    def _room_list(self, event: RoomList) -> list[str]:
        self._answered("list")
        lines = [self.numeric("321", "Channel", "Users  Name")]
        for name, present, topic in event.rooms:
            lines.append(self.numeric("322", name, str(present), topic or ""))
        if event.more:
            lines += self.server_notice(f"{event.more} smaller rooms are not listed.")
        return [*lines, self.numeric("323", "End of /LIST")]

    def _follow_topic(self, event: TopicChanged) -> None:
        self.topic = event.topic
        self.topic_set = (event.alias, int(self.clock.seconds()))

    def topic_lines(self) -> list[str]:
        """The topic of the client's channel: 332 and, if it saw it set, 333; or 331."""
        channel = self.channel or "*"
        if not self.topic:
            return [self.numeric("331", channel, "No topic is set")]
        lines = [self.numeric("332", channel, self.topic)]
        if self.topic_set is not None:
            alias, at = self.topic_set
            lines.append(self.numeric("333", channel, user_prefix(alias), str(at)))
        return lines

    def _topic_changed(self, event: TopicChanged) -> list[str]:
        channel = self.channel or "*"
        return [line(user_prefix(event.alias), "TOPIC", channel, event.topic or "")]

    def _whois(self, event: Whois) -> list[str]:
        query = self._answered("whois", "who")
        if query is not None and query[0] == "who":
            flag = "G" if event.away is not None else "H"
            alias = event.alias
            return [
                self.numeric(
                    "352", event.room, alias, SERVER_NAME, SERVER_NAME, alias, flag, f"0 {alias}"
                ),
                self.numeric("315", query[1] or alias, "End of /WHO list."),
            ]
        alias = event.alias
        lines = [
            self.numeric("311", alias, alias, SERVER_NAME, "*", alias),
            self.numeric("319", alias, event.room),
            self.numeric("312", alias, SERVER_NAME, f"chatd {__version__}"),
        ]
        if event.away is not None:
            lines.append(self.numeric("301", alias, event.away))
        if event.registered:
            lines.append(self.numeric("330", alias, alias, "is logged in as"))
        signon = int(self.clock.seconds() - event.online_seconds)
        idle = str(int(event.idle_seconds))
        lines.append(self.numeric("317", alias, idle, str(signon), "seconds idle, signon time"))
        return [*lines, self.numeric("318", alias, "End of /WHOIS list.")]

    def _history(self, event: History) -> list[str]:
        if not event.entries:
            return [line(SERVER_NAME, "NOTICE", event.room, f"No history in {event.room}.")]
        lines = []
        for entry in event.entries:
            lines += self._history_line(event.room, entry)
        return lines

    def _history_line(self, room: str, entry: HistoryEntry) -> list[str]:
        """A line of history as it was said, with its time (see :meth:`_stamped`)."""
        tags, text = self._stamped(entry.text, entry.at)
        if entry.kind == "act":
            text = f"\x01ACTION {text}\x01"
        return self.from_user(entry.alias, "PRIVMSG", room, text, tags=tags)

    def _stamped(self, text: str, at: float) -> tuple[str | None, str]:
        """The tags and the text of a line said at ``at``, not now: its time as an IRCv3
        server-time tag for a client that asked for them, else at the start of the text."""
        if "server-time" in self.caps:
            return f"time={iso_time(at)}", text
        return None, f"[{utc_stamp(at)}] {text}"

    def _mentioned(self, event: Mentioned) -> list[str]:
        # IRC clients find their nick in a line and highlight it (and ring) themselves.
        return _RENDER[type(event.line)](self, event.line)

    def _offline_message(self, event: OfflineMessage) -> list[str]:
        """A message that waited, as the private message it was, with when it was sent."""
        tags, text = self._stamped(event.text, event.at)
        return self.from_user(event.sender, "PRIVMSG", self.nick, text, tags=tags)

    def _mentions(self, event: Mentions) -> list[str]:
        if not event.entries:
            return self.server_notice("No lines mentioned you while you were away.")
        lines = self.server_notice(
            f"Lines that mentioned you while you were away ({len(event.entries)}):"
        )
        for entry in event.entries:
            said = f"* {entry.alias}" if entry.kind == "act" else f"<{entry.alias}>"
            lines += self.server_notice(
                f"[{utc_stamp(entry.at)}] {entry.room} {said} {entry.text}"
            )
        return lines + self.server_notice("End of mentions ('/mentions clear' forgets them).")

    def _notice(self, event: Notice) -> list[str]:
        text = event.text
        if event == GREETING:
            return self.server_notice(f"*** chatd {__version__}: welcome")
        if event == PROMPT:
            # The alias handed over was refused (the error before this said why):
            # the session waits for another.
            self.asks_alias = True
            return []
        if not self.welcomed:
            return self.server_notice(text)
        if self._answered("notice") is not None:
            return []  # "bob is away": no automatic reply to a NOTICE (see IrcConnection)
        if self._answered("away") is not None:
            away = text.startswith("You are marked as away")
            return [self.numeric("306" if away else "305", text)]
        if text.startswith(MOTD_START):
            return []  # the welcome's: the client had it after 001-005 (see IrcConnection)
        if self.channel is not None and text.startswith(f"Topic of {self.channel}: "):
            self.topic = text.removeprefix(f"Topic of {self.channel}: ")
            return [self.numeric("332", self.channel, self.topic)]
        return self.server_notice(text)

    def motd_lines(self, motd: str | None) -> list[str]:
        """The message of the day as 375/372/376, or 422 when there is none."""
        if not motd:
            return [self.numeric("422", "No message of the day.")]
        lines = [self.numeric("375", f"- {SERVER_NAME} Message of the day -")]
        lines += [self.numeric("372", f"- {part}") for part in motd.split("\n")]
        return [*lines, self.numeric("376", "End of /MOTD command.")]

    def _error(self, event: Error) -> list[str]:
        query = self._answered("whois", "who", "names", "away", "list", "notice")
        if query is not None and query[0] == "notice":
            return []  # no automatic reply to a NOTICE, not even an error (see IrcConnection)
        if query is not None and query[0] == "whois" and event.text.startswith("No such user"):
            return [
                self.numeric("401", query[1], "No such nick"),
                self.numeric("318", query[1], "End of /WHOIS list."),
            ]
        if query is not None and query[0] == "who":
            return [
                *self.server_notice(event.text),
                self.numeric("315", query[1], "End of /WHO list."),
            ]
        return self.server_notice(event.text)


# Broadcasts whose IRC form depends on the channel alone, never on who receives them;
# what is said in a channel is made once for all its IRC members (see __call__).
_SAME_IN_A_CHANNEL = frozenset(
    {Said, Acted, Joined, Departed, Left, Comings, Renamed, TopicChanged}
)
# How many of their last renderings are kept, and how many bytes they may hold
# (a turn's worth of lines in the busiest rooms is far less of either).
MAX_SHARED_KEPT = 1024
MAX_SHARED_BYTES = 4 * 1024 * 1024


class SharedRenderings(dict[tuple[str, Event], bytes]):
    """The last renderings of channel broadcasts, by channel and event; emptied when
    full, by count or by size: --max-line-bytes can make a line 1 MB. A dict, so that
    the lookup each IRC member of a channel costs is dict.get's."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        # What the renderings and the events' texts (kept in the keys) hold, about:
        # an event's text is no longer than its rendering.
        self.size = 0

    def put(self, key: tuple[str, Event], data: bytes) -> None:
        cost = 2 * len(data)
        if len(self) >= MAX_SHARED_KEPT or self.size + cost > MAX_SHARED_BYTES:
            self.clear()
            self.size = 0
        if cost <= MAX_SHARED_BYTES:
            self[key] = data
            self.size += cost


_shared = SharedRenderings()

_RENDER: dict[type, Callable[[IrcFormat, Any], list[str]]] = {
    Said: IrcFormat._said,
    Acted: IrcFormat._acted,
    Whispered: IrcFormat._whispered,
    WhisperSent: IrcFormat._whisper_sent,
    Joined: IrcFormat._joined,
    Departed: IrcFormat._departed,
    Left: IrcFormat._left,
    Comings: IrcFormat._comings,
    Renamed: IrcFormat._renamed,
    InRoom: IrcFormat._in_room,
    Roster: IrcFormat._roster,
    RoomList: IrcFormat._room_list,
    TopicChanged: IrcFormat._topic_changed,
    Whois: IrcFormat._whois,
    History: IrcFormat._history,
    Notice: IrcFormat._notice,
    Error: IrcFormat._error,
    Mentioned: IrcFormat._mentioned,
    OfflineMessage: IrcFormat._offline_message,
    Mentions: IrcFormat._mentions,
}
