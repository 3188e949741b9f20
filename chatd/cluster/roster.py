"""The members of the other nodes, as this node knows them: the hub's directory.

Learnt from what the other nodes publish (:mod:`chatd.cluster.bus` keeps it up
to date); the hub asks it who is taken, who is where and how many are in a room
elsewhere, and through it sends a private message or a kick to another node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from zope.interface import implementer

from chatd.cluster.messages import Kick, Message, PresenceRecord, Whisper
from chatd.interfaces import IDirectory, IRemoteMember
from chatd.text import alias_key, room_key


@implementer(IRemoteMember)
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
    def from_record(cls, record: PresenceRecord, now: float) -> RemoteMember:
        """The member of a presence record, last active ``now`` (news of them just came)."""
        return cls(
            alias=record.alias,
            node=record.node,
            room=record.room,
            since=record.since,
            active_at=now,
            away=record.away,
            registered=record.registered,
        )


@implementer(IDirectory)
class Roster:
    """Members of other nodes, by alias key and by room key."""

    def __init__(self, publish: Callable[[Message], bool]) -> None:
        # Sends a message to the other nodes; False if it cannot now (the link is down).
        self._publish = publish
        self._members: dict[str, RemoteMember] = {}
        self._rooms: dict[str, dict[str, RemoteMember]] = {}
        # Old alias key -> new alias key, while a local change of alias awaits the
        # cluster's answer: the old alias may be back, so nobody else may take it.
        self._reserved: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[RemoteMember]:
        return iter(list(self._members.values()))

    # What the hub asks (IDirectory).

    def taken(self, alias: str, account: str | None) -> bool:
        key = alias_key(alias)
        return key in self._reserved or (key in self._members and key != account)

    def renaming(self, alias: str) -> bool:
        return alias_key(alias) in self._reserved.values()

    def take_over(self, alias: str) -> None:
        self.remove(alias_key(alias))

    def find(self, alias: str) -> RemoteMember | None:
        return self._members.get(alias_key(alias))

    def aliases(self) -> Iterable[str]:
        return (member.alias for member in self._members.values())

    def names_in(self, room: str) -> Iterable[str]:
        return (member.alias for member in self._rooms.get(room_key(room), {}).values())

    def count_in(self, room: str) -> int:
        return len(self._rooms.get(room_key(room), ()))

    def rooms(self) -> Iterable[tuple[str, int]]:
        return [(next(iter(there.values())).room, len(there)) for there in self._rooms.values()]

    def room_name(self, room: str) -> str | None:
        there = self._rooms.get(room_key(room))
        return next(iter(there.values())).room if there else None

    def whisper(self, sender: str, recipient: str, text: str) -> bool:
        remote = self.find(recipient)
        return remote is not None and self._publish(
            Whisper(remote.node, sender, remote.alias, text)
        )

    def kick(self, alias: str, by: str, operator: str, reason: str) -> bool:
        remote = self.find(alias)
        return remote is not None and self._publish(
            Kick(remote.node, by, operator, remote.alias, reason)
        )

    # What the bus changes.

    def of(self, node: str, alias: str) -> RemoteMember | None:
        """The member ``alias`` if it is ``node``'s (anything else is stale news)."""
        member = self._members.get(alias_key(alias))
        return member if member is not None and member.node == node else None

    def add(self, member: RemoteMember) -> None:
        key = alias_key(member.alias)
        self._members[key] = member
        self._rooms.setdefault(room_key(member.room), {})[key] = member

    def remove(self, key: str) -> RemoteMember | None:
        """Forget the member of alias key ``key``, if any, and return them."""
        member = self._members.pop(key, None)
        if member is not None:
            in_room = self._rooms.get(room_key(member.room), {})
            in_room.pop(key, None)
            if not in_room:
                self._rooms.pop(room_key(member.room), None)
        return member

    def move(self, member: RemoteMember, room: str) -> None:
        self.remove(alias_key(member.alias))
        member.room = room
        self.add(member)

    def reserve(self, old: str, new: str) -> None:
        """A local member went from alias ``old`` to ``new``: keep ``old`` theirs until
        the cluster has answered."""
        self._reserved[alias_key(old)] = alias_key(new)

    def unreserve(self, old: str) -> None:
        self._reserved.pop(alias_key(old), None)
