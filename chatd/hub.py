"""Who is online, in which room, and who hears what: the one place that decides delivery.

The hub knows aliases, rooms and members, never sockets or byte formats. Any
front end (the line protocol today; TLS, WebSocket or SSH sessions tomorrow)
joins its sessions here as :class:`Member` objects, and a multi-node bus can
later sit behind the same methods. All user text passes
:func:`chatd.text.clean_text` here, so no front end can forget to sanitise.

Every member is in exactly one room. Broadcasts are batched per room and flushed
at the end of the reactor turn (see :mod:`chatd.room`). Anything sent to one
member alone, and any change of room membership, first flushes what is pending,
so each member still sees events in the order they happened.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from chatd.accounts import Accounts
from chatd.admission import admission_key
from chatd.bans import BanRefused, Bans, ban_target
from chatd.counters import Counters
from chatd.events import (
    Acted,
    Departed,
    Error,
    Event,
    History,
    InRoom,
    Joined,
    Left,
    Notice,
    Renamed,
    RoomList,
    Roster,
    Said,
    TopicChanged,
    Whispered,
    WhisperSent,
    Whois,
)
from chatd.model import Ban, HistoryEntry
from chatd.room import Presence, Room, deliver
from chatd.text import (
    AliasRefused,
    alias_key,
    check_alias,
    check_room,
    clean_text,
    duration,
    room_key,
    utc_stamp,
)

DEFAULT_ROOM = "#lobby"
# How many names a member is shown on entering a room. In a big room, listing
# everyone on every arrival would cost a line of O(members) each time, O(members^2)
# in all, for a list nobody reads; /who gives the whole list on request.
LISTED_NAMES = 30
MAX_TOPIC_CHARS = 300
# Lines of history kept in memory per room, for replay on arrival and /history
# (the store keeps more on disk), and how many rooms' histories are kept: the
# least recently used beyond that are forgotten in memory, not on disk. A room's
# history is read from the store when it is opened, so what is in memory is
# bounded by these two, however many rooms were ever used (at most 200 x 100
# lines of --max-line-bytes each).
HISTORY_KEPT = 100
HISTORY_ROOMS_KEPT = 200
# Topics of rooms not open kept in memory (the least recently used beyond that are
# read from the store again when their room opens).
TOPICS_KEPT = 1000
DEFAULT_HISTORY_REPLAY = 20
MOTD_SETTING = "motd"


class HubStore(Protocol):
    """What the hub needs persisted (implemented by :class:`chatd.store.Store`)."""

    def add_ban(self, ban: Ban) -> Deferred[None]:
        """Keep ``ban``; the Deferred fires once it is on disk."""

    def remove_ban(self, mask: str) -> Deferred[bool]:
        """Forget the ban on ``mask``."""

    def set_setting(self, key: str, value: str | None) -> Deferred[None]:
        """Keep a setting (the MOTD); None deletes it."""

    def append_history(self, entry: HistoryEntry) -> None:
        """Queue a line for writing; cheap, called for every chat line."""

    def recent_history(
        self, room: str, limit: int, before: float | None = None
    ) -> Deferred[list[HistoryEntry]]:
        """The newest ``limit`` lines of ``room``, oldest first (unwritten ones too)."""

    def set_topic(self, room: str, topic: str | None, set_by: str) -> Deferred[Any]:
        """Persist a room's topic (None clears it)."""

    def topic(self, room: str) -> Deferred[str | None]:
        """The topic of ``room`` (in any case), or None if it has none."""


class Member(Protocol):
    """A session as the hub sees it.

    ``encode`` must be the same object for every member of one front end (a plain
    function, not a bound method): the hub uses it as the key under which it
    encodes each broadcast event once and hands the same bytes to all of them.
    """

    alias: str | None
    encode: Callable[[Event], bytes]
    # The peer's IP address, for IP bans; None where there is none (a UNIX socket).
    host: str | None
    # Where the member connects from, for the log (e.g. 192.0.2.1:50312).
    peer: str

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the member's connection; never blocks, never raises."""

    def disconnect(self, reason: str) -> None:
        """Close the member's connection after what was already sent."""


class Hub:
    """Members online under unique, case-insensitive aliases, each in one room."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime | None = None,
        default_room: str = DEFAULT_ROOM,
        store: HubStore | None = None,
        history_replay: int = DEFAULT_HISTORY_REPLAY,
        accounts: Accounts | None = None,
        keep_history: bool = True,
        history_max_age_seconds: float | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        # Public so that front ends schedule their timers on the same clock.
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.default_room = check_room(default_room)
        self._members: dict[str, Member] = {}
        self._presence: dict[Member, Presence] = {}
        self._rooms: dict[str, Room] = {}
        # Totals for the metrics endpoint; front ends count what they receive here too.
        self.counters = Counters()
        # Room key -> its topic, or None for a room known to have none; bounded
        # (TOPICS_KEPT), a room's topic is read from the store when it opens.
        self._topics: OrderedDict[str, str | None] = OrderedDict()
        self._store = store
        # Registered aliases and operators; None runs without them (tests, no store).
        self.accounts = accounts
        self.bans = Bans()
        # The message of the day: an operator's (/motd, kept in the store) wins
        # over the one read from --motd FILE.
        self.motd_file_text: str | None = None
        self.motd_set_text: str | None = None
        self.history_replay = min(history_replay, HISTORY_KEPT)
        # Off (--history-keep 0): nothing is recorded, replayed or written.
        self.keep_history = keep_history
        self.history_max_age_seconds = history_max_age_seconds
        self._history: OrderedDict[str, deque[HistoryEntry]] = OrderedDict()
        # Room key -> members waiting for its history, while it is read from the store.
        self._loading: dict[str, list[Member]] = {}
        # Alias key -> when the mute ends (clock seconds; inf for never).
        self._mutes: dict[str, float] = {}
        # Address (IPv6: its /64, as connections are counted) -> the alias key whose
        # mute it carries: a muted person back under another alias is still muted.
        self._muted_hosts: dict[str, str] = {}
        # Members whose delivery raised (a front end bug): cut off, see _drop_failed.
        self._failed: list[Member] = []
        self._closing = False
        # Rooms with broadcasts waiting for the end of this reactor turn.
        self._pending: list[Room] = []
        self._flush_call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._members)

    # Who is where.

    def is_online(self, member: Member) -> bool:
        """Whether ``member`` has joined and not yet left."""
        alias = member.alias
        return alias is not None and self._members.get(alias_key(alias)) is member

    @property
    def room_count(self) -> int:
        """Rooms open now (the default room always is)."""
        return len(self._rooms)

    def online(self) -> tuple[str, ...]:
        """Every alias online, sorted case-insensitively."""
        return tuple(sorted((m.alias for m in self._members.values()), key=alias_key))  # type: ignore[misc]

    def room_of(self, member: Member) -> str:
        """The name of the room ``member`` is in."""
        return self._room(member).name

    def member_named(self, alias: str) -> Member | None:
        """The member online as ``alias`` (in any case), if any."""
        return self._members.get(alias_key(alias))

    def check_available(self, alias: str, account: str | None = None) -> str:
        """Return ``alias`` if a newcomer may take it now, else raise AliasRefused.

        A registered alias is only available to whoever gave its password: the
        member whose ``account`` (an alias key) it is.
        """
        check_alias(alias)
        if alias_key(alias) in self._members:
            raise AliasRefused(f"The alias {alias} is taken.")
        registered = self.accounts is not None and self.accounts.is_registered(alias)
        if registered and alias_key(alias) != account:
            raise AliasRefused(
                f"The alias {alias} is registered; connect with it and its password."
            )
        return alias

    # Arriving, moving, leaving.

    def load(
        self,
        topics: dict[str, str],
        history: dict[str, list[HistoryEntry]],
        bans: list[Ban] | None = None,
        motd: str | None = None,
    ) -> None:
        """Take up what the store kept: topics, recent history, bans and the MOTD."""
        for ban in bans or ():
            self.bans.add(ban)
        self.motd_set_text = motd
        for room, topic in topics.items():
            self._remember_topic(room, topic)
            if (open_room := self._rooms.get(room_key(room))) is not None:
                open_room.topic = topic
        if self.keep_history:
            for room, entries in history.items():
                self._room_history(room).extend(entries)
        self._load_missing_histories()

    def join(
        self, member: Member, alias: str, registered: bool = False, replay: bool = True
    ) -> None:
        """Put ``member`` online as ``alias`` in the default room, and welcome it.

        ``registered`` says the front end has checked the alias's password;
        ``replay`` whether the member wants recent history shown on entering rooms.
        Raises AliasRefused (and changes nothing) if the alias may not be taken.
        """
        account = alias_key(alias) if registered else None
        self.check_available(alias, account)
        member.alias = alias
        self._members[alias_key(alias)] = member
        room = self._open_room(self.default_room)
        self._presence[member] = Presence(room, self.clock.seconds(), account, replay)
        self.log.info("{alias} joined from {peer}", alias=alias, peer=member.peer)
        self._enter(member, room, came_from=None)

    def move(self, member: Member, room_name: str) -> None:
        """Move ``member`` to ``room_name`` (opening it if need be), telling both rooms.

        Raises RoomRefused if the name breaks the room rule.
        """
        check_room(room_name)
        old = self._room(member)
        self._touch(member)
        if room_key(room_name) == room_key(old.name):
            self.tell(member, Error(f"You are already in {old.name}."))
            return
        new = self._open_room(room_name)
        self._exit(member, old)
        self._queue(old, Departed(member.alias, new.name))  # type: ignore[arg-type]
        self._close_if_unused(old)
        self._enter(member, new, came_from=old.name)

    def leave(self, member: Member, reason: str) -> None:
        """Take ``member`` offline and announce it, once, however often it is called."""
        if not self.is_online(member):
            return
        alias = member.alias
        assert alias is not None
        del self._members[alias_key(alias)]
        room = self._room(member)
        self._exit(member, room)
        del self._presence[member]
        reason = clean_text(reason) or "left"
        self.log.info("{alias} left ({reason})", alias=alias, reason=reason)
        if not self._closing:
            self._queue(room, Left(alias, reason))
        self._close_if_unused(room)

    def quit(self, member: Member, reason: str) -> None:
        """``member`` leaves of their own will, with ``reason`` shown to their room.

        A muted member's reason is not shown: it would be a line the room sees.
        """
        reason = clean_text(reason)
        if reason and self._muted(member, quietly=True):
            reason = ""
        self.leave(member, f"Quit: {reason}" if reason else "Quit")

    def rename(self, member: Member, new_alias: str) -> None:
        """Change ``member``'s alias, freeing the old one, and tell their room.

        Raises AliasRefused if the new alias may not be taken. A change of case
        only (alice to Alice) is allowed: the name stays the member's own.
        """
        old = self._alias_of(member)
        if new_alias == old:
            raise AliasRefused(f"You are already known as {old}.")
        if self._muted(member, quietly=True):
            raise AliasRefused("You are muted: you cannot change your alias now.")
        if alias_key(new_alias) == alias_key(old):
            check_alias(new_alias)
        else:
            self.check_available(new_alias, self._presence_of(member).account)
            if self.banned(alias=new_alias) is not None:
                raise AliasRefused(f"The alias {new_alias} is banned.")
        del self._members[alias_key(old)]
        member.alias = new_alias
        self._members[alias_key(new_alias)] = member
        self.log.info("{old} is now known as {new}", old=old, new=new_alias)
        self._queue(self._room(member), Renamed(old, new_alias))
        self._follow_rename(old, new_alias)

    def _follow_rename(self, old: str, new: str) -> None:
        """A mute and an ignore follow the person, not the name they had."""
        if alias_key(old) == alias_key(new):
            return
        if alias_key(old) in self._mutes:
            self._mutes[alias_key(new)] = self._mutes.pop(alias_key(old))
            for host, key in self._muted_hosts.items():
                if key == alias_key(old):
                    self._muted_hosts[host] = alias_key(new)
        for presence in self._presence.values():
            if alias_key(old) in presence.ignores:
                presence.ignores.discard(alias_key(old))
                presence.ignores.add(alias_key(new))

    # Talking.

    def say(self, member: Member, text: str) -> None:
        """Relay a chat line to everyone else in the sender's room; blank lines are dropped."""
        text = clean_text(text)
        if text and not self._muted(member):
            self._spoke(member, "say", text)

    def act(self, member: Member, text: str) -> None:
        """Relay a ``/me`` action to everyone else in the sender's room."""
        text = clean_text(text)
        if text and not self._muted(member):
            self._spoke(member, "act", text)

    def _spoke(self, member: Member, kind: str, text: str) -> None:
        """Relay what ``member`` said (kind "say") or did ("act") to their room; record it."""
        alias = self._touch(member)
        room = self._room(member)
        event = Said(alias, text) if kind == "say" else Acted(alias, text)
        self._queue(room, event, member, alias_key(alias))
        self._record(room, kind, alias, text)

    def whisper(self, member: Member, recipient_alias: str, text: str) -> None:
        """Deliver a private message (to any room) and confirm it to the sender."""
        sender = self._touch(member)
        if self._muted(member):
            return
        recipient = self._members.get(alias_key(recipient_alias))
        text = clean_text(text)
        if recipient is None:
            self.tell(member, Error(f"No such user: {clean_text(recipient_alias)}"))
            return
        if not text:
            self.tell(member, Error("Empty private message not sent."))
            return
        presence = self._presence[recipient]
        # Someone ignoring the sender is not told; the sender is not told either.
        if alias_key(sender) not in presence.ignores:
            self.tell(recipient, Whispered(sender, text))
        self.tell(member, WhisperSent(recipient.alias, text))  # type: ignore[arg-type]
        if presence.away is not None:
            self.tell(member, Notice(f"{recipient.alias} is away: {presence.away}"))

    def set_topic(self, member: Member, topic: str | None) -> bool:
        """Set the topic of the member's room, or clear it with None, and tell the room.

        Returns whether the topic changed (a muted member's, or an empty one, does not).
        """
        room = self._room(member)
        self._touch(member)
        if self._muted(member):
            return False
        cut = False
        if topic is not None:
            cleaned = clean_text(topic)
            topic, cut = cleaned[:MAX_TOPIC_CHARS], len(cleaned) > MAX_TOPIC_CHARS
            if not topic:
                self.tell(member, Error("An empty topic is not set ('/topic -' clears it)."))
                return False
        self._remember_topic(room.name, topic)
        room.topic = topic
        self._queue(room, TopicChanged(member.alias, topic))  # type: ignore[arg-type]
        if cut:  # told after the room has seen the topic, cut, set
            self.tell(member, Notice(f"Your topic was cut to {MAX_TOPIC_CHARS} characters."))
        if self._store is not None:
            saved = self._store.set_topic(room.name, topic, member.alias)  # type: ignore[arg-type]
            saved.addErrback(self._log_store_failure, "saving the topic of {room}", room=room.name)
        return True

    def announce(self, text: str) -> None:
        """Send a server notice to everyone online, in every room."""
        for room in self._rooms.values():
            self._queue(room, Notice(text))

    # Answers to one member.

    def roster(self, member: Member, everyone: bool = False) -> None:
        """Tell ``member`` who is in their room, or who is online anywhere."""
        if everyone:
            self.tell(member, Roster(None, self.online()))
        else:
            room = self._room(member)
            self.tell(member, Roster(room.name, room.names()))

    def list_rooms(self, member: Member) -> None:
        """Tell ``member`` which rooms are in use, with their counts and topics."""
        rooms = sorted(self._rooms.values(), key=lambda room: room_key(room.name))
        self.tell(member, RoomList(tuple((r.name, len(r), r.topic) for r in rooms)))

    def show_topic(self, member: Member) -> None:
        """Tell ``member`` the topic of their room."""
        room = self._room(member)
        if room.topic:
            self.tell(member, Notice(f"Topic of {room.name}: {room.topic}"))
        else:
            self.tell(member, Notice(f"{room.name} has no topic."))

    def show_history(self, member: Member, count: int) -> None:
        """Tell ``member`` up to ``count`` (at most HISTORY_KEPT) recent lines of their room."""
        room = self._room(member)
        if not self.keep_history:
            self.tell(member, Error("This server keeps no history."))
            return
        self.tell(member, History(room.name, self._recent(room, min(count, HISTORY_KEPT))))

    def set_replay(self, member: Member, replay: bool) -> None:
        """Whether ``member`` is shown recent history on entering a room."""
        self._presence_of(member).replay = replay
        state = "on" if replay else "off"
        self.tell(member, Notice(f"History replay on entering a room is {state}."))

    def whois(self, member: Member, alias: str) -> None:
        """Tell ``member`` where ``alias`` is, since when, how idle, and if away."""
        other = self._members.get(alias_key(alias))
        if other is None:
            self.tell(member, Error(f"No such user: {clean_text(alias)}"))
            return
        presence = self._presence[other]
        now = self.clock.seconds()
        self.tell(
            member,
            Whois(
                other.alias,  # type: ignore[arg-type]
                presence.room.name,
                now - presence.since,
                now - presence.active_at,
                presence.account == alias_key(other.alias),  # type: ignore[arg-type]
                presence.away,
            ),
        )

    def set_away(self, member: Member, message: str | None) -> bool:
        """Mark ``member`` away with ``message`` (or back, with None or a blank message).

        Returns whether it changed: a muted member's away message is seen by
        others (/whois, private messages), so it is refused like their lines.
        """
        away = clean_text(message)[:MAX_TOPIC_CHARS] if message else ""
        if away and self._muted(member):
            return False
        self._presence_of(member).away = away or None
        if away:
            self.tell(member, Notice(f"You are marked as away: {away}"))
        else:
            self.tell(member, Notice("You are no longer marked as away."))
        return True

    def ignore(self, member: Member, alias: str) -> None:
        """Stop showing ``member`` the chat lines, actions and private messages of ``alias``."""
        ignores = self._presence_of(member).ignores
        other = self._members.get(alias_key(alias))
        if other is None:
            self.tell(member, Error(f"No such user: {clean_text(alias)}"))
        elif other is member:
            self.tell(member, Error("You cannot ignore yourself."))
        else:
            ignores.add(alias_key(other.alias))  # type: ignore[arg-type]
            self.tell(
                member, Notice(f"Ignoring {other.alias}; /unignore {other.alias} undoes it.")
            )

    def unignore(self, member: Member, alias: str) -> None:
        """Show ``member`` what ``alias`` says again."""
        ignores = self._presence_of(member).ignores
        if alias_key(alias) in ignores:
            ignores.discard(alias_key(alias))
            self.tell(member, Notice(f"No longer ignoring {clean_text(alias)}."))
        else:
            self.tell(member, Error(f"You are not ignoring {clean_text(alias)}."))

    def ignored(self, member: Member) -> tuple[str, ...]:
        """The alias keys ``member`` ignores (for saving with a registration)."""
        return tuple(sorted(self._presence_of(member).ignores))

    def restore_ignores(self, member: Member, ignores: tuple[str, ...]) -> None:
        """Take up the ignore list a registered member saved in an earlier session."""
        self._presence_of(member).ignores.update(alias_key(alias) for alias in ignores)

    def is_registered(self, member: Member) -> bool:
        """Whether ``member`` is using a registered alias whose password it gave."""
        return self._presence_of(member).account == alias_key(member.alias)  # type: ignore[arg-type]

    def mark_registered(self, member: Member, alias: str) -> None:
        """Note that ``alias`` was just registered by ``member`` (who may have gone since,
        or changed alias: then there is nothing to note about them)."""
        if self.is_online(member) and member.alias == alias:
            self._presence_of(member).account = alias_key(alias)

    # Bans and the message of the day.

    @property
    def motd(self) -> str | None:
        """The message of the day shown at login, if there is one."""
        return self.motd_set_text or self.motd_file_text

    def banned(self, host: str | None = None, alias: str | None = None) -> Ban | None:
        """The ban in force on ``host`` or ``alias``, if any."""
        return self.bans.match(self.clock.seconds(), host=host, alias=alias)

    def ban(self, operator: Member, target: str, seconds: float | None, reason: str) -> None:
        """Ban an alias, IP or CIDR block: kept in the store, then enforced on who is online."""
        if (name := self._require_operator(operator)) is None:
            return
        try:
            mask, kind = ban_target(target)
        except BanRefused as refusal:
            self.tell(operator, Error(str(refusal)))
            return
        if kind == "alias" and mask == alias_key(operator.alias):  # type: ignore[arg-type]
            self.tell(operator, Error("You cannot ban yourself."))
            return
        now = self.clock.seconds()
        reason = clean_text(reason) or "no reason given"
        ban = Ban(mask, kind, reason, name, now, None if seconds is None else now + seconds)
        saved = self._store.add_ban(ban) if self._store is not None else succeed(None)
        saved.addCallbacks(
            lambda _: self._enforce_ban(operator, name, ban),
            self._ban_not_saved,
            errbackArgs=(operator, mask),
        )

    def _ban_not_saved(self, failure: Any, operator: Member, mask: str) -> None:
        self._log_store_failure(failure, "saving the ban on {mask}", mask=mask)
        if self.is_online(operator):
            self.tell(operator, Error(f"The ban on {mask} could not be saved; try again later."))

    def _enforce_ban(self, operator: Member, name: str, ban: Ban) -> None:
        self.bans.add(ban)
        until = "for good" if ban.expires_at is None else f"until {utc_stamp(ban.expires_at)}"
        self.log.info(
            "operator {name} ({alias}) banned {kind} {mask} {until}: {reason}",
            name=name,
            alias=operator.alias,
            kind=ban.kind,
            mask=ban.mask,
            until=until,
            reason=ban.reason,
        )
        self.tell(operator, Notice(f"Banned {ban.kind} {ban.mask} {until}."))
        for member in list(self._members.values()):
            if member is not operator and self.banned(member.host, member.alias) is ban:
                self._cut_off(member, ban, f"Banned by {operator.alias}", f"operator {name}")

    def _cut_off(self, member: Member, ban: Ban, announced: str, logged: str) -> None:
        """Tell ``member`` of ``ban``, announce their going (``announced``: who banned
        them) and disconnect them (``logged``: by whom, for the log)."""
        self.tell(member, Error(f"You are banned: {ban.reason}"))
        self.leave(member, f"{announced}: {ban.reason}")
        member.disconnect(f"banned by {logged}")

    def unban(self, operator: Member, target: str) -> None:
        """Lift a ban (given as it was set, or as /bans shows it)."""
        if (name := self._require_operator(operator)) is None:
            return
        try:
            mask, _ = ban_target(target)
        except BanRefused as refusal:
            self.tell(operator, Error(str(refusal)))
            return
        if not self.bans.remove(mask):
            self.tell(operator, Error(f"No ban on {mask}."))
            return
        self.log.info(
            "operator {name} ({alias}) lifted the ban on {mask}",
            name=name,
            alias=operator.alias,
            mask=mask,
        )
        if self._store is not None:
            self._store.remove_ban(mask).addErrback(
                self._log_store_failure, "removing the ban on {mask}", mask=mask
            )
        self.tell(operator, Notice(f"Lifted the ban on {mask}."))

    def list_bans(self, operator: Member) -> None:
        """Tell an operator the bans in force."""
        if self._require_operator(operator) is None:
            return
        self.banned()  # drops the expired ones
        lines = [f"Bans ({len(list(self.bans))}):"]
        for ban in self.bans:
            until = "for good" if ban.expires_at is None else f"until {utc_stamp(ban.expires_at)}"
            lines.append(f"  {ban.mask} ({ban.kind}) by {ban.set_by} {until}: {ban.reason}")
        self.tell(operator, Notice("\n".join(lines)))

    def show_motd(self, member: Member) -> None:
        """Tell ``member`` the message of the day."""
        motd = self.motd
        self.tell(
            member, Notice(f"Message of the day:\n{motd}" if motd else "No message of the day.")
        )

    def set_motd(self, operator: Member, text: str | None) -> None:
        """Set the message of the day (None goes back to --motd FILE's, if any)."""
        if (name := self._require_operator(operator)) is None:
            return
        text = clean_text(text) if text is not None else None
        self.motd_set_text = text or None
        self.log.info(
            "operator {name} ({alias}) set the MOTD to {text!r}",
            name=name,
            alias=operator.alias,
            text=self.motd_set_text,
        )
        if self._store is not None:
            self._store.set_setting(MOTD_SETTING, self.motd_set_text).addErrback(
                self._log_store_failure, "saving the MOTD"
            )
        self.show_motd(operator)

    # Operators.

    def make_operator(self, member: Member, name: str) -> None:
        """Give ``member`` operator rights, as ``name`` (the front end checked the password)."""
        self._presence_of(member).operator = name
        self.log.info("{alias} is now operator {name}", alias=member.alias, name=name)
        self.tell(member, Notice(f"You are now an operator ({name})."))

    def operator_name(self, member: Member) -> str | None:
        """The operator name ``member`` logged in as, or None if it is no operator."""
        return self._presence_of(member).operator

    def kick(self, operator: Member, alias: str, reason: str) -> None:
        """Disconnect ``alias``, telling them and their room who did it and why."""
        if (name := self._require_operator(operator)) is None:
            return
        target = self._members.get(alias_key(alias))
        if target is None:
            self.tell(operator, Error(f"No such user: {clean_text(alias)}"))
            return
        reason = clean_text(reason) or "no reason given"
        self.log.info(
            "operator {name} ({alias}) kicked {target}: {reason}",
            name=name,
            alias=operator.alias,
            target=target.alias,
            reason=reason,
        )
        self.tell(target, Notice(f"You were kicked by {operator.alias}: {reason}"))
        self.leave(target, f"Kicked by {operator.alias}: {reason}")
        target.disconnect(f"kicked by operator {name}")
        if target is not operator:
            self.tell(operator, Notice(f"Kicked {target.alias}."))

    def mute(self, operator: Member, alias: str, seconds: float | None) -> None:
        """Stop anyone seeing what ``alias`` says, for ``seconds`` or until unmuted."""
        if (name := self._require_operator(operator)) is None:
            return
        target = self._members.get(alias_key(alias))
        if target is None:
            self.tell(operator, Error(f"No such user: {clean_text(alias)}"))
            return
        until = float("inf") if seconds is None else self.clock.seconds() + seconds
        self._mutes[alias_key(target.alias)] = until  # type: ignore[arg-type]
        if (address := admission_key(target.host)) is not None:
            self._muted_hosts[address] = alias_key(target.alias)  # type: ignore[arg-type]
        how_long = "until unmuted" if seconds is None else f"for {duration(seconds)}"
        self.log.info(
            "operator {name} ({alias}) muted {target} {how_long}",
            name=name,
            alias=operator.alias,
            target=target.alias,
            how_long=how_long,
        )
        self.tell(target, Notice(f"You have been muted {how_long}: nobody sees your lines."))
        self.tell(operator, Notice(f"Muted {target.alias} {how_long}."))

    def unmute(self, operator: Member, alias: str) -> None:
        """Let ``alias`` be heard again."""
        if (name := self._require_operator(operator)) is None:
            return
        if not self._unmute(alias_key(alias)):
            self.tell(operator, Error(f"{clean_text(alias)} is not muted."))
            return
        self.log.info(
            "operator {name} ({alias}) unmuted {target}",
            name=name,
            alias=operator.alias,
            target=alias,
        )
        target = self._members.get(alias_key(alias))
        if target is not None:
            self.tell(target, Notice("You are no longer muted."))
        self.tell(operator, Notice(f"Unmuted {clean_text(alias)}."))

    def tell(self, member: Member, event: Event) -> None:
        """Deliver ``event`` to ``member`` alone, after anything already broadcast to them."""
        presence = self._presence.get(member)
        if presence is not None:
            presence.room.catch_up(member)
        data = member.encode(event)
        if deliver(member, data, self._failed):
            self.counters.delivered(data)
        self._drop_failed()

    # The end of the turn, and of everything.

    def flush(self) -> None:
        """Deliver every room's broadcasts of this turn now."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        pending, self._pending = self._pending, []
        for room in pending:
            try:
                room.flush()
            except Exception:  # a bug; the other rooms' turn must still be delivered
                self.log.failure("flushing {room}", room=room.name)
        self._drop_failed()

    def _drop_failed(self) -> None:
        """Cut off the members whose delivery raised: they leave, the others carry on."""
        # Leaving and disconnecting are idempotent; a member who fails again while
        # leaving (their own catch-up) comes back to this loop once more, no more.
        while self._failed:
            member = self._failed.pop()
            self.leave(member, "Delivery failed")
            try:
                member.disconnect("delivery failed")
            except Exception:
                self.log.failure("disconnecting {peer}", peer=member.peer)

    def close(self, reason: str) -> None:
        """Tell everyone the hub is closing and disconnect them, without leave notices.

        Announcing each departure to everyone still online would cost a write per
        pair of members, for news nobody will read.
        """
        self._closing = True
        self.announce(reason)
        self.flush()
        for member in list(self._members.values()):
            member.disconnect(reason)

    # Inside.

    def _presence_of(self, member: Member) -> Presence:
        presence = self._presence.get(member)
        if presence is None:
            raise LookupError("member is not online")
        return presence

    def _room(self, member: Member) -> Room:
        return self._presence_of(member).room

    def _alias_of(self, member: Member) -> str:
        self._room(member)
        return member.alias  # type: ignore[return-value]

    def _require_operator(self, member: Member) -> str | None:
        name = self._presence_of(member).operator
        if name is None:
            self.tell(member, Error("Not permitted: operators only."))
        return name

    def _muted(self, member: Member, quietly: bool = False) -> bool:
        """Whether ``member`` is muted now (telling them so, unless ``quietly``).

        Muted is the alias, or the address the mute was given at (the same person
        back under another alias). The common case, nobody muted, costs nothing.
        """
        if not self._mutes:
            return False
        key = alias_key(member.alias)  # type: ignore[arg-type]
        if key not in self._mutes and (address := admission_key(member.host)) is not None:
            key = self._muted_hosts.get(address, key)
        until = self._mutes.get(key)
        if until is None:
            return False
        if until <= self.clock.seconds():
            self._unmute(key)
            return False
        if not quietly:
            self.tell(member, Error("You are muted: nobody sees your lines."))
        return True

    def _unmute(self, key: str) -> bool:
        """Lift the mute of alias key ``key`` and of the addresses it carries; False if none."""
        for host in [host for host, muted in self._muted_hosts.items() if muted == key]:
            del self._muted_hosts[host]
        return self._mutes.pop(key, None) is not None

    def _touch(self, member: Member) -> str:
        """Note that ``member`` did something (for idle times); return its alias."""
        self._presence_of(member).active_at = self.clock.seconds()
        return member.alias  # type: ignore[return-value]

    def _open_room(self, name: str) -> Room:
        room = self._rooms.get(room_key(name))
        if room is None:
            room = Room(name, self._topics.get(room_key(name)), self.counters, self._failed)
            self._rooms[room_key(name)] = room
            self._load_topic(room.name)
            self._load_history(room.name)
        return room

    def _remember_topic(self, room: str, topic: str | None) -> None:
        """Keep ``room``'s topic (None: it has none) among the TOPICS_KEPT last used."""
        key = room_key(room)
        self._topics[key] = topic
        self._topics.move_to_end(key)
        while len(self._topics) > TOPICS_KEPT:
            self._topics.popitem(last=False)

    def _load_topic(self, name: str) -> None:
        """Read room ``name``'s topic from the store, unless it is known already.

        Only the topics set last are read at start, so that rooms nobody uses
        cost no memory; when the topic is read, those already in the room are
        told it (the first to enter was welcomed before the store answered).
        """
        if self._store is None or room_key(name) in self._topics:
            return
        read = self._store.topic(name)
        read.addCallbacks(
            self._topic_read,
            self._room_not_read,
            callbackArgs=(name,),
            errbackArgs=("topic", name),
        )

    def _topic_read(self, topic: str | None, name: str) -> None:
        key = room_key(name)
        if key in self._topics:
            return  # set meanwhile: that one is newer
        self._remember_topic(name, topic)
        room = self._rooms.get(key)
        if room is None or topic is None or room.topic is not None:
            return
        room.topic = topic
        for member in list(room.members):
            self.tell(member, Notice(f"Topic of {room.name}: {topic}"))

    def _load_missing_histories(self) -> None:
        """Read the history of every open room that has none in memory (after a reload)."""
        for room in self._rooms.values():
            self._load_history(room.name)

    def _load_history(self, name: str) -> None:
        """Read room ``name``'s recent history from the store, unless it is in memory.

        Only the most recently active rooms' histories are read at start; any
        other room's is read when it is opened, so memory holds what is in use.
        Lines said while it is read are kept, after the ones read.
        """
        key = room_key(name)
        if not self.keep_history or self._store is None:
            return
        if key in self._history or key in self._loading:
            return
        self._loading[key] = []
        self._room_history(name)
        read = self._store.recent_history(name, HISTORY_KEPT)
        read.addCallbacks(
            self._history_read,
            self._history_not_read,
            callbackArgs=(name,),
            errbackArgs=(name,),
        )

    def _history_read(self, entries: list[HistoryEntry], name: str) -> None:
        key = room_key(name)
        waiting = self._loading.pop(key, [])
        memory = self._room_history(name)
        said_meanwhile = list(memory)
        seen = set(said_meanwhile)  # the store answers with its unwritten lines too
        older = [entry for entry in entries if entry not in seen]
        memory.clear()
        memory.extend(older)
        memory.extend(said_meanwhile)
        for member in waiting:
            presence = self._presence.get(member)
            if presence is None or room_key(presence.room.name) != key:
                continue
            if recent := self._within_age(older[-self.history_replay :]):
                self.tell(member, History(presence.room.name, recent))

    def _history_not_read(self, failure: Any, name: str) -> None:
        self._loading.pop(room_key(name), None)
        self._room_not_read(failure, "history", name)

    def _room_not_read(self, failure: Any, what: str, name: str) -> None:
        """A room's history or topic could not be read (the store is down): one line,
        as a room opened during an outage is no bug, and the room works without it."""
        self.log.warn(
            "cannot read the {what} of {room}: {problem}",
            what=what,
            room=name,
            problem=failure.getErrorMessage(),
        )

    def _close_if_unused(self, room: Room) -> None:
        # The default room stays listed even when empty; a topic outlives its room.
        if not room.members and room.name != self.default_room:
            room.flush()
            del self._rooms[room_key(room.name)]

    def _enter(self, member: Member, room: Room, came_from: str | None) -> None:
        presence = self._presence[member]
        presence.room = room
        room.enter(member, presence)
        present = self._present(room)
        names = self._names_shown(room, present)
        welcome = member.alias if came_from is None else None
        self.tell(member, InRoom(room.name, names, present, room.topic, welcome))
        if welcome and self.motd:
            self.tell(member, Notice(f"Message of the day:\n{self.motd}"))
        if presence.replay and self.history_replay:
            waiting = self._loading.get(room_key(room.name))
            if waiting is not None:
                waiting.append(member)  # replayed once read (see _history_read)
            elif recent := self._recent(room, self.history_replay):
                self.tell(member, History(room.name, recent))
        self._queue(room, Joined(member.alias, room.name, present, came_from), exclude=member)  # type: ignore[arg-type]

    def _present(self, room: Room) -> int:
        """How many are in ``room`` (on every node, in a cluster)."""
        return len(room)

    def _names_shown(self, room: Room, present: int) -> tuple[str, ...]:
        """The names a newcomer to ``room`` is shown: everyone, or the longest present."""
        if present <= LISTED_NAMES:
            return room.names()
        return tuple(m.alias for m in islice(room.members, LISTED_NAMES))  # type: ignore[misc]

    def _exit(self, member: Member, room: Room) -> None:
        room.exit(member)  # the member still hears what was said before they went

    def _log_store_failure(self, failure: Any, what: str, **fields: Any) -> None:
        # The store already logs and retries what it can; this says what was lost.
        self.log.failure(what, failure, **fields)

    def _room_history(self, name: str) -> deque[HistoryEntry]:
        key = room_key(name)
        entries = self._history.get(key)
        if entries is None:
            entries = self._history[key] = deque(maxlen=HISTORY_KEPT)
            if len(self._history) > HISTORY_ROOMS_KEPT:
                self._forget_a_closed_room_history()
        else:
            self._history.move_to_end(key)
        return entries

    def _forget_a_closed_room_history(self) -> None:
        """Forget the history of the least recently used room that is not open.

        An open room's history is never forgotten: nothing would read it back (the
        default room never reopens), and one user opening many rooms could then
        empty #lobby's replay. Open rooms are at most one per member.
        """
        for key in self._history:
            if key not in self._rooms:
                del self._history[key]
                return

    def _recent(self, room: Room, count: int) -> tuple[HistoryEntry, ...]:
        """The newest ``count`` lines of ``room``, oldest first, none past the age limit."""
        entries = self._history.get(room_key(room.name), ())
        recent = tuple(islice(entries, max(0, len(entries) - count), None)) if count > 0 else ()
        return self._within_age(recent)

    def _within_age(self, entries: Iterable[HistoryEntry]) -> tuple[HistoryEntry, ...]:
        """``entries`` without those past --history-max-age."""
        if self.history_max_age_seconds is None:
            return tuple(entries)
        cutoff = self.clock.seconds() - self.history_max_age_seconds
        return tuple(entry for entry in entries if entry.at >= cutoff)

    def _record(self, room: Room, kind: str, alias: str, text: str) -> None:
        if not self.keep_history:
            return
        entry = HistoryEntry(room.name, kind, alias, text, self.clock.seconds())
        self._room_history(room.name).append(entry)
        if self._store is not None:
            self._store.append_history(entry)

    def _queue(
        self,
        room: Room,
        event: Event,
        exclude: Member | None = None,
        speaker: str | None = None,
    ) -> None:
        if room.queue(event, exclude, speaker):
            self._pending.append(room)
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(0, self.flush)
