"""Tests of the cluster's seams: several hubs as one chat, each with its roster (directory)
and bus (listener), joined by an in-memory node instead of Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from chatd import moderation
from chatd.accounts import Accounts
from chatd.cluster.bus import LINK_DOWN_NOTICE, Bus
from chatd.cluster.messages import (
    Join,
    Leave,
    Message,
    PresenceRecord,
    Rename,
    Replace,
    UnknownMessage,
    parse,
    to_text,
)
from chatd.cluster.roster import RemoteMember, Roster
from chatd.events import Event
from chatd.hub import Hub, NoListener, Nowhere
from chatd.interfaces import IDirectory, IHubListener, IRemoteMember
from chatd.text import AliasRefused, alias_key
from tests.test_hub import RecordingMember as HubMember


def line_encode(event: Event) -> bytes:
    return repr(event).encode() + b"\n"


class RecordingMember(HubMember):
    """A member whose events arrive one per line, batched or not."""

    encode = staticmethod(line_encode)

    def text(self) -> str:
        return b"".join(self.delivered()).decode().rstrip("\n")


class MemoryCluster:
    """The shared state Redis would hold: who claims which alias."""

    def __init__(self) -> None:
        self.nodes: list[MemoryNode] = []
        self.claims: dict[str, str] = {}


class MemoryNode:
    """The bus's Node in memory: messages reach the other nodes at once, in order, as
    JSON (so each makes the trip the wire would make it take)."""

    def __init__(self, cluster: MemoryCluster, node: str, clock: Clock) -> None:
        self.cluster = cluster
        self.node = node
        self.up = True
        self.records: dict[str, PresenceRecord] = {}
        self.roster = Roster(self.publish)
        self.bus = Bus(self, self.roster)
        self.hub = Hub(clock, listener=self.bus, directory=self.roster)
        self.bus.attach(self.hub)
        cluster.nodes.append(self)

    def publish(self, message: Message) -> bool:
        if not self.up:
            return False
        item = json.loads(to_text(message.to_json()))
        for other in self.cluster.nodes:
            if other is not self and other.up and item.get("to", other.node) == other.node:
                other.bus.receive(self.node, parse(item))
        return True

    @property
    def linked(self) -> bool:
        return self.up

    def claim(self, record: PresenceRecord, message: Join, force: bool = False) -> Deferred[bool]:
        key = alias_key(record.alias)
        holder = self.cluster.claims.get(key)
        if force and holder is not None and holder != self.node:
            self.cluster.claims[key] = self.node
            self.publish(Replace(holder, record.alias))
        if self.cluster.claims.setdefault(key, self.node) != self.node:
            return succeed(False)
        self.records[key] = record
        self.publish(message)
        return succeed(True)

    def refresh(self, alias: str) -> None:
        owner = self.cluster.claims.get(alias_key(alias))
        for other in self.cluster.nodes:
            if other.node == owner and other is not self:
                self.bus.heard_of(other.records[alias_key(alias)])

    def rename(self, old: str, record: PresenceRecord, message: Rename) -> Deferred[bool]:
        key = alias_key(record.alias)
        if self.cluster.claims.setdefault(key, self.node) != self.node:
            return succeed(False)
        if key != alias_key(old):
            self.cluster.claims.pop(alias_key(old), None)
        self.records[key] = record
        self.publish(message)
        return succeed(True)

    def release(self, alias: str, message: Leave) -> None:
        if self.cluster.claims.get(alias_key(alias)) == self.node:
            del self.cluster.claims[alias_key(alias)]
            self.publish(message)

    def update(self, record: PresenceRecord) -> None:
        self.records[alias_key(record.alias)] = record


def receive(node: MemoryNode, sender: str, item: dict[str, Any]) -> None:
    """``node`` hears ``item`` (as JSON) from node ``sender``."""
    node.bus.receive(sender, parse(item))


@pytest.fixture
def cluster() -> tuple[MemoryNode, MemoryNode]:
    clock = Clock()
    shared = MemoryCluster()
    return MemoryNode(shared, "a", clock), MemoryNode(shared, "b", clock)


@pytest.fixture
def nodes(cluster: tuple[MemoryNode, MemoryNode]) -> tuple[Hub, Hub]:
    return cluster[0].hub, cluster[1].hub


def online(hub: Hub, *aliases: str) -> list[RecordingMember]:
    members = []
    for alias in aliases:
        member = RecordingMember(hub)
        hub.join(member, alias)
        members.append(member)
    return members


def settled(*members: RecordingMember) -> None:
    """End the turn and forget what the members received so far."""
    for member in members:
        member.delivered()
        member.received.clear()


def test_a_line_reaches_the_room_on_every_node_once_in_order(nodes: Any) -> None:
    """What alice says on node a reaches bob on node b once per line, in order, not alice."""
    a, b = nodes
    (alice,) = online(a, "alice")
    bob, carol = online(b, "bob", "carol")
    b.move(carol, "#elsewhere")
    settled(alice, bob, carol)
    for n in range(3):
        a.say(alice, f"line {n}")
    assert bob.text() == "\n".join(f"Said(sender='alice', text='line {n}')" for n in range(3))
    assert alice.text() == ""
    assert carol.text() == ""


def test_arrivals_on_other_nodes_are_announced_with_the_cluster_count(nodes: Any) -> None:
    """bob on node b hears alice arrive on a; alice is shown everyone, bob included."""
    a, b = nodes
    (bob,) = online(b, "bob")
    settled(bob)
    (alice,) = online(a, "alice")
    assert bob.text() == "Joined(alias='alice', room='#lobby', present=2, came_from=None)"
    assert "names=('alice', 'bob'), present=2" in alice.text()


def test_an_alias_online_on_another_node_is_refused_in_any_case(nodes: Any) -> None:
    """Aliases are unique across the cluster, case-insensitively."""
    a, b = nodes
    online(a, "alice")
    with pytest.raises(AliasRefused, match="taken"):
        online(b, "ALICE")
    assert b.online() == ("alice",)


def test_the_later_of_two_simultaneous_claims_gives_way(cluster: Any) -> None:
    """If another node claimed the alias first (not yet heard of here), this member is let go."""
    a = cluster[0].hub
    cluster[0].cluster.claims["alice"] = "b"  # b's claim is in the bus, its news not yet here
    (alice,) = online(a, "alice")
    assert "taken on another server at the same moment" in alice.text()
    assert alice.disconnected == "alias taken on another node"
    assert not a.is_online(alice)


def test_who_and_rooms_cover_every_node(nodes: Any) -> None:
    """/who lists everyone, /who of a room includes remote members, /rooms adds up counts."""
    a, b = nodes
    (alice,) = online(a, "alice")
    _, carol = online(b, "bob", "carol")
    b.move(carol, "#rust")
    settled(alice)
    a.roster(alice, everyone=True)
    a.roster(alice)
    a.list_rooms(alice)
    assert alice.text().splitlines() == [
        "Roster(room=None, names=('alice', 'bob', 'carol'))",
        "Roster(room='#lobby', names=('alice', 'bob'))",
        "RoomList(rooms=(('#lobby', 2, None), ('#rust', 1, None)), more=0)",
    ]


def test_private_messages_cross_nodes_and_respect_ignore_and_away(nodes: Any) -> None:
    """A whisper reaches its recipient on another node; ignoring drops it; away is reported."""
    a, b = nodes
    (alice,) = online(a, "alice")
    (bob,) = online(b, "bob")
    b.set_away(bob, "lunch")
    settled(alice, bob)
    a.whisper(alice, "BOB", "psst")
    assert bob.text() == "Whispered(sender='alice', text='psst')"
    assert alice.text().splitlines() == [
        "WhisperSent(recipient='bob', text='psst')",
        "Notice(text='bob is away: lunch')",
    ]
    b.ignore(bob, "alice")
    settled(bob)
    a.whisper(alice, "bob", "again")
    assert bob.text() == ""


def test_moves_renames_and_departures_are_announced_across_nodes(nodes: Any) -> None:
    """Room changes, alias changes and quits on node b are told to the room on node a."""
    a, b = nodes
    (alice,) = online(a, "alice")
    (bob,) = online(b, "bob")
    settled(alice)
    b.rename(bob, "robert")
    b.move(bob, "#rust")
    assert alice.text().splitlines() == [
        "Renamed(old='bob', new='robert')",
        "Departed(alias='robert', went_to='#rust')",
    ]
    settled(alice)
    a.move(alice, "#rust")
    settled(alice)
    b.leave(bob, "Quit: bye")
    assert alice.text() == "Left(alias='robert', reason='Quit: bye')"
    assert a.online() == ("alice",)
    online(a, "bob")  # the old alias is free again


def test_a_lost_node_takes_its_members_with_it(cluster: Any) -> None:
    """A gone item (a node reaped) announces each of its members as leaving."""
    a, b = cluster[0].hub, cluster[1].hub
    (alice,) = online(a, "alice")
    online(b, "bob", "carol")
    settled(alice)
    receive(
        cluster[0],
        "c",
        {"t": "gone", "node": "b", "aliases": ["bob", "carol"], "reason": "Timeout"},
    )
    assert alice.text().splitlines() == [
        "Left(alias='bob', reason='Timeout')",
        "Left(alias='carol', reason='Timeout')",
    ]
    assert a.online() == ("alice",)


def test_an_operator_kicks_a_member_of_another_node(nodes: Any) -> None:
    """The kick is carried out by the target's node, which tells the target and the room."""
    a, b = nodes
    (op,) = online(a, "op")
    bob, carol = online(b, "bob", "carol")
    moderation.make_operator(a, op, "root")
    settled(op, bob, carol)
    moderation.kick(a, op, "bob", "spam")
    assert bob.text() == "Notice(text='You were kicked by op: spam')"
    assert bob.disconnected == "kicked by operator root on node a"
    assert carol.text() == "Left(alias='bob', reason='Kicked by op: spam')"
    assert op.text().splitlines() == [
        "Left(alias='bob', reason='Kicked by op: spam')",
        "Notice(text='Kicked bob.')",
    ]


def test_bans_and_mutes_are_enforced_on_every_node(nodes: Any) -> None:
    """A ban set on node a disconnects a matching member of node b; a mute silences them."""
    a, b = nodes
    (op,) = online(a, "op")
    bob, mallory = online(b, "bob", "mallory")
    moderation.make_operator(a, op, "root")
    moderation.mute(a, op, "bob", None)
    settled(op, bob)
    b.say(bob, "can anyone hear me")
    assert op.text() == ""
    moderation.ban(a, op, "mallory", None, "abuse")
    assert mallory.disconnected == "banned by operator root on node a"
    assert b.banned(alias="mallory") is not None


def test_topics_and_history_are_shared(nodes: Any) -> None:
    """A topic set on a is known on b; lines said on a are in b's /history."""
    a, b = nodes
    (alice,) = online(a, "alice")
    (bob,) = online(b, "bob")
    a.set_topic(alice, "welcome")
    a.say(alice, "hello")
    settled(bob)
    b.show_topic(bob)
    b.show_history(bob, 5)
    lines = bob.text().splitlines()
    assert lines[0] == "Notice(text='Topic of #lobby: welcome')"
    assert "'hello'" in lines[1]


def test_while_the_link_is_down_local_members_still_hear_each_other(cluster: Any) -> None:
    """Link down: everyone here is told, lines still reach this node's members only."""
    a, b = cluster[0].hub, cluster[1].hub
    alice, dave = online(a, "alice", "dave")
    (bob,) = online(b, "bob")
    settled(alice, dave, bob)
    cluster[0].up = False
    cluster[0].bus.link_down()
    a.say(alice, "anyone?")
    assert f"Notice(text='{LINK_DOWN_NOTICE}')" in dave.text()
    assert "Said(sender='alice', text='anyone?')" in dave.text()
    assert bob.text() == ""


def test_reconcile_announces_who_came_and_who_went(cluster: Any) -> None:
    """A roster read after an outage adds the new, moves the moved and drops the missing."""
    a = cluster[0].hub
    (alice,) = online(a, "alice")
    receive(
        cluster[0], "b", {"t": "join", "alias": "bob", "node": "b", "room": "#lobby", "since": 0}
    )
    settled(alice)
    records = [{"alias": "carol", "node": "b", "room": "#lobby", "since": 0}]
    cluster[0].bus.reconcile(
        None, [PresenceRecord.from_json(r) for r in records], drop_missing=True
    )
    assert alice.text().splitlines() == [
        "Joined(alias='carol', room='#lobby', present=3, came_from=None)",
        "Left(alias='bob', reason='Lost in a netsplit')",
    ]


def test_news_of_a_stranger_from_the_wrong_node_is_ignored(cluster: Any) -> None:
    """Lines claiming to be from a member of another node than theirs are not delivered."""
    a, b = cluster[0].hub, cluster[1].hub
    (alice,) = online(a, "alice")
    online(b, "bob")
    settled(alice)
    receive(
        cluster[0], "c", {"t": "say", "alias": "bob", "room": "#lobby", "text": "forged", "at": 0}
    )
    assert alice.text() == ""
    with pytest.raises(UnknownMessage):
        receive(cluster[0], "b", {"t": "teleport"})


def test_a_room_open_on_another_node_keeps_its_name_here(nodes: Any) -> None:
    """Entering #rust here, when #Rust is in use on another node, enters #Rust."""
    a, b = nodes
    (alice,) = online(a, "alice")
    (bob,) = online(b, "bob")
    b.move(bob, "#Rust")
    a.move(alice, "#rust")
    assert a.room_of(alice) == "#Rust"


def test_losing_a_nick_race_gives_the_old_alias_back(cluster: Any) -> None:
    """If another node took the new alias in the same instant, the member keeps the old one."""
    a = cluster[0].hub
    (alice,) = online(a, "alice")
    cluster[0].cluster.claims["bob"] = "b"  # b's bob, not yet heard of here
    cluster[1].records["bob"] = PresenceRecord("bob", "b", "#lobby", 0)
    a.rename(alice, "bob")
    assert alice.alias == "alice"
    assert "taken on another server at the same moment; you are alice" in alice.text()
    assert a.online() == ("alice", "bob")


def test_the_owner_of_a_registered_alias_replaces_their_session_on_another_node(
    nodes: Any,
) -> None:
    """Logging in with the password on node a ends the owner's old session on node b."""
    a, b = nodes
    (old,) = online(b, "alice")
    (carol,) = online(a, "carol")
    settled(carol)
    new = RecordingMember(a)
    a.join(new, "alice", registered=True)
    assert old.disconnected == "ghost session replaced by a new login on another node"
    assert a.is_online(new)
    assert a.online() == b.online() == ("alice", "carol")
    assert "Left" not in carol.text()


def test_a_registration_is_told_to_every_node_even_if_its_maker_has_gone(nodes: Any) -> None:
    """/register then /quit before the hash is done: other nodes still ask for the password."""
    a, b = nodes
    a.accounts, b.accounts = Accounts(None, None), Accounts(None, None)  # type: ignore[arg-type]
    (alice,) = online(a, "alice")
    a.leave(alice, "Quit")
    a.mark_registered(alice, "alice")
    assert b.accounts.is_registered("ALICE")


def test_while_a_change_of_alias_is_unconfirmed_both_aliases_stay_the_members(
    cluster: Any,
) -> None:
    """Until the cluster answers a /nick, the member cannot /nick again and nobody here can
    take the old alias; if the answer is no, the member is back under the old one."""
    a = cluster[0].hub
    (alice,) = online(a, "alice")
    answer: Deferred[bool] = Deferred()
    cluster[0].rename = lambda old, record, message: answer
    a.rename(alice, "carol")
    with pytest.raises(AliasRefused, match="not confirmed yet"):
        a.rename(alice, "dave")
    with pytest.raises(AliasRefused, match="taken"):
        online(a, "alice")
    answer.callback(False)
    assert alice.alias == "alice"
    online(a, "dave")


def test_the_listeners_and_directories_provide_their_interfaces(cluster: Any) -> None:
    """The bus and the do-nothing listener are listeners; the roster and the empty
    directory are directories; a member of another node is a remote member."""
    node = cluster[0]
    verifyObject(IHubListener, node.bus)
    verifyObject(IHubListener, NoListener())
    verifyObject(IDirectory, node.roster)
    verifyObject(IDirectory, Nowhere())
    verifyObject(IRemoteMember, RemoteMember("bob", "b", "#lobby", 0.0, 0.0, None, False))


def test_a_hub_alone_listens_to_nobody_and_knows_nobody_elsewhere() -> None:
    """Without a cluster, the hub's listener does nothing and its directory is empty."""
    hub = Hub(Clock())
    assert isinstance(hub.listener, NoListener)
    assert isinstance(hub.directory, Nowhere)
    (alice,) = online(hub, "alice")
    hub.whisper(alice, "bob", "hi")
    assert "No such user: bob" in alice.text()


def test_news_of_a_member_of_this_node_from_elsewhere_is_ignored(cluster: Any) -> None:
    """A record naming this node, sent by another (or read back stale), adds nobody here:
    this node's members are in its hub, never in its roster."""
    node_a, _ = cluster
    (alice,) = online(node_a.hub, "alice")
    settled(alice)
    receive(node_a, "b", {"t": "join", "alias": "dave", "node": "a", "room": "#lobby", "since": 0})
    node_a.bus.reconcile(None, [PresenceRecord("erin", "a", "#lobby", 0.0)], drop_missing=False)
    assert node_a.hub.online() == ("alice",)
    assert len(node_a.roster) == 0
    assert alice.text() == ""


def test_a_move_into_the_room_a_remote_member_is_in_is_no_move(cluster: Any) -> None:
    """News of bob moving to the room he is in (in any case) announces nothing: a member
    here cannot do that, and their room would see him leave and come back."""
    node_a, node_b = cluster
    (alice,) = online(node_a.hub, "alice")
    online(node_b.hub, "bob")
    settled(alice)
    receive(node_a, "b", {"t": "move", "alias": "bob", "room": "#LOBBY"})
    assert alice.text() == ""
    assert list(node_a.roster.names_in("#lobby")) == ["bob"]
