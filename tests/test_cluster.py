"""Tests for chatd.cluster.node: nodes in one process, on the real reactor and a real Redis.

What only Redis can prove is tested here: that two claims of one alias in the
same instant leave exactly one owner, and that a node taken for dead is reaped
and then comes back by itself. The rest of the cluster's behaviour is tested
with an in-memory node (tests/test_cluster_bus.py) and with real twistd nodes
(tests/integration/test_cluster.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.task import deferLater

from chatd.cluster.address import RedisAddress
from chatd.cluster.link import RedisLink
from chatd.cluster.node import NODE_TTL_SECONDS, Cluster
from chatd.events import Event, History, Joined, Left, Said
from chatd.hub import Hub
from chatd.stores.redis import RedisStore
from tests.redisserver import RedisServer

WAIT_SECONDS = 10.0


class EventMember:
    """A member that keeps the events it was sent."""

    host = "127.0.0.1"
    peer = "127.0.0.1:1"

    def __init__(self) -> None:
        self.alias: str | None = None
        self.events: list[Event] = []
        self.disconnected: str | None = None
        self.encode = self._encode

    def _encode(self, event: Event) -> bytes:
        self.events.append(event)
        return b""

    def send(self, data: bytes) -> None:
        """Events are kept by encode; the bytes are nothing."""

    def disconnect(self, reason: str) -> None:
        self.disconnected = reason


async def wait_until(condition: Callable[[], object], seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await deferLater(reactor, 0.05)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest_twisted.async_yield_fixture
async def nodes(redis: RedisServer) -> AsyncIterator[list[tuple[Hub, Cluster]]]:
    started = []
    stores = []
    for name in ("a", "b"):
        link = RedisLink(RedisAddress.from_url(redis.url))
        store = RedisStore(link, redis.url, flush_interval_seconds=0.05)
        cluster = Cluster(link, store, node=name, clock=reactor)
        hub = Hub(reactor, store=store, listener=cluster.bus, directory=cluster.roster)
        cluster.attach(hub)
        await store.start()
        await cluster.start()
        started.append((hub, cluster))
        stores.append(store)
    yield started
    for store, (_, cluster) in zip(stores, started, strict=True):
        await store.stop()
        await cluster.stop()


def members_events(member: EventMember, kind: type) -> list[Event]:
    return [event for event in member.events if isinstance(event, kind)]


@pytest_twisted.ensureDeferred
async def test_two_claims_of_one_alias_at_once_leave_one_owner(nodes) -> None:
    """Both nodes let a newcomer take 'alice' in the same instant: Redis keeps exactly one."""
    (a_hub, _), (b_hub, _) = nodes
    on_a, on_b = EventMember(), EventMember()
    a_hub.join(on_a, "alice")
    b_hub.join(on_b, "ALICE")  # neither node has heard of the other's alice yet
    await wait_until(lambda: on_a.disconnected or on_b.disconnected)
    await deferLater(reactor, 0.3)
    loser, winner, winner_hub = (on_a, on_b, b_hub) if on_a.disconnected else (on_b, on_a, a_hub)
    assert winner.disconnected is None
    assert loser.disconnected == "alias taken on another node"
    assert a_hub.online() == b_hub.online() == (winner.alias,)
    assert winner_hub.is_online(winner)


@pytest_twisted.ensureDeferred
async def test_a_node_taken_for_dead_is_reaped_then_rejoins(nodes) -> None:
    """A node silent past its heartbeat TTL is reaped (its users leave elsewhere), then rejoins."""
    (a_hub, a), (b_hub, _) = nodes
    alice, bob = EventMember(), EventMember()
    a_hub.join(alice, "alice")
    b_hub.join(bob, "bob")
    await wait_until(lambda: "alice" in b_hub.online() and "bob" in a_hub.online())
    a._heartbeat.stop()  # a freezes, as far as the cluster can tell
    await wait_until(lambda: members_events(bob, Left), NODE_TTL_SECONDS + 5)
    assert members_events(bob, Left) == [Left("alice", "Their server stopped answering")]
    assert b_hub.online() == ("bob",)
    bob.events.clear()
    a._heartbeat.start(1.0, now=True)  # a wakes up, finds itself reaped, and rejoins
    await wait_until(lambda: members_events(bob, Joined))
    assert members_events(bob, Joined) == [Joined("alice", "#lobby", 2, None)]
    assert a_hub.online() == b_hub.online() == ("alice", "bob")


async def kill_connections_of(redis: RedisServer, node: str) -> None:
    """Cut a node's connections from the Redis side, as a network fault would."""
    admin = await txredisapi.Connection(
        "127.0.0.1", redis.port, dbid=0, reconnect=False, convertNumbers=False
    )
    try:
        clients = await admin.execute_command("CLIENT", "LIST")
        for line in clients.splitlines():
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            if fields.get("name", "").startswith(f"chatd:{node}:"):
                await admin.execute_command("CLIENT", "KILL", "ID", fields["id"])
    finally:
        await admin.disconnect()


@pytest_twisted.ensureDeferred
async def test_after_a_link_outage_a_node_catches_up_both_ways(nodes, redis) -> None:
    """Whoever left a node while its link was down is gone elsewhere afterwards (and the
    alias free); what other nodes said meanwhile is in its history."""
    (a_hub, a), (b_hub, _) = nodes
    alice, bob, carol = EventMember(), EventMember(), EventMember()
    a_hub.join(alice, "alice")
    a_hub.join(carol, "carol")
    b_hub.join(bob, "bob")
    await wait_until(lambda: len(b_hub.online()) == 3 and len(a_hub.online()) == 3)
    await kill_connections_of(redis, "a")
    await wait_until(lambda: not a.up)
    a_hub.leave(carol, "Quit: bye")  # only a knows
    b_hub.say(bob, "said while a was away")
    await deferLater(reactor, 0.2)  # written to Redis by b's store
    await wait_until(lambda: a.up)
    await wait_until(lambda: "carol" not in b_hub.online())
    assert members_events(bob, Left) == [Left("carol", "Lost in a netsplit")]
    assert a_hub.online() == b_hub.online() == ("alice", "bob")
    newcomer = EventMember()
    b_hub.join(newcomer, "carol")
    await deferLater(reactor, 0.3)
    assert newcomer.disconnected is None
    a_hub.show_history(alice, 5)
    history = [event for event in alice.events if isinstance(event, History)][-1]
    assert [entry.text for entry in history.entries] == ["said while a was away"]


async def admin_command(redis: RedisServer, *args: str) -> Any:
    """Run one command on Redis as an administrator would, on a connection of its own."""
    admin = await txredisapi.Connection(
        "127.0.0.1", redis.port, dbid=0, reconnect=False, convertNumbers=False
    )
    try:
        return await admin.execute_command(*args)
    finally:
        await admin.disconnect()


@pytest_twisted.ensureDeferred
async def test_unreadable_messages_are_dropped_and_the_next_ones_heard(nodes, redis) -> None:
    """Garbage on the channel (not JSON, wrong shapes, not UTF-8) costs nothing but itself."""
    (a_hub, a), (b_hub, _) = nodes
    alice, bob = EventMember(), EventMember()
    a_hub.join(alice, "alice")
    b_hub.join(bob, "bob")
    await wait_until(lambda: "bob" in a_hub.online())
    for garbage in ('{"n":"x","m":null}', '{"n":"x","m":[7, null]}', "not json", "\\xff\\xfe"):
        await admin_command(redis, "PUBLISH", a.channel, garbage)
    await admin_command(redis, "PUBLISH", a.channel, b"\xff\xfe{")  # not UTF-8
    b_hub.say(bob, "still heard")
    await wait_until(lambda: any(isinstance(e, Said) for e in alice.events))
    assert [e for e in alice.events if isinstance(e, Said)] == [Said("bob", "still heard")]
    assert a.up


@pytest_twisted.ensureDeferred
async def test_a_resync_refused_by_redis_is_retried(nodes, redis) -> None:
    """Redis refusing writes (out of memory) during a reconnection delays the resync, no more."""
    (a_hub, a), (b_hub, _) = nodes
    await admin_command(redis, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    await admin_command(redis, "CONFIG", "SET", "maxmemory", "1")
    try:
        await kill_connections_of(redis, "a")
        await wait_until(lambda: not a.up)
        await deferLater(reactor, 1.5)  # reconnected, resync refused at least once
        assert not a.up
    finally:
        await admin_command(redis, "CONFIG", "SET", "maxmemory", "0")
    await wait_until(lambda: a.up)
    alice = EventMember()
    a_hub.join(alice, "alice")
    await wait_until(lambda: "alice" in b_hub.online())


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_retried_until_it_is_right(redis) -> None:
    """Redis refusing the password does not end the link: it connects once Redis agrees."""
    await admin_command(redis, "CONFIG", "SET", "requirepass", "other")
    link = RedisLink(RedisAddress.from_url(f"redis://:secret@127.0.0.1:{redis.port}/0"))
    link.channels = ["chatd:test"]
    link.start()
    try:
        await deferLater(reactor, 1.0)
        assert not link.up
        admin = await txredisapi.Connection(
            "127.0.0.1", redis.port, dbid=0, password="other", reconnect=False
        )
        await admin.execute_command("CONFIG", "SET", "requirepass", "secret")
        await admin.disconnect()
        await wait_until(lambda: link.up)
    finally:
        await link.stop()


@pytest_twisted.ensureDeferred
async def test_the_owner_of_a_registered_alias_takes_it_from_a_session_elsewhere(nodes) -> None:
    """A verified login of a registered alias ends the owner's old session on another node."""
    (a_hub, _), (b_hub, _) = nodes
    old, new = EventMember(), EventMember()
    b_hub.join(old, "alice")
    await wait_until(lambda: "alice" in a_hub.online())
    a_hub.join(new, "alice", registered=True)
    await wait_until(lambda: old.disconnected)
    assert old.disconnected == "ghost session replaced by a new login on another node"
    await deferLater(reactor, 0.3)
    assert a_hub.is_online(new)
    assert a_hub.online() == b_hub.online() == ("alice",)
