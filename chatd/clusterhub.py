"""The hub of one node in a cluster: its own members, plus those of every other node.

A :class:`ClusterHub` is a :class:`~chatd.hub.Hub` that also knows the members
connected to other nodes (:class:`RemoteMember`: alias, node, room, away ...),
learnt from the messages those nodes publish. What local members do is done as
on a single server and then handed to the :class:`Bus` (a Redis link in
:mod:`chatd.cluster`); what other nodes' members do arrives through the
``remote_*`` methods and is queued to the local members of the room like any
local broadcast, so ordering, batching and ignores work the same for both.

Each node delivers only to its own members, so every line reaches each member
once: the sender's node delivers locally, every other node delivers what it
receives from the bus. Nodes trust each other: the bus is the trust boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from chatd.bans import BanRefused, Bans, ban_target
from chatd.events import (
    Acted,
    Departed,
    Error,
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
from chatd.hub import LISTED_NAMES, Hub, Member
from chatd.model import Ban, HistoryEntry
from chatd.room import Room
from chatd.text import AliasRefused, alias_key, clean_text, duration, room_key, utc_stamp

LINK_DOWN_NOTICE = (
    "The link to the other chatd servers is down: until it is back, only people"
    " on this server hear you."
)
LINK_UP_NOTICE = "The link to the other chatd servers is back."

# A message from the bus: a JSON object with a "t" (type) field.
Item = dict[str, Any]


class Bus(Protocol):
    """What the hub needs from the link between nodes (see :class:`chatd.cluster.Cluster`)."""

    node: str
    # Up: in the cluster, publishing. Linked: Redis reachable (also while resynchronising).
    up: bool
    linked: bool

    def publish(self, item: Item) -> bool:
        """Send ``item`` to every other node, in order; False (and dropped) if the link is down."""

    def claim(self, record: Item, item: Item, force: bool = False) -> Deferred[bool]:
        """Claim ``record``'s alias for this node, publishing ``item``; False if another has
        it (unless ``force``: then it is taken)."""

    def refresh(self, alias: str) -> None:
        """Learn again which other node holds ``alias``, and ``remote_join`` it."""

    def rename(self, old: str, record: Item, item: Item) -> Deferred[bool]:
        """Move this node's claim from alias ``old`` to ``record``'s; False if taken elsewhere."""

    def release(self, alias: str, item: Item) -> None:
        """Give up this node's claim on ``alias`` and publish ``item``."""

    def update(self, record: Item) -> None:
        """Keep ``record`` (a member's room, away message ...) for nodes that resynchronise."""


class UnknownItem(ValueError):
    """A message from another node of a type this node does not know (a newer version?)."""


@dataclass(slots=True)
class RemoteMember:
    """A member connected to another node, as this node knows them."""

    alias: str
    node: str
    room: str
    since: float
    active_at: float
    away: str | None
    registered: bool

    @classmethod
    def from_record(cls, record: Mapping[str, Any], now: float) -> RemoteMember:
        """Build one from a presence record (as :meth:`ClusterHub.record_of` makes them)."""
        return cls(
            alias=str(record["alias"]),
            node=str(record["node"]),
            room=str(record["room"]),
            since=float(record["since"]),
            active_at=now,
            away=record.get("away") or None,
            registered=bool(record.get("registered")),
        )


class ClusterHub(Hub):
    """A hub whose rooms, rosters and aliases span every node of the cluster."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus: Bus | None = None
        # Members of other nodes, by alias key, and by room key.
        self.remote: dict[str, RemoteMember] = {}
        self._remote_rooms: dict[str, dict[str, RemoteMember]] = {}
        # Old alias key -> member, while a change of alias awaits the cluster's answer.
        self._renaming: dict[str, Member] = {}

    # Presence records: what the bus keeps of each local member.

    def record_of(self, member: Member) -> Item:
        """The presence record of local ``member``, as other nodes keep it."""
        presence = self._presence_of(member)
        assert self.bus is not None
        return {
            "alias": member.alias,
            "node": self.bus.node,
            "room": presence.room.name,
            "since": presence.since,
            "away": presence.away,
            "registered": self.is_registered(member),
        }

    def local_records(self) -> list[Item]:
        """The presence records of every local member (for a resynchronisation)."""
        return [self.record_of(member) for member in self._members.values()]

    def _bus_up(self) -> Bus | None:
        """The bus, if news can be published now."""
        return self.bus if self.bus is not None and self.bus.up else None

    def _bus_linked(self) -> Bus | None:
        """The bus, if claims can be made now (also while it resynchronises)."""
        return self.bus if self.bus is not None and self.bus.linked else None

    # Local members: as on one server, then told to the other nodes.

    def check_available(self, alias: str, account: str | None = None) -> str:
        if alias_key(alias) in self._renaming:
            raise AliasRefused(f"The alias {alias} is taken.")
        alias = super().check_available(alias, account)
        # The owner of a registered alias may take it from a session of theirs elsewhere.
        if alias_key(alias) in self.remote and alias_key(alias) != account:
            raise AliasRefused(f"The alias {alias} is taken.")
        return alias

    def online(self) -> tuple[str, ...]:
        names = [*super().online(), *(m.alias for m in self.remote.values())]
        return tuple(sorted(names, key=alias_key))

    def join(
        self, member: Member, alias: str, registered: bool = False, replay: bool = True
    ) -> None:
        # The owner of a registered alias takes it even from a session of theirs on
        # another node: the claim tells that node to end it (see CLAIM_SCRIPT).
        ghost = self.remote.get(alias_key(alias)) if registered else None
        if ghost is not None:
            self._remote_remove(alias_key(alias))
        super().join(member, alias, registered, replay)
        if (bus := self._bus_linked()) is not None:
            record = self.record_of(member)
            claimed = bus.claim(record, {"t": "join", **record}, force=registered)
            claimed.addCallback(self._claimed, member, alias)
            claimed.addErrback(self._log_bus_failure, "claiming {alias}", alias=alias)

    def _claimed(self, won: bool, member: Member, alias: str) -> None:
        """Another node claimed ``alias`` in the same instant: the later claim gives way."""
        if won or not self.is_online(member) or member.alias != alias:
            return
        self.lost_alias(member)
        if self.bus is not None:
            self.bus.refresh(alias)

    def lost_alias(self, member: Member) -> None:
        """``member``'s alias belongs to a member of another node: tell them, and let them go."""
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

    def leave(self, member: Member, reason: str) -> None:
        if not self.is_online(member):
            return
        alias = member.alias
        assert alias is not None
        super().leave(member, reason)
        if not self._closing and (bus := self._bus_linked()) is not None:
            bus.release(
                alias, {"t": "leave", "alias": alias, "reason": clean_text(reason) or "left"}
            )

    def move(self, member: Member, room_name: str) -> None:
        before = self._room(member)
        super().move(member, room_name)
        after = self._room(member)
        if after is not before and (bus := self._bus_linked()) is not None:
            bus.update(self.record_of(member))
            bus.publish({"t": "move", "alias": member.alias, "room": after.name})

    def rename(self, member: Member, new_alias: str) -> None:
        old = member.alias
        assert old is not None
        if member in self._renaming.values():
            raise AliasRefused("Your last change of alias is not confirmed yet; try again.")
        super().rename(member, new_alias)
        if (bus := self._bus_linked()) is not None:
            # Until the cluster answers, the old alias stays this member's: it may be back.
            self._renaming[alias_key(old)] = member
            item = {"t": "rename", "old": old, "new": new_alias}
            renamed = bus.rename(old, self.record_of(member), item)
            renamed.addCallback(self._renamed, member, old, new_alias)
            renamed.addErrback(self._log_bus_failure, "renaming {alias}", alias=old)
            renamed.addBoth(lambda _: self._renaming.pop(alias_key(old), None))

    def _renamed(self, won: bool, member: Member, old: str, new: str) -> None:
        """Another node took ``new`` in the same instant: back to ``old`` (still ours)."""
        if won or not self.is_online(member) or member.alias != new:
            return
        self._renaming.pop(alias_key(old), None)
        try:
            super().rename(member, old)
        except AliasRefused:  # not even the old one can be had now
            self.lost_alias(member)
            return
        self.tell(
            member,
            Error(
                f"The alias {new} was taken on another server at the same moment; you are {old}."
            ),
        )
        assert self.bus is not None
        self.bus.refresh(new)

    def _spoke(self, member: Member, kind: str, text: str) -> None:
        super()._spoke(member, kind, text)
        if (bus := self._bus_up()) is not None:
            room = self._room(member).name
            at = self.clock.seconds()
            bus.publish({"t": kind, "alias": member.alias, "room": room, "text": text, "at": at})

    def whisper(self, member: Member, recipient_alias: str, text: str) -> None:
        key = alias_key(recipient_alias)
        remote = self.remote.get(key)
        if remote is None or key in self._members:
            super().whisper(member, recipient_alias, text)
            return
        sender = self._touch(member)
        if self._muted(member):
            return
        text = clean_text(text)
        if not text:
            self.tell(member, Error("Empty private message not sent."))
            return
        bus = self._bus_up()
        item = {"t": "whisper", "to": remote.node, "from": sender, "recipient": remote.alias}
        if bus is None or not bus.publish({**item, "text": text}):
            self.tell(member, Error(f"{remote.alias}'s server cannot be reached now; not sent."))
            return
        self.tell(member, WhisperSent(remote.alias, text))
        if remote.away is not None:
            self.tell(member, Notice(f"{remote.alias} is away: {remote.away}"))

    def set_topic(self, member: Member, topic: str | None) -> bool:
        if not super().set_topic(member, topic):
            return False
        if (bus := self._bus_up()) is not None:
            room = self._room(member)
            bus.publish(
                {"t": "topic", "alias": member.alias, "room": room.name, "topic": room.topic}
            )
        return True

    def set_away(self, member: Member, message: str | None) -> bool:
        if not super().set_away(member, message):
            return False
        if (bus := self._bus_linked()) is not None:
            away = self._presence_of(member).away
            bus.update(self.record_of(member))
            bus.publish({"t": "away", "alias": member.alias, "away": away})
        return True

    def mark_registered(self, member: Member, alias: str) -> None:
        super().mark_registered(member, alias)
        if (bus := self._bus_linked()) is not None:
            if self.is_online(member) and member.alias == alias:
                bus.update(self.record_of(member))
            # Told even if the member has gone or changed alias meanwhile: the
            # alias is registered either way, and every node must ask for its password.
            bus.publish({"t": "registered", "alias": alias})

    # Answers that cover every node.

    def roster(self, member: Member, everyone: bool = False) -> None:
        if everyone:
            super().roster(member, everyone)
            return
        room = self._room(member)
        self.tell(member, Roster(room.name, self._all_names(room.name, room.names())))

    def list_rooms(self, member: Member) -> None:
        rooms: dict[str, tuple[str, int]] = {
            key: (room.name, len(room)) for key, room in self._rooms.items()
        }
        for key, members in self._remote_rooms.items():
            name, count = rooms.get(key, (next(iter(members.values())).room, 0))
            rooms[key] = (name, count + len(members))
        listed = tuple(
            (name, count, self._topics.get(key)) for key, (name, count) in sorted(rooms.items())
        )
        self.tell(member, RoomList(listed))

    def whois(self, member: Member, alias: str) -> None:
        remote = self.remote.get(alias_key(alias))
        if remote is None or alias_key(alias) in self._members:
            super().whois(member, alias)
            return
        now = self.clock.seconds()
        self.tell(
            member,
            Whois(
                remote.alias,
                remote.room,
                now - remote.since,
                now - remote.active_at,
                remote.registered,
                remote.away,
            ),
        )

    def ignore(self, member: Member, alias: str) -> None:
        remote = self.remote.get(alias_key(alias))
        if remote is None or alias_key(alias) in self._members:
            super().ignore(member, alias)
            return
        self._presence_of(member).ignores.add(alias_key(remote.alias))
        self.tell(member, Notice(f"Ignoring {remote.alias}; /unignore {remote.alias} undoes it."))

    def _open_room(self, name: str) -> Room:
        # A room in use on other nodes keeps the name it was opened with there.
        if room_key(name) not in self._rooms and (there := self._remote_rooms.get(room_key(name))):
            name = next(iter(there.values())).room
        return super()._open_room(name)

    def _present(self, room: Room) -> int:
        return len(room) + len(self._remote_rooms.get(room_key(room.name), ()))

    def _names_shown(self, room: Room, present: int) -> tuple[str, ...]:
        if present <= LISTED_NAMES:
            return self._all_names(room.name, room.names())
        return super()._names_shown(room, present)

    def _all_names(self, room_name: str, local: Iterable[str]) -> tuple[str, ...]:
        remote = (m.alias for m in self._remote_rooms.get(room_key(room_name), {}).values())
        return tuple(sorted([*local, *remote], key=alias_key))

    # Operators: what they do to members of other nodes goes through the bus.

    def kick(self, operator: Member, alias: str, reason: str) -> None:
        remote = self.remote.get(alias_key(alias))
        if remote is None or alias_key(alias) in self._members:
            super().kick(operator, alias, reason)
            return
        if (name := self._require_operator(operator)) is None:
            return
        reason = clean_text(reason) or "no reason given"
        item = {"t": "kick", "to": remote.node, "by": operator.alias, "operator": name}
        if (bus := self._bus_up()) is None or not bus.publish(
            {**item, "alias": remote.alias, "reason": reason}
        ):
            self.tell(operator, Error(f"{remote.alias}'s server cannot be reached now."))
            return
        self.log.info(
            "operator {name} ({alias}) kicked {target} on node {node}: {reason}",
            name=name,
            alias=operator.alias,
            target=remote.alias,
            node=remote.node,
            reason=reason,
        )
        self.tell(operator, Notice(f"Kicked {remote.alias}."))

    def mute(self, operator: Member, alias: str, seconds: float | None) -> None:
        key = alias_key(alias)
        remote = self.remote.get(key)
        if self.operator_name(operator) is None or remote is None or key in self._members:
            super().mute(operator, alias, seconds)
            target = self._members.get(key)
            if target is None or self.operator_name(operator) is None:
                return
        else:
            self._mutes[key] = float("inf") if seconds is None else self.clock.seconds() + seconds
            how_long = "until unmuted" if seconds is None else f"for {duration(seconds)}"
            self.tell(operator, Notice(f"Muted {remote.alias} {how_long}."))
        until = self._mutes[key]
        if (bus := self._bus_up()) is not None:
            bus.publish(
                {"t": "mute", "alias": alias, "until": None if until == float("inf") else until}
            )

    def unmute(self, operator: Member, alias: str) -> None:
        was_muted = alias_key(alias) in self._mutes
        super().unmute(operator, alias)
        if (
            was_muted
            and alias_key(alias) not in self._mutes
            and (bus := self._bus_up()) is not None
        ):
            bus.publish({"t": "unmute", "alias": clean_text(alias)})

    def _enforce_ban(self, operator: Member, name: str, ban: Ban) -> None:
        super()._enforce_ban(operator, name, ban)
        if (bus := self._bus_up()) is not None:
            bus.publish({"t": "ban", "by": operator.alias, **_ban_fields(ban)})

    def unban(self, operator: Member, target: str) -> None:
        try:
            mask, _ = ban_target(target)
        except BanRefused:
            mask = None
        was_banned = mask is not None and any(ban.mask == mask for ban in self.bans)
        super().unban(operator, target)
        lifted = was_banned and not any(ban.mask == mask for ban in self.bans)
        if lifted and (bus := self._bus_up()) is not None:
            bus.publish({"t": "unban", "mask": mask})

    def set_motd(self, operator: Member, text: str | None) -> None:
        super().set_motd(operator, text)
        if self.operator_name(operator) is not None and (bus := self._bus_up()) is not None:
            bus.publish({"t": "motd", "text": self.motd_set_text})

    # What other nodes' members do.

    def receive(self, node: str, item: Item) -> None:
        """Act on ``item``, published by ``node``; raises UnknownItem for a type not known."""
        kind = item["t"]
        if kind == "sync":
            self.log.info(
                "node {node} (re)joined the cluster with {count} member(s)",
                node=node,
                count=len(item["members"]),
            )
            self.reconcile(node, item["members"], drop_missing=True)
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise UnknownItem(kind)
        handler(self, node, item)

    def remote_join(self, node: str, item: Item) -> None:
        """A member of ``node`` came online."""
        key = alias_key(item["alias"])
        if key in self._members:
            return  # ours holds it here; the next resynchronisation settles who keeps it
        member = RemoteMember.from_record(item, self.clock.seconds())
        if member.registered and self.accounts is not None:
            self.accounts.note_registered(member.alias)
        known = self.remote.get(key)
        if known is not None and known.node == member.node:  # news of one already known
            if room_key(known.room) != room_key(member.room):
                self._remote_move(known, member.room)
            known.away, known.registered = member.away, member.registered
            return
        self._remote_remove(key)
        self._remote_add(member)
        if (room := self._rooms.get(room_key(member.room))) is not None:
            self._queue(room, Joined(member.alias, room.name, self._present(room), None))

    def remote_leave(self, node: str, item: Item) -> None:
        """A member of ``node`` went offline."""
        self._remote_gone(node, item["alias"], str(item["reason"]))

    def remote_gone(self, node: str, item: Item) -> None:
        """A node went away (or was found dead): its members are gone with it."""
        aliases = item.get("aliases") or ()
        self.log.info(
            "node {gone} left the cluster ({reason}) with {count} member(s)",
            gone=item["node"],
            reason=item["reason"],
            count=len(aliases),
        )
        for alias in aliases:
            self._remote_gone(str(item["node"]), alias, str(item["reason"]))

    def remote_move(self, node: str, item: Item) -> None:
        """A member of ``node`` moved to another room."""
        if (member := self._remote_of(node, item["alias"])) is not None:
            self._remote_move(member, str(item["room"]))

    def remote_rename(self, node: str, item: Item) -> None:
        """A member of ``node`` changed alias."""
        member = self._remote_of(node, item["old"])
        new = str(item["new"])
        if member is None or (alias_key(new) in self._members):
            return
        old = member.alias
        self._remote_remove(alias_key(old))
        self._remote_remove(alias_key(new))  # stale news of someone else under that name
        member.alias = new
        self._remote_add(member)
        if (room := self._rooms.get(room_key(member.room))) is not None:
            self._queue(room, Renamed(old, new))
        self._follow_rename(old, new)

    def remote_spoke(self, node: str, item: Item) -> None:
        """A member of ``node`` said something (``say``) or did (``act``) in their room."""
        member = self._remote_of(node, item["alias"])
        if member is None:
            return
        kind, text, room_name = item["t"], str(item["text"]), str(item["room"])
        member.active_at = self.clock.seconds()
        if (room := self._rooms.get(room_key(room_name))) is not None:
            event = Said(member.alias, text) if kind == "say" else Acted(member.alias, text)
            self._queue(room, event, None, alias_key(member.alias))
        if self.keep_history:
            entry = HistoryEntry(room_name, kind, member.alias, text, float(item["at"]))
            self._room_history(room_name).append(entry)

    def remote_away(self, node: str, item: Item) -> None:
        """A member of ``node`` went away or came back."""
        if (member := self._remote_of(node, item["alias"])) is not None:
            member.away = item.get("away") or None

    def remote_registered(self, node: str, item: Item) -> None:
        """A member of ``node`` registered their alias."""
        if self.accounts is not None:
            self.accounts.note_registered(str(item["alias"]))
        if (member := self._remote_of(node, item["alias"])) is not None:
            member.registered = True

    def remote_topic(self, node: str, item: Item) -> None:
        """Someone on ``node`` set or cleared the topic of a room."""
        room_name, topic = str(item["room"]), item.get("topic")
        self._remember_topic(room_name, topic or None)
        if (room := self._rooms.get(room_key(room_name))) is not None:
            room.topic = topic or None
            self._queue(room, TopicChanged(str(item["alias"]), topic or None))

    def remote_whisper(self, node: str, item: Item) -> None:
        """A private message from a member of ``node`` to one of ours."""
        recipient = self._members.get(alias_key(item["recipient"]))
        sender = str(item["from"])
        if recipient is not None and alias_key(sender) not in self._presence[recipient].ignores:
            self.tell(recipient, Whispered(sender, str(item["text"])))

    def remote_kick(self, node: str, item: Item) -> None:
        """An operator on ``node`` kicked one of our members."""
        target = self._members.get(alias_key(item["alias"]))
        if target is None:
            return
        by, reason = str(item["by"]), str(item["reason"])
        self.log.info(
            "operator {name} ({by}) on node {node} kicked {target}: {reason}",
            name=item["operator"],
            by=by,
            node=node,
            target=target.alias,
            reason=reason,
        )
        self.tell(target, Notice(f"You were kicked by {by}: {reason}"))
        self.leave(target, f"Kicked by {by}: {reason}")
        target.disconnect(f"kicked by operator {item['operator']} on node {node}")

    def remote_replace(self, node: str, item: Item) -> None:
        """The owner of a registered alias logged in on ``node``: their session here goes."""
        ghost = self._members.get(alias_key(item["alias"]))
        if ghost is not None:
            self.leave(ghost, "Replaced by a new login")
            ghost.disconnect("ghost session replaced by a new login on another node")

    def remote_mute(self, node: str, item: Item) -> None:
        """An operator on ``node`` muted someone (maybe one of ours)."""
        until = item.get("until")
        self._mutes[alias_key(item["alias"])] = float("inf") if until is None else float(until)
        if (target := self._members.get(alias_key(item["alias"]))) is not None:
            how_long = "until unmuted" if until is None else f"until {utc_stamp(float(until))}"
            self.tell(target, Notice(f"You have been muted {how_long}: nobody sees your lines."))

    def remote_unmute(self, node: str, item: Item) -> None:
        """An operator on ``node`` unmuted someone."""
        was_muted = self._mutes.pop(alias_key(item["alias"]), None) is not None
        if was_muted and (target := self._members.get(alias_key(item["alias"]))) is not None:
            self.tell(target, Notice("You are no longer muted."))

    def remote_ban(self, node: str, item: Item) -> None:
        """An operator on ``node`` banned an alias or address: enforce it here too."""
        ban = Ban(
            item["mask"],
            item["kind"],
            item["reason"],
            item["set_by"],
            float(item["created_at"]),
            None if item.get("expires_at") is None else float(item["expires_at"]),
        )
        self.bans.add(ban)
        for member in list(self._members.values()):
            if self.banned(member.host, member.alias) is ban:
                self._cut_off(
                    member, ban, f"Banned by {item['by']}", f"operator {ban.set_by} on node {node}"
                )

    def remote_unban(self, node: str, item: Item) -> None:
        """An operator on ``node`` lifted a ban."""
        self.bans.remove(str(item["mask"]))

    def remote_motd(self, node: str, item: Item) -> None:
        """An operator on ``node`` changed the message of the day."""
        self.motd_set_text = item.get("text") or None

    # Resynchronisation.

    def reconcile(
        self,
        node: str | None,
        records: Iterable[Item],
        drop_missing: bool,
        keep: Iterable[str] = (),
    ) -> None:
        """Bring the view of other nodes' members in line with ``records``.

        ``node`` None means the records cover every node but this one; a node
        name, that they are all of that node's members. Members seen for the first
        time are announced as arriving, moved ones as moving; with
        ``drop_missing``, those no longer listed (and not in ``keep``, alias keys
        with fresher news than the records) are announced as gone. A record that
        is not one is skipped (logged), not allowed to stop the rest.
        """
        assert self.bus is not None
        seen: set[str] = set(keep)
        now = self.clock.seconds()
        for record in records:
            try:
                if record.get("node") == self.bus.node or (node and record.get("node") != node):
                    continue
                fresh = RemoteMember.from_record(record, now)
            except (AttributeError, KeyError, TypeError, ValueError):
                self.log.warn("cluster: a roster entry that is not one: {r!r}", r=record)
                continue
            key = alias_key(fresh.alias)
            seen.add(key)
            known = self.remote.get(key)
            if known is None or known.node != fresh.node:
                self.remote_join(fresh.node, record)
                continue
            if room_key(known.room) != room_key(fresh.room):
                self._remote_move(known, fresh.room)
            known.away, known.registered = fresh.away, fresh.registered
        if drop_missing:
            for key, member in list(self.remote.items()):
                if key not in seen and (node is None or member.node == node):
                    self._remote_gone(member.node, member.alias, "Lost in a netsplit")

    def reload_shared(
        self,
        topics: Mapping[str, str],
        bans: Iterable[Ban],
        motd: str | None,
        history: Mapping[str, list[HistoryEntry]],
    ) -> None:
        """Take up again what lives in the shared store (after the link was down):
        what other nodes changed and said meanwhile was not heard here."""
        self.bans = Bans(bans)
        for member in list(self._members.values()):
            if (ban := self.banned(member.host, member.alias)) is not None:
                self._cut_off(member, ban, "Banned", f"operator {ban.set_by}")
        self._history.clear()
        if self.keep_history:
            for room, entries in history.items():
                self._room_history(room).extend(entries)
        self.motd_set_text = motd
        self._topics.clear()
        for room_name, topic in topics.items():
            self._remember_topic(room_name, topic)
        for key, room in self._rooms.items():
            room.topic = self._topics.get(key)
            self._load_topic(room.name)
        self._load_missing_histories()

    def load(
        self,
        topics: dict[str, str],
        history: dict[str, list[HistoryEntry]],
        bans: list[Ban] | None = None,
        motd: str | None = None,
    ) -> None:
        # Lines heard from other nodes while the store was being read are in it too.
        self._history.clear()
        super().load(topics, history, bans, motd)

    def link_down(self) -> None:
        """The bus is down: tell everyone that only this node hears them now."""
        self.announce(LINK_DOWN_NOTICE)

    def link_back(self) -> None:
        """The bus is back after being down."""
        self.announce(LINK_UP_NOTICE)

    # Inside.

    def _remote_of(self, node: str, alias: Any) -> RemoteMember | None:
        """The remote member ``alias`` if it is ``node``'s (anything else is stale news)."""
        member = self.remote.get(alias_key(str(alias)))
        return member if member is not None and member.node == node else None

    def _remote_add(self, member: RemoteMember) -> None:
        key = alias_key(member.alias)
        self.remote[key] = member
        self._remote_rooms.setdefault(room_key(member.room), {})[key] = member

    def _remote_remove(self, key: str) -> RemoteMember | None:
        member = self.remote.pop(key, None)
        if member is not None:
            in_room = self._remote_rooms.get(room_key(member.room), {})
            in_room.pop(key, None)
            if not in_room:
                self._remote_rooms.pop(room_key(member.room), None)
        return member

    def _remote_gone(self, node: str, alias: Any, reason: str) -> None:
        member = self._remote_of(node, alias)
        if member is None:
            return
        self._remote_remove(alias_key(member.alias))
        if (room := self._rooms.get(room_key(member.room))) is not None:
            self._queue(room, Left(member.alias, clean_text(reason) or "left"))

    def _remote_move(self, member: RemoteMember, room_name: str) -> None:
        old = member.room
        self._remote_remove(alias_key(member.alias))
        member.room = room_name
        self._remote_add(member)
        if (room := self._rooms.get(room_key(old))) is not None:
            self._queue(room, Departed(member.alias, room_name))
        if (room := self._rooms.get(room_key(room_name))) is not None:
            self._queue(room, Joined(member.alias, room.name, self._present(room), old))

    def _log_bus_failure(self, failure: Any, what: str, **fields: Any) -> None:
        # The link is down or went down: the resynchronisation will redo the claim.
        self.log.warn(
            "cluster: " + what + " failed: {problem}", problem=failure.getErrorMessage(), **fields
        )


def _ban_fields(ban: Ban) -> Item:
    return {
        "mask": ban.mask,
        "kind": ban.kind,
        "reason": ban.reason,
        "set_by": ban.set_by,
        "created_at": ban.created_at,
        "expires_at": ban.expires_at,
    }


_HANDLERS: dict[str, Callable[[ClusterHub, str, Item], None]] = {
    "join": ClusterHub.remote_join,
    "leave": ClusterHub.remote_leave,
    "gone": ClusterHub.remote_gone,
    "move": ClusterHub.remote_move,
    "rename": ClusterHub.remote_rename,
    "say": ClusterHub.remote_spoke,
    "act": ClusterHub.remote_spoke,
    "away": ClusterHub.remote_away,
    "registered": ClusterHub.remote_registered,
    "topic": ClusterHub.remote_topic,
    "whisper": ClusterHub.remote_whisper,
    "kick": ClusterHub.remote_kick,
    "replace": ClusterHub.remote_replace,
    "mute": ClusterHub.remote_mute,
    "unmute": ClusterHub.remote_unmute,
    "ban": ClusterHub.remote_ban,
    "unban": ClusterHub.remote_unban,
    "motd": ClusterHub.remote_motd,
}
