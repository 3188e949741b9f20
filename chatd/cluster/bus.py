"""What this node tells the others, and what it does with what they tell it.

The :class:`Bus` listens to the hub (:class:`~chatd.interfaces.IHubListener`):
what local members did is published, once it has happened, through the node
(:class:`Node`, the link to Redis in :mod:`chatd.cluster.node`), and claims of
aliases that another node won in the same instant are given up through the
hub's public methods. What other nodes publish comes back typed
(:mod:`chatd.cluster.messages`) to :meth:`Bus.receive`, which keeps the roster
(the hub's directory) up to date and hands the news to the hub's ``remote_*``
methods and :mod:`chatd.moderation`.

Each node delivers only to its own members, so every line reaches each member
once: the sender's node delivers locally, every other node delivers what it
receives from the bus. Nodes trust each other: the bus is the trust boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from chatd import moderation
from chatd.cluster.messages import (
    Act,
    Away,
    Banned,
    Gone,
    Join,
    Kick,
    Leave,
    Message,
    Motd,
    Move,
    Mute,
    PresenceRecord,
    Registered,
    Rename,
    Replace,
    Say,
    Sync,
    Topic,
    Unbanned,
    Unmute,
    Whisper,
)
from chatd.cluster.roster import RemoteMember, Roster
from chatd.hub import Hub
from chatd.interfaces import IHubListener, IMember
from chatd.model import Ban
from chatd.text import alias_key, room_key

LINK_DOWN_NOTICE = (
    "The link to the other chatd servers is down: until it is back, only people"
    " on this server hear you."
)
LINK_UP_NOTICE = "The link to the other chatd servers is back."
NETSPLIT_REASON = "Lost in a netsplit"


class Node(Protocol):
    """What the bus needs of the link between nodes (see :class:`chatd.cluster.node.Cluster`)."""

    node: str
    # Up: in the cluster, publishing. Linked: Redis reachable (also while resynchronising).
    up: bool

    @property
    def linked(self) -> bool:
        """Whether claims can be made now."""

    def publish(self, message: Message) -> bool:
        """Send ``message`` to every other node, in order; False (and dropped) if not up."""

    def claim(self, record: PresenceRecord, message: Join, force: bool = False) -> Deferred[bool]:
        """Claim ``record``'s alias for this node, publishing ``message``; False if another
        has it (unless ``force``: then it is taken)."""

    def refresh(self, alias: str) -> None:
        """Learn again which other node holds ``alias`` (a Join handed to the bus)."""

    def rename(self, old: str, record: PresenceRecord, message: Rename) -> Deferred[bool]:
        """Move this node's claim from alias ``old`` to ``record``'s; False if taken elsewhere."""

    def release(self, alias: str, message: Leave) -> None:
        """Give up this node's claim on ``alias`` and publish ``message``."""

    def update(self, record: PresenceRecord) -> None:
        """Keep ``record`` (a member's room, away message ...) for nodes that resynchronise."""


@implementer(IHubListener)
class Bus:
    """Publishes what happens on this node's hub; acts on what the other nodes publish."""

    log = Logger()

    def __init__(self, node: Node, roster: Roster) -> None:
        self._node = node
        self.roster = roster
        self._hub: Hub | None = None

    def attach(self, hub: Hub) -> None:
        """Serve ``hub`` (built with this bus as its listener and the roster as directory)."""
        self._hub = hub

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the bus serves no hub yet")
        return self._hub

    # Presence records: what Redis keeps of each local member.

    def record_of(self, member: IMember) -> PresenceRecord:
        """The presence record of local ``member``, as other nodes keep it."""
        presence = self.hub.presence_of(member)
        return PresenceRecord(
            alias=presence.alias,
            node=self._node.node,
            room=presence.room.name,
            since=presence.since,
            away=presence.away,
            registered=self.hub.is_registered(member),
        )

    def local_records(self) -> list[PresenceRecord]:
        """The presence records of every local member (for a resynchronisation)."""
        return [self.record_of(member) for member in self.hub.members()]

    # What happened here (IHubListener).

    def joined(self, member: IMember) -> None:
        if not self._node.linked:
            return
        record = self.record_of(member)
        claimed = self._node.claim(record, Join(record), force=record.registered)
        claimed.addCallback(self._claimed, member, record.alias)
        claimed.addErrback(self._log_failure, "claiming {alias}", alias=record.alias)

    def _claimed(self, won: bool, member: IMember, alias: str) -> None:
        """Another node claimed ``alias`` in the same instant: the later claim gives way."""
        if won or not self.hub.is_online(member) or member.alias != alias:
            return
        self.hub.lost_alias(member)
        self._node.refresh(alias)

    def left(self, alias: str, reason: str) -> None:
        if self._node.linked:
            self._node.release(alias, Leave(alias, reason))

    def moved(self, member: IMember, came_from: str) -> None:
        if self._node.linked:
            record = self.record_of(member)
            self._node.update(record)
            self._node.publish(Move(record.alias, record.room))

    def renamed(self, member: IMember, old: str) -> None:
        if not self._node.linked:
            return
        record = self.record_of(member)
        new = record.alias
        # Until the cluster answers, the old alias stays this member's: it may be back.
        self.roster.reserve(old, new)
        renamed = self._node.rename(old, record, Rename(old, new))
        renamed.addCallback(self._renamed, member, old, new)
        renamed.addErrback(self._log_failure, "renaming {alias}", alias=old)
        renamed.addBoth(lambda _: self.roster.unreserve(old))

    def _renamed(self, won: bool, member: IMember, old: str, new: str) -> None:
        """Another node took ``new`` in the same instant: back to ``old`` (still ours)."""
        if won or not self.hub.is_online(member) or member.alias != new:
            return
        self.roster.unreserve(old)
        self.hub.rename_back(member, new, old)
        self._node.refresh(new)

    def said(self, alias: str, room: str, text: str, at: float) -> None:
        if self._node.up:
            self._node.publish(Say(alias, room, text, at))

    def acted(self, alias: str, room: str, text: str, at: float) -> None:
        if self._node.up:
            self._node.publish(Act(alias, room, text, at))

    def topic_set(self, alias: str, room: str, topic: str | None) -> None:
        if self._node.up:
            self._node.publish(Topic(alias, room, topic))

    def away_set(self, member: IMember) -> None:
        if self._node.linked:
            record = self.record_of(member)
            self._node.update(record)
            self._node.publish(Away(record.alias, record.away))

    def registered(self, alias: str, member: IMember | None) -> None:
        if not self._node.linked:
            return
        if member is not None:
            self._node.update(self.record_of(member))
        # Told even if the member has gone or changed alias meanwhile: the alias is
        # registered either way, and every node must ask for its password.
        self._node.publish(Registered(alias))

    def banned(self, ban: Ban, by: str) -> None:
        if self._node.up:
            self._node.publish(Banned(by, ban))

    def unbanned(self, mask: str) -> None:
        if self._node.up:
            self._node.publish(Unbanned(mask))

    def muted(self, alias: str, until: float | None) -> None:
        if self._node.up:
            self._node.publish(Mute(alias, until))

    def unmuted(self, alias: str) -> None:
        if self._node.up:
            self._node.publish(Unmute(alias))

    def motd_set(self, text: str | None) -> None:
        if self._node.up:
            self._node.publish(Motd(text))

    # The link.

    def link_down(self) -> None:
        """The link is down: tell everyone here that only this node hears them now."""
        self.hub.announce(LINK_DOWN_NOTICE)

    def link_back(self) -> None:
        """The link is back after being down."""
        self.hub.announce(LINK_UP_NOTICE)

    # What other nodes tell.

    def receive(self, node: str, message: Message) -> None:
        """Act on ``message``, published by ``node`` (addressed to this node, if at all)."""
        hub = self.hub
        match message:
            case Say() | Act():
                member = self.roster.of(node, message.alias)
                if member is None:
                    return
                member.active_at = hub.clock.seconds()
                spoke = hub.remote_said if isinstance(message, Say) else hub.remote_acted
                spoke(member.alias, message.room, message.text, message.at)
            case Join():
                self.heard_of(message.record)
            case Leave():
                self._gone(node, message.alias, message.reason)
            case Gone():
                self.log.info(
                    "node {gone} left the cluster ({reason}) with {count} member(s)",
                    gone=message.node,
                    reason=message.reason,
                    count=len(message.aliases),
                )
                for alias in message.aliases:
                    self._gone(message.node, alias, message.reason)
            case Move():
                member = self.roster.of(node, message.alias)
                if member is not None and room_key(member.room) != room_key(message.room):
                    self._moved(member, message.room)
            case Rename():
                self._renamed_elsewhere(node, message.old, message.new)
            case Away():
                if (member := self.roster.of(node, message.alias)) is not None:
                    member.away = message.away
            case Registered():
                if hub.accounts is not None:
                    hub.accounts.note_registered(message.alias)
                if (member := self.roster.of(node, message.alias)) is not None:
                    member.registered = True
            case Topic():
                hub.remote_topic_set(message.alias, message.room, message.topic)
            case Whisper():
                hub.remote_whispered(message.sender, message.recipient, message.text)
            case Kick():
                moderation.kick_heard(
                    hub, message.alias, message.by, message.operator, node, message.reason
                )
            case Replace():
                ghost = hub.member_named(message.alias)
                if ghost is not None:
                    hub.leave(ghost, "Replaced by a new login")
                    ghost.disconnect("ghost session replaced by a new login on another node")
            case Mute():
                moderation.mute_heard(hub, message.alias, message.until)
            case Unmute():
                moderation.unmute_heard(hub, message.alias)
            case Banned():
                moderation.ban_heard(hub, message.ban, message.by, node)
            case Unbanned():
                moderation.unban_heard(hub, message.mask)
            case Motd():
                moderation.motd_heard(hub, message.text)
            case Sync():
                self.log.info(
                    "node {node} (re)joined the cluster with {count} member(s)",
                    node=node,
                    count=len(message.members) + len(message.unreadable),
                )
                for record in message.unreadable:
                    self.log.warn("cluster: a roster entry that is not one: {r!r}", r=record)
                self.reconcile(node, message.members, drop_missing=True)

    def heard_of(self, record: PresenceRecord) -> None:
        """A member of another node (``record.node``) came online, or is known to be."""
        hub = self.hub
        key = alias_key(record.alias)
        if record.node == self._node.node:
            return  # this node's members are in its hub, never in its roster
        if hub.member_named(record.alias) is not None:
            return  # ours holds it here; the next resynchronisation settles who keeps it
        member = RemoteMember.from_record(record, hub.clock.seconds())
        if member.registered and hub.accounts is not None:
            hub.accounts.note_registered(member.alias)
        known = self.roster.find(record.alias)
        if known is not None and known.node == member.node:  # news of one already known
            if room_key(known.room) != room_key(member.room):
                self._moved(known, member.room)
            known.away, known.registered = member.away, member.registered
            return
        self.roster.remove(key)
        self.roster.add(member)
        hub.remote_joined(member.alias, member.room)

    def reconcile(
        self,
        node: str | None,
        records: Iterable[PresenceRecord],
        drop_missing: bool,
        keep: Iterable[str] = (),
    ) -> None:
        """Bring the roster in line with ``records``.

        ``node`` None means the records cover every node but this one; a node
        name, that they are all of that node's members. Members seen for the first
        time are announced as arriving, moved ones as moving; with
        ``drop_missing``, those no longer listed (and not in ``keep``, alias keys
        with fresher news than the records) are announced as gone.
        """
        seen: set[str] = set(keep)
        for record in records:
            if record.node == self._node.node or (node and record.node != node):
                continue
            seen.add(alias_key(record.alias))
            known = self.roster.find(record.alias)
            if known is None or known.node != record.node:
                self.heard_of(record)
                continue
            if room_key(known.room) != room_key(record.room):
                self._moved(known, record.room)
            known.away, known.registered = record.away, record.registered
        if drop_missing:
            for member in self.roster:
                if alias_key(member.alias) not in seen and (node is None or member.node == node):
                    self._gone(member.node, member.alias, NETSPLIT_REASON)

    def _gone(self, node: str, alias: str, reason: str) -> None:
        member = self.roster.of(node, alias)
        if member is None:
            return
        self.roster.remove(alias_key(member.alias))
        self.hub.remote_left(member.alias, member.room, reason)

    def _moved(self, member: RemoteMember, room: str) -> None:
        came_from = member.room
        self.roster.move(member, room)
        self.hub.remote_moved(member.alias, came_from, room)

    def _renamed_elsewhere(self, node: str, old: str, new: str) -> None:
        member = self.roster.of(node, old)
        if member is None or self.hub.member_named(new) is not None:
            return
        old = member.alias
        self.roster.remove(alias_key(old))
        self.roster.remove(alias_key(new))  # stale news of someone else under that name
        member.alias = new
        self.roster.add(member)
        self.hub.remote_renamed(old, new, member.room)

    def _log_failure(self, failure: Any, what: str, **fields: Any) -> None:
        # The link is down or went down: the resynchronisation will redo the claim.
        self.log.warn(
            "cluster: " + what + " failed: {problem}", problem=failure.getErrorMessage(), **fields
        )
