"""Who is online, in which room, and who hears what: the one place that decides delivery.

The hub knows aliases, rooms and members, never sockets or byte formats. Any
front end joins its sessions here as :class:`~chatd.interfaces.IMember` objects.
All user text passes :func:`chatd.text.clean_text` here, so no front end can
forget to sanitise (text from other nodes passed it as it was read: see
:mod:`chatd.cluster.messages`).

A cluster plugs in through two seams, without subclassing: the hub tells its
:class:`~chatd.interfaces.IHubListener` what happened here (once it has), and
asks its :class:`~chatd.interfaces.IDirectory` about the members elsewhere; what
other nodes' members do comes in through the ``remote_*`` methods, and is queued
to the local members of the room like any local broadcast, so ordering, batching
and ignores work the same for both. Operators' commands are in
:mod:`chatd.moderation`, on the hub's public methods.

Every member is in exactly one room. Broadcasts are batched per room and flushed
at the end of the reactor turn (see :mod:`chatd.room`). Anything sent to one
member alone, and any change of room membership, first flushes what is pending,
so each member still sees events in the order they happened.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from chatd.accounts import Accounts
from chatd.bans import Bans
from chatd.counters import Counters
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
from chatd.interfaces import IChatStore, IDirectory, IHubListener, IMember, IRemoteMember
from chatd.logs import Logger
from chatd.mentions import mentioned_keys
from chatd.model import Ban, HistoryEntry, SharedState
from chatd.mutes import Mutes
from chatd.offline import Offline, OfflineLimits
from chatd.room import Comers, MentionCopies, Presence, Room, deliver
from chatd.text import (
    AliasRefused,
    alias_key,
    check_alias,
    check_room,
    clean_text,
    room_key,
)

DEFAULT_ROOM = "#lobby"
# How many names a member is shown on entering a room. In a big room, listing
# everyone on every arrival would cost a line of O(members) each time, O(members^2)
# in all, for a list nobody reads; /who gives the whole list on request.
LISTED_NAMES = 30
# The most rooms /rooms lists: the busiest, then "and N more" (see RoomList).
LISTED_ROOMS = 200
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
# In a room of more than this many members (here and elsewhere), arrivals and
# departures are summed up in one line per COMINGS_SECONDS (a Comings event) rather
# than announced one by one: each would be a line to everyone there, O(members^2)
# when a crowd comes in. 0 announces every one, however big the room.
DEFAULT_QUIET_JOINS_ABOVE = 100
COMINGS_SECONDS = 5.0
# A member's bell rings for the first line naming them, then not again for this long:
# lines naming them still come, marked, but a crowd (or a flooder's many connections)
# naming someone must not turn their terminal into a buzzer. One ring says "you are
# wanted"; more within seconds add nothing but noise.
BELL_INTERVAL_SECONDS = 5.0


@implementer(IHubListener)
class NoListener:
    """The listener of a hub alone: nobody else needs to hear what happens in it."""

    def joined(self, member: IMember) -> None:
        pass

    def left(self, alias: str, reason: str) -> None:
        pass

    def moved(self, member: IMember, came_from: str) -> None:
        pass

    def renamed(self, member: IMember, old: str) -> None:
        pass

    def said(self, alias: str, room: str, text: str, at: float) -> None:
        pass

    def acted(self, alias: str, room: str, text: str, at: float) -> None:
        pass

    def topic_set(self, alias: str, room: str, topic: str | None) -> None:
        pass

    def away_set(self, member: IMember) -> None:
        pass

    def registered(self, alias: str, member: IMember | None) -> None:
        pass

    def banned(self, ban: Ban, by: str) -> None:
        pass

    def unbanned(self, mask: str) -> None:
        pass

    def muted(self, alias: str, until: float | None) -> None:
        pass

    def unmuted(self, alias: str) -> None:
        pass

    def motd_set(self, text: str | None) -> None:
        pass


@implementer(IDirectory)
class Nowhere:
    """The directory of a hub alone: nobody is elsewhere."""

    def taken(self, alias: str, account: str | None) -> bool:
        return False

    def renaming(self, alias: str) -> bool:
        return False

    def take_over(self, alias: str) -> None:
        pass

    def find(self, alias: str) -> IRemoteMember | None:
        return None

    def aliases(self) -> Iterable[str]:
        return ()

    def names_in(self, room: str) -> Iterable[str]:
        return ()

    def count_in(self, room: str) -> int:
        return 0

    def rooms(self) -> Iterable[tuple[str, int]]:
        return ()

    def room_name(self, room: str) -> str | None:
        return None

    def whisper(self, sender: str, recipient: str, text: str) -> bool:
        return False

    def kick(self, alias: str, by: str, operator: str, reason: str) -> bool:
        return False


class Hub:
    """Members online under unique, case-insensitive aliases, each in one room."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime | None = None,
        default_room: str = DEFAULT_ROOM,
        store: IChatStore | None = None,
        history_replay: int = DEFAULT_HISTORY_REPLAY,
        accounts: Accounts | None = None,
        keep_history: bool = True,
        history_max_age_seconds: float | None = None,
        listener: IHubListener | None = None,
        directory: IDirectory | None = None,
        quiet_joins_above: int = DEFAULT_QUIET_JOINS_ABOVE,
        comings_seconds: float = COMINGS_SECONDS,
        offline_limits: OfflineLimits | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        # Public so that front ends schedule their timers on the same clock.
        self.clock: IReactorTime = clock  # type: ignore[assignment]
        self.default_room = check_room(default_room)
        # Told what happens here (the cluster's bus); on the hot path (a line said),
        # only ``_listened`` is looked at when nobody listens.
        self.listener: IHubListener = listener if listener is not None else NoListener()
        self._listened = listener is not None
        # Asked about the members elsewhere (the cluster's roster).
        self.directory: IDirectory = directory if directory is not None else Nowhere()
        self._members: dict[str, IMember] = {}
        self._presence: dict[IMember, Presence] = {}
        self._rooms: dict[str, Room] = {}
        # Totals for the metrics endpoint; front ends count what they receive here too.
        self.counters = Counters()
        # Room key -> its topic, or None for a room known to have none; bounded
        # (TOPICS_KEPT), a room's topic is read from the store when it opens.
        self._topics: OrderedDict[str, str | None] = OrderedDict()
        # Public for chatd.moderation, which saves bans and the MOTD.
        self.store = store
        # Registered aliases and operators; None runs without them (tests, no store).
        self.accounts = accounts
        self.bans = Bans()
        # Who is muted (set by chatd.moderation, enforced here on every line).
        self.mutes = Mutes()
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
        self._loading: dict[str, list[IMember]] = {}
        # Members whose delivery raised (a front end bug): cut off, see _drop_failed.
        self._failed: list[IMember] = []
        self._closing = False
        # Rooms with broadcasts waiting for the end of this reactor turn.
        self._pending: list[Room] = []
        self._flush_call: IDelayedCall | None = None
        # Rooms bigger than this sum up who came and went (0: never; see Comings).
        self.quiet_joins_above = quiet_joins_above
        self.comings_seconds = comings_seconds
        # What waits for registered aliases offline or away (chatd.offline).
        self.offline = Offline(self, offline_limits or OfflineLimits())

    def __len__(self) -> int:
        return len(self._members)

    # Who is where.

    def is_online(self, member: IMember) -> bool:
        """Whether ``member`` has joined and not yet left."""
        alias = member.alias
        return alias is not None and self._members.get(alias_key(alias)) is member

    @property
    def room_count(self) -> int:
        """Rooms open now (the default room always is)."""
        return len(self._rooms)

    def online(self) -> tuple[str, ...]:
        """Every alias online (on every node, in a cluster), sorted case-insensitively."""
        here = (presence.alias for presence in self._presence.values())
        return tuple(sorted([*here, *self.directory.aliases()], key=alias_key))

    def members(self) -> list[IMember]:
        """The members online here (not elsewhere), in the order they came."""
        return list(self._members.values())

    def presence_of(self, member: IMember) -> Presence:
        """What the hub knows of online ``member``; raises LookupError if it is not online."""
        presence = self._presence.get(member)
        if presence is None:
            raise LookupError("member is not online")
        return presence

    def room_of(self, member: IMember) -> str:
        """The name of the room ``member`` is in."""
        return self._room(member).name

    def member_named(self, alias: str) -> IMember | None:
        """The member online here as ``alias`` (in any case), if any."""
        return self._members.get(alias_key(alias))

    def check_available(self, alias: str, account: str | None = None) -> str:
        """Return ``alias`` if a newcomer may take it now, else raise AliasRefused.

        A registered alias is only available to whoever gave its password: the
        member whose ``account`` (an alias key) it is; they may take it even from
        a session of theirs elsewhere.
        """
        check_alias(alias)
        if alias_key(alias) in self._members:
            raise AliasRefused(f"The alias {alias} is taken.")
        registered = self.accounts is not None and self.accounts.is_registered(alias)
        if registered and alias_key(alias) != account:
            raise AliasRefused(
                f"The alias {alias} is registered; connect with it and its password."
            )
        if self.directory.taken(alias, account):
            raise AliasRefused(f"The alias {alias} is taken.")
        return alias

    # Arriving, moving, leaving.

    def load(self, state: SharedState) -> None:
        """Take up what the store keeps (at start, and after a cluster's link was down),
        in place of what the hub had: bans (cutting off whoever is now banned), recent
        history, topics and the MOTD. See :func:`chatd.sharedstate.load_shared_state`."""
        self.bans = Bans(state.bans)
        for member in list(self._members.values()):
            if (ban := self.banned(member.host, member.alias)) is not None:
                self._cut_off(member, ban, "Banned", f"operator {ban.set_by}")
        # Lines heard from other nodes while the store was being read are in it too.
        self._history.clear()
        if self.keep_history:
            for room_name, entries in state.history.items():
                self._room_history(room_name).extend(entries)
        self.motd_set_text = state.motd
        self._topics.clear()
        for room_name, topic in state.topics.items():
            self._remember_topic(room_name, topic)
        for key, room in self._rooms.items():
            room.topic = self._topics.get(key)
            self._load_topic(room.name)
        self._load_missing_histories()

    def join(
        self,
        member: IMember,
        alias: str,
        registered: bool = False,
        replay: bool = True,
        ignores: Iterable[str] = (),
    ) -> None:
        """Put ``member`` online as ``alias`` in the default room, and welcome it.

        ``registered`` says the front end has checked the alias's password (then
        what waited for the alias is handed over); ``replay`` whether the member
        wants recent history shown on entering rooms; ``ignores`` the alias keys
        a registered member saved (known before anything waiting is delivered).
        Raises AliasRefused (and changes nothing) if the alias may not be taken.
        """
        account = alias_key(alias) if registered else None
        self.check_available(alias, account)
        if registered:
            # The owner takes it even from a session of theirs elsewhere (ended there).
            self.directory.take_over(alias)
        member.alias = alias
        self._members[alias_key(alias)] = member
        room = self._open_room(self.default_room)
        presence = Presence(room, self.clock.seconds(), account, replay, alias)
        presence.ignores.update(alias_key(ignored) for ignored in ignores)
        self._presence[member] = presence
        self.log.info("{alias} joined from {peer}", alias=alias, peer=member.peer)
        self._enter(member, room, came_from=None)
        self.listener.joined(member)
        if account is not None:
            self.offline.welcome(account)

    def lost_alias(self, member: IMember) -> None:
        """``member``'s alias belongs to a member of another node (who claimed it in the
        same instant): tell them, and let them go."""
        alias = member.alias
        self.log.info("{alias} is taken on another node; disconnecting this one", alias=alias)
        self.tell(
            member,
            Error(
                f"The alias {alias} was taken on another server at the same moment;"
                " reconnect and choose another."
            ),
        )
        self.leave(member, "Alias taken on another server")
        member.disconnect("alias taken on another node")

    def move(self, member: IMember, room_name: str) -> None:
        """Move ``member`` to ``room_name`` (opening it if need be), telling both rooms.

        Raises RoomRefused if the name breaks the room rule.
        """
        check_room(room_name)
        old = self._room(member)
        alias = self._touch(member)
        if room_key(room_name) == room_key(old.name):
            self.tell(member, Error(f"You are already in {old.name}."))
            return
        new = self._open_room(room_name)
        self._exit(member, old)
        self._went(old, alias, Departed(alias, new.name))
        self._close_if_unused(old)
        self._enter(member, new, came_from=old.name)
        self.offline.away_changed(member)
        self.listener.moved(member, old.name)

    def leave(self, member: IMember, reason: str) -> None:
        """Take ``member`` offline and announce it, once, however often it is called."""
        if not self.is_online(member):
            return
        presence = self._presence[member]
        alias = presence.alias
        del self._members[alias_key(alias)]
        room = presence.room
        self._exit(member, room)
        del self._presence[member]
        if presence.account is not None:
            self.offline.went(member, presence.account, room.name)
        self.offline.away_changed(member)
        reason = clean_text(reason) or "left"
        self.log.info("{alias} left ({reason})", alias=alias, reason=reason)
        if not self._closing:
            self._went(room, alias, Left(alias, reason))
        self._close_if_unused(room)
        if not self._closing:
            self.listener.left(alias, reason)

    def quit(self, member: IMember, reason: str) -> None:
        """``member`` leaves of their own will, with ``reason`` shown to their room.

        A muted member's reason is not shown: it would be a line the room sees.
        """
        reason = clean_text(reason)
        if reason and self._muted(member, quietly=True):
            reason = ""
        self.leave(member, f"Quit: {reason}" if reason else "Quit")

    def rename(self, member: IMember, new_alias: str) -> None:
        """Change ``member``'s alias, freeing the old one, and tell their room.

        Raises AliasRefused if the new alias may not be taken. A change of case
        only (alice to Alice) is allowed: the name stays the member's own.
        """
        old = self._alias_of(member)
        if self.directory.renaming(old):
            raise AliasRefused("Your last change of alias is not confirmed yet; try again.")
        self._check_rename(member, old, new_alias)
        self._rename(member, old, new_alias)
        self.listener.renamed(member, old)

    def rename_back(self, member: IMember, new: str, old: str) -> None:
        """Another node took ``new`` in the same instant as ``member``: back to ``old``
        (still theirs), or let them go if not even that can be had now."""
        if not self.is_online(member) or member.alias != new:
            return
        try:
            self._check_rename(member, new, old)
        except AliasRefused:
            self.lost_alias(member)
            return
        self._rename(member, new, old)
        self.tell(
            member,
            Error(
                f"The alias {new} was taken on another server at the same moment; you are {old}."
            ),
        )

    def _check_rename(self, member: IMember, old: str, new_alias: str) -> None:
        if new_alias == old:
            raise AliasRefused(f"You are already known as {old}.")
        if self._muted(member, quietly=True):
            raise AliasRefused("You are muted: you cannot change your alias now.")
        if alias_key(new_alias) == alias_key(old):
            check_alias(new_alias)
        else:
            self.check_available(new_alias, self.presence_of(member).account)
            if self.banned(alias=new_alias) is not None:
                raise AliasRefused(f"The alias {new_alias} is banned.")

    def _rename(self, member: IMember, old: str, new_alias: str) -> None:
        del self._members[alias_key(old)]
        member.alias = new_alias
        self._presence[member].alias = new_alias
        self._members[alias_key(new_alias)] = member
        self.log.info("{old} is now known as {new}", old=old, new=new_alias)
        room = self._room(member)
        if room.comers is not None and room.comers.renamed(old, new_alias):
            # The room has not heard of them yet: it will, by their new name.
            self.tell(member, Renamed(old, new_alias))
        else:
            self._queue(room, Renamed(old, new_alias))
        self._follow_rename(old, new_alias)
        self.offline.away_changed(member)

    def _follow_rename(self, old: str, new: str) -> None:
        """A mute and an ignore follow the person, not the name they had."""
        if alias_key(old) == alias_key(new):
            return
        self.mutes.follow(alias_key(old), alias_key(new))
        for presence in self._presence.values():
            if alias_key(old) in presence.ignores:
                presence.ignores.discard(alias_key(old))
                presence.ignores.add(alias_key(new))

    # Talking.

    def say(self, member: IMember, text: str) -> None:
        """Relay a chat line to everyone else in the sender's room; blank lines are dropped."""
        text = clean_text(text)
        if text and not self._muted(member):
            self._spoke(member, "say", text)

    def act(self, member: IMember, text: str) -> None:
        """Relay a ``/me`` action to everyone else in the sender's room."""
        text = clean_text(text)
        if text and not self._muted(member):
            self._spoke(member, "act", text)

    def _spoke(self, member: IMember, kind: str, text: str) -> None:
        """Relay what ``member`` said (kind "say") or did ("act") to their room; record it."""
        alias = self._touch(member)
        room = self._room(member)
        event = Said(alias, text) if kind == "say" else Acted(alias, text)
        keys = self._queue_line(room, event, member)
        self._record(room, kind, alias, text)
        self.offline.heard(room.name, kind, alias, text, self.clock.seconds(), keys)
        if self._listened:
            told = self.listener.said if kind == "say" else self.listener.acted
            told(alias, room.name, text, self.clock.seconds())

    def _queue_line(
        self, room: Room, line: Said | Acted, exclude: IMember | None = None
    ) -> frozenset[str]:
        """Queue a chat line or action for ``room``, each member it mentions getting their
        own copy; the alias keys it may mention are returned (see mentioned_keys)."""
        keys = mentioned_keys(line.text)
        speaker = alias_key(line.sender)
        self._queue(room, line, exclude, speaker, self._mentions(room, line, keys))
        return keys

    def _mentions(
        self, room: Room, line: Said | Acted, keys: frozenset[str]
    ) -> MentionCopies | None:
        """The members of ``room`` whom ``line`` mentions (its words are ``keys``), each
        with the copy they get: marked, and with their bell if they want it.

        A dict lookup per word of the line, whatever the room's size; the sender is
        never mentioned to themselves, nor to those who ignore them (the line does
        not reach them, and must not use up their bell). The bell rings at most
        once per :data:`BELL_INTERVAL_SECONDS` for each member. None, the common
        case, when nobody is mentioned.
        """
        members = self._members
        if members.keys().isdisjoint(keys):  # at C speed: the common case
            return None
        sender, presences = alias_key(line.sender), self._presence
        copies = (Mentioned(line, bell=False), Mentioned(line, bell=True))
        now = self.clock.seconds()
        mentioned: MentionCopies = {}
        for key in keys:
            member = members.get(key)
            if member is None or key == sender:
                continue
            presence = presences[member]
            if presence.room is not room or sender in presence.ignores:
                continue
            ring = presence.bell and now >= presence.bell_rests_until
            if ring:
                presence.bell_rests_until = now + BELL_INTERVAL_SECONDS
            mentioned[member] = copies[ring]
        return mentioned or None

    def whisper(self, member: IMember, recipient_alias: str, text: str) -> None:
        """Deliver a private message (to any room, on any node) and confirm it to the sender."""
        sender = self._touch(member)
        if self._muted(member):
            return
        recipient = self._members.get(alias_key(recipient_alias))
        remote = self.directory.find(recipient_alias) if recipient is None else None
        if recipient is None and remote is None and not self.offline.keeps_for(recipient_alias):
            self.tell(member, Error(f"No such user: {clean_text(recipient_alias)}"))
            return
        # Here, on another node or kept for later: empty, it is not sent anywhere.
        text = clean_text(text)
        if not text:
            self.tell(member, Error("Empty private message not sent."))
            return
        if remote is not None:
            self._whisper_elsewhere(member, sender, remote, text)
            return
        if recipient is None:
            self.offline.keep(member, sender, recipient_alias, text)
            return
        presence = self._presence[recipient]
        # Someone ignoring the sender is not told; the sender is not told either.
        if alias_key(sender) not in presence.ignores:
            self.tell(recipient, Whispered(sender, text))
        self.tell(member, WhisperSent(presence.alias, text))
        if presence.away is not None:
            self.tell(member, Notice(f"{presence.alias} is away: {presence.away}"))

    def _whisper_elsewhere(
        self, member: IMember, sender: str, remote: IRemoteMember, text: str
    ) -> None:
        if not self.directory.whisper(sender, remote.alias, text):
            self.tell(member, Error(f"{remote.alias}'s server cannot be reached now; not sent."))
            return
        self.tell(member, WhisperSent(remote.alias, text))
        if remote.away is not None:
            self.tell(member, Notice(f"{remote.alias} is away: {remote.away}"))

    def set_topic(self, member: IMember, topic: str | None) -> bool:
        """Set the topic of the member's room, or clear it with None, and tell the room.

        Returns whether the topic changed (a muted member's, or an empty one, does not).
        """
        room = self._room(member)
        alias = self._touch(member)
        if self._muted(member):
            return False
        cut = False
        if topic is None and room.topic is None:
            self.show_topic(member)  # nothing to clear: says there is no topic
            return False
        if topic is not None:
            cleaned = clean_text(topic)
            topic, cut = cleaned[:MAX_TOPIC_CHARS], len(cleaned) > MAX_TOPIC_CHARS
            if not topic:
                self.tell(member, Error("An empty topic is not set ('/topic -' clears it)."))
                return False
        self._remember_topic(room.name, topic)
        room.topic = topic
        self._queue(room, TopicChanged(alias, topic))
        if cut:  # told after the room has seen the topic, cut, set
            self.tell(member, Notice(f"Your topic was cut to {MAX_TOPIC_CHARS} characters."))
        if self.store is not None:
            saved = self.store.set_topic(room.name, topic, alias)
            saved.addErrback(self.log_store_failure, "saving the topic of {room}", room=room.name)
        self.listener.topic_set(alias, room.name, topic)
        return True

    def announce(self, text: str) -> None:
        """Send a server notice to everyone online here, in every room."""
        for room in self._rooms.values():
            self._queue(room, Notice(text))

    # What members of other nodes do (told by the cluster's bus).

    def remote_joined(self, alias: str, room_name: str) -> None:
        """``alias`` came online elsewhere, in ``room_name`` (the directory knows them now)."""
        self.offline.came_elsewhere(alias)
        if (room := self._rooms.get(room_key(room_name))) is not None:
            self._came(room, alias, self._present(room), None)

    def remote_left(self, alias: str, room_name: str, reason: str) -> None:
        """``alias``, elsewhere in ``room_name``, went offline (the directory forgot them)."""
        self.offline.gone_elsewhere(alias, room_name)
        if (room := self._rooms.get(room_key(room_name))) is not None:
            self._went(room, alias, Left(alias, clean_text(reason) or "left"))

    def remote_moved(self, alias: str, came_from: str, room_name: str) -> None:
        """``alias``, elsewhere, went from room ``came_from`` to ``room_name``."""
        if (room := self._rooms.get(room_key(came_from))) is not None:
            self._went(room, alias, Departed(alias, room_name))
        if (room := self._rooms.get(room_key(room_name))) is not None:
            self._came(room, alias, self._present(room), came_from)

    def remote_renamed(self, old: str, new: str, room_name: str) -> None:
        """``old``, elsewhere in ``room_name``, is now known as ``new``."""
        room = self._rooms.get(room_key(room_name))
        if room is not None and (room.comers is None or not room.comers.renamed(old, new)):
            self._queue(room, Renamed(old, new))
        self._follow_rename(old, new)

    def remote_said(self, alias: str, room_name: str, text: str, at: float) -> None:
        """``alias`` said ``text`` in ``room_name`` elsewhere, at ``at``."""
        self._remote_spoke("say", alias, room_name, text, at)

    def remote_acted(self, alias: str, room_name: str, text: str, at: float) -> None:
        """``alias`` did ``/me text`` in ``room_name`` elsewhere, at ``at``."""
        self._remote_spoke("act", alias, room_name, text, at)

    def _remote_spoke(self, kind: str, alias: str, room_name: str, text: str, at: float) -> None:
        key = room_key(room_name)
        if (room := self._rooms.get(key)) is not None:
            event = Said(alias, text) if kind == "say" else Acted(alias, text)
            keys = self._queue_line(room, event)
            # For the members away here only: its own node kept it for those offline.
            self.offline.heard(room_name, kind, alias, text, at, keys, here=False)
        # Its own node writes it to the store; kept here only with the room's history
        # in memory (else a first line would stand for it, and it would not be read).
        if self.keep_history and (self.store is None or key in self._history):
            entry = HistoryEntry(room_name, kind, alias, text, at)
            self._room_history(room_name).append(entry)

    def remote_topic_set(self, alias: str, room_name: str, topic: str | None) -> None:
        """``alias`` elsewhere set (or cleared, None) the topic of ``room_name``."""
        self._remember_topic(room_name, topic)
        if (room := self._rooms.get(room_key(room_name))) is not None:
            room.topic = topic
            self._queue(room, TopicChanged(alias, topic))

    def remote_whispered(self, sender: str, recipient_alias: str, text: str) -> None:
        """``sender`` elsewhere sent a private message to ``recipient_alias``, here."""
        recipient = self._members.get(alias_key(recipient_alias))
        if recipient is not None and alias_key(sender) not in self._presence[recipient].ignores:
            self.tell(recipient, Whispered(sender, text))

    # Answers to one member.

    def roster(self, member: IMember, everyone: bool = False) -> None:
        """Tell ``member`` who is in their room, or who is online anywhere."""
        if everyone:
            self.tell(member, Roster(None, self.online()))
        else:
            room = self._room(member)
            self.tell(member, Roster(room.name, self._all_names(room)))

    def list_rooms(self, member: IMember) -> None:
        """Tell ``member`` which rooms are in use (on any node), with their counts and topics."""
        rooms = {key: (room.name, len(room), room.topic) for key, room in self._rooms.items()}
        for name, count in self.directory.rooms():
            key = room_key(name)
            here = rooms.get(key)
            if here is None:
                rooms[key] = (name, count, self._topics.get(key))
            else:
                rooms[key] = (here[0], here[1] + count, here[2])
        listed = rooms
        if len(rooms) > LISTED_ROOMS:
            busiest = heapq.nlargest(LISTED_ROOMS, rooms, key=lambda key: rooms[key][1])
            listed = {key: rooms[key] for key in busiest}
        self.tell(
            member,
            RoomList(tuple(listed[key] for key in sorted(listed)), more=len(rooms) - len(listed)),
        )

    def show_topic(self, member: IMember) -> None:
        """Tell ``member`` the topic of their room."""
        room = self._room(member)
        if room.topic:
            self.tell(member, Notice(f"Topic of {room.name}: {room.topic}"))
        else:
            self.tell(member, Notice(f"{room.name} has no topic."))

    def show_history(self, member: IMember, count: int) -> None:
        """Tell ``member`` up to ``count`` (at most HISTORY_KEPT) recent lines of their room."""
        room = self._room(member)
        if not self.keep_history:
            self.tell(member, Error("This server keeps no history."))
            return
        recent = self._recent(room, min(count, HISTORY_KEPT))
        self.tell(member, History(room.name, recent, reader=self._alias_of(member)))

    def set_replay(self, member: IMember, replay: bool) -> None:
        """Whether ``member`` is shown recent history on entering a room."""
        self.presence_of(member).replay = replay
        state = "on" if replay else "off"
        self.tell(member, Notice(f"History replay on entering a room is {state}."))

    def whois(self, member: IMember, alias: str) -> None:
        """Tell ``member`` where ``alias`` is, since when, how idle, and if away."""
        now = self.clock.seconds()
        other = self._members.get(alias_key(alias))
        if other is not None:
            presence = self._presence[other]
            whois = Whois(
                presence.alias,
                presence.room.name,
                now - presence.since,
                now - presence.active_at,
                presence.account == alias_key(presence.alias),
                presence.away,
            )
        elif (remote := self.directory.find(alias)) is not None:
            whois = Whois(
                remote.alias,
                remote.room,
                now - remote.since,
                now - remote.active_at,
                remote.registered,
                remote.away,
            )
        else:
            self.tell(member, Error(f"No such user: {clean_text(alias)}"))
            return
        self.tell(member, whois)

    def set_away(self, member: IMember, message: str | None) -> bool:
        """Mark ``member`` away with ``message`` (or back, with None or a blank message).

        Returns whether it changed: a muted member's away message is seen by
        others (/whois, private messages), so it is refused like their lines.
        """
        away = clean_text(message)[:MAX_TOPIC_CHARS] if message else ""
        if away and self._muted(member):
            return False
        self.presence_of(member).away = away or None
        if away:
            self.tell(member, Notice(f"You are marked as away: {away}"))
        else:
            self.tell(member, Notice("You are no longer marked as away."))
        self.offline.away_changed(member)
        self.listener.away_set(member)
        return True

    def set_bell(self, member: IMember, bell: bool | None) -> None:
        """Whether a line that mentions ``member`` rings their terminal (None: just
        say whether it does). It is still marked for the web page and the client."""
        presence = self.presence_of(member)
        if bell is not None:
            presence.bell = bell
            presence.bell_rests_until = 0.0  # asked for now: the next mention rings
        state = "on" if presence.bell else "off"
        self.tell(member, Notice(f"The bell for lines that mention you is {state}."))

    def ignore(self, member: IMember, alias: str) -> None:
        """Stop showing ``member`` the chat lines, actions and private messages of ``alias``."""
        ignores = self.presence_of(member).ignores
        other = self._members.get(alias_key(alias))
        if other is member:
            self.tell(member, Error("You cannot ignore yourself."))
            return
        if other is not None:
            name = self._presence[other].alias
        elif (remote := self.directory.find(alias)) is not None:
            name = remote.alias
        else:
            self.tell(member, Error(f"No such user: {clean_text(alias)}"))
            return
        ignores.add(alias_key(name))
        self.tell(member, Notice(f"Ignoring {name}; /unignore {name} undoes it."))

    def unignore(self, member: IMember, alias: str) -> None:
        """Show ``member`` what ``alias`` says again."""
        ignores = self.presence_of(member).ignores
        if alias_key(alias) in ignores:
            ignores.discard(alias_key(alias))
            self.tell(member, Notice(f"No longer ignoring {clean_text(alias)}."))
        else:
            self.tell(member, Error(f"You are not ignoring {clean_text(alias)}."))

    def ignored(self, member: IMember) -> tuple[str, ...]:
        """The alias keys ``member`` ignores (for saving with a registration)."""
        return tuple(sorted(self.presence_of(member).ignores))

    def is_registered(self, member: IMember) -> bool:
        """Whether ``member`` is using a registered alias whose password it gave."""
        presence = self.presence_of(member)
        return presence.account == alias_key(presence.alias)

    def mark_registered(self, member: IMember, alias: str) -> None:
        """Note that ``alias`` was just registered by ``member`` (who may have gone since,
        or changed alias: then there is nothing to note about them)."""
        if self.is_online(member) and member.alias == alias:
            self.presence_of(member).account = alias_key(alias)
            self.listener.registered(alias, member)
        else:
            # Told even so: the alias is registered either way.
            self.listener.registered(alias, None)

    # Bans and the message of the day (operators set them: see chatd.moderation).

    @property
    def motd(self) -> str | None:
        """The message of the day shown at login, if there is one."""
        return self.motd_set_text or self.motd_file_text

    def banned(self, host: str | None = None, alias: str | None = None) -> Ban | None:
        """The ban in force on ``host`` or ``alias``, if any."""
        return self.bans.match(self.clock.seconds(), host=host, alias=alias)

    def enforce_ban(
        self, ban: Ban, announced: str, logged: str, spare: IMember | None = None
    ) -> None:
        """Cut off every member here whom ``ban`` (already in :attr:`bans`) matches, but
        ``spare``: ``announced`` says to their room who banned them, ``logged`` to the log."""
        for member in list(self._members.values()):
            if member is not spare and self.banned(member.host, member.alias) is ban:
                self._cut_off(member, ban, announced, logged)

    def _cut_off(self, member: IMember, ban: Ban, announced: str, logged: str) -> None:
        """Tell ``member`` of ``ban``, announce their going and disconnect them."""
        self.tell(member, Error(f"You are banned: {ban.reason}"))
        self.leave(member, f"{announced}: {ban.reason}")
        member.disconnect(f"banned by {logged}")

    def show_motd(self, member: IMember) -> None:
        """Tell ``member`` the message of the day."""
        motd = self.motd
        self.tell(
            member, Notice(f"Message of the day:\n{motd}" if motd else "No message of the day.")
        )

    def catch_up(self, member: IMember) -> None:
        """Deliver to ``member`` now what its room has queued for it this turn (before
        its connection switches format, say)."""
        presence = self._presence.get(member)
        if presence is not None:
            presence.room.catch_up(member)

    def tell(self, member: IMember, event: Event) -> None:
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
        for room in self._rooms.values():
            self._forget_comers(room)  # news nobody will read either
        self.announce(reason)
        self.flush()
        for member in list(self._members.values()):
            member.disconnect(reason)

    # Inside.

    def _room(self, member: IMember) -> Room:
        return self.presence_of(member).room

    def _alias_of(self, member: IMember) -> str:
        return self.presence_of(member).alias

    def _muted(self, member: IMember, quietly: bool = False) -> bool:
        """Whether ``member`` is muted now (telling them so, unless ``quietly``).

        Muted is the alias, or the address the mute was given at (the same person
        back under another alias). The common case, nobody muted, costs nothing.
        """
        if not self.mutes.until:
            return False
        if not self.mutes.muted(self._alias_of(member), member.host, self.clock.seconds()):
            return False
        if not quietly:
            self.tell(member, Error("You are muted: nobody sees your lines."))
        return True

    def _touch(self, member: IMember) -> str:
        """Note that ``member`` did something (for idle times); return its alias."""
        presence = self.presence_of(member)
        presence.active_at = self.clock.seconds()
        return presence.alias

    def _open_room(self, name: str) -> Room:
        room = self._rooms.get(room_key(name))
        if room is None:
            # A room in use on other nodes keeps the name it was opened with there.
            name = self.directory.room_name(name) or name
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
        if self.store is None or room_key(name) in self._topics:
            return
        read = self.store.topic(name)
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
        if not self.keep_history or self.store is None:
            return
        if key in self._history or key in self._loading:
            return
        self._loading[key] = []
        self._room_history(name)
        read = self.store.recent_history(name, HISTORY_KEPT)
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
                self.tell(member, History(presence.room.name, recent, reader=presence.alias))

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
            self._forget_comers(room)
            room.flush()
            del self._rooms[room_key(room.name)]

    def _enter(self, member: IMember, room: Room, came_from: str | None) -> None:
        presence = self._presence[member]
        presence.room = room
        room.enter(member, presence)
        present = self._present(room)
        names = self._names_shown(room, present)
        welcome = presence.alias if came_from is None else None
        self.tell(member, InRoom(room.name, names, present, room.topic, welcome))
        if welcome and self.motd:
            self.tell(member, Notice(f"Message of the day:\n{self.motd}"))
        if presence.replay and self.history_replay:
            waiting = self._loading.get(room_key(room.name))
            if waiting is not None:
                waiting.append(member)  # replayed once read (see _history_read)
            elif recent := self._recent(room, self.history_replay):
                self.tell(member, History(room.name, recent, reader=presence.alias))
        self._came(room, presence.alias, present, came_from, exclude=member)

    # Arrivals and departures, one by one in a small room, summed up in a big one.

    def _quiet(self, present: int) -> bool:
        """Whether a room of ``present`` members sums up who comes and goes."""
        return 0 < self.quiet_joins_above < present

    def _came(
        self,
        room: Room,
        alias: str,
        present: int,
        came_from: str | None,
        exclude: IMember | None = None,
    ) -> None:
        """Announce ``alias`` coming into ``room`` (of ``present``, them included) from
        room ``came_from`` (None: they came online)."""
        if self._quiet(present):
            self._comers(room).came(alias)
        else:
            self._announce_comings(room, exclude)  # what is pending first, in order
            self._queue(room, Joined(alias, room.name, present, came_from), exclude)

    def _went(self, room: Room, alias: str, event: Left | Departed) -> None:
        """Announce ``alias`` going from ``room`` (they are no longer in it)."""
        if self._quiet(self._present(room) + 1):
            self._comers(room).went(alias)
        else:
            self._announce_comings(room)
            self._queue(room, event)

    def _comers(self, room: Room) -> Comers:
        """The comings and goings of ``room`` to sum up, with the timer that will."""
        if room.comers is None:
            call = self.clock.callLater(self.comings_seconds, self._announce_comings, room)
            room.comers = Comers(call)
        return room.comers

    def _announce_comings(self, room: Room, exclude: IMember | None = None) -> None:
        """Tell ``room`` (but ``exclude``, just come in) who came and went since its
        last summary, if anyone did."""
        comers = room.comers
        if comers is None:
            return
        self._forget_comers(room)
        if not room.members or not (comers.joined or comers.left):
            return
        summary = Comings(
            room.name,
            len(comers.joined),
            len(comers.left),
            tuple(islice(comers.joined.values(), LISTED_NAMES)),
            tuple(islice(comers.left.values(), LISTED_NAMES)),
            self._present(room),
            self.comings_seconds,
        )
        self._queue(room, summary, exclude)

    def _forget_comers(self, room: Room) -> None:
        """Drop ``room``'s pending summary (the room closes, or the hub does)."""
        if room.comers is not None:
            room.comers.cancel()
            room.comers = None

    def _present(self, room: Room) -> int:
        """How many are in ``room`` (on every node, in a cluster)."""
        return len(room) + self.directory.count_in(room.name)

    def _names_shown(self, room: Room, present: int) -> tuple[str, ...]:
        """The names a newcomer to ``room`` is shown: everyone, or the longest present here."""
        if present <= LISTED_NAMES:
            return self._all_names(room)
        return tuple(p.alias for p in islice(room.members.values(), LISTED_NAMES))

    def _all_names(self, room: Room) -> tuple[str, ...]:
        """Everyone in ``room``, here and elsewhere, sorted case-insensitively."""
        elsewhere = self.directory.names_in(room.name)
        return tuple(sorted([*room.names(), *elsewhere], key=alias_key))

    def _exit(self, member: IMember, room: Room) -> None:
        room.exit(member)  # the member still hears what was said before they went

    def log_store_failure(self, failure: Any, what: str, **fields: Any) -> None:
        """Log what a store write lost (the store already logs and retries what it can)."""
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
        if self.store is not None:
            self.store.append_history(entry)

    def _queue(
        self,
        room: Room,
        event: Event,
        exclude: IMember | None = None,
        speaker: str | None = None,
        mentions: MentionCopies | None = None,
    ) -> None:
        if room.queue(event, exclude, speaker, mentions):
            self._pending.append(room)
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(0, self.flush)
