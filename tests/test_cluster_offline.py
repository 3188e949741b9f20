"""What waits for a registered alias across a cluster: two nodes in one process, on the
real reactor and a real Redis (the fixtures of tests/test_cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from chatd.accounts import Accounts
from chatd.cluster.address import RedisAddress
from chatd.cluster.link import RedisLink
from chatd.cluster.node import Cluster
from chatd.events import Notice, OfflineMessage
from chatd.hub import Hub
from chatd.stores.redis import RedisStore
from tests.redisserver import RedisServer
from tests.test_accounts import FakePasswords
from tests.test_cluster import EventMember, members_events, redis, wait_until

__all__ = ["redis"]  # the fixture, used by name


@pytest_twisted.async_yield_fixture
async def nodes(redis: RedisServer) -> AsyncIterator[list[Hub]]:
    """Two nodes on one Redis, with accounts; "bob" is registered."""
    hubs = []
    closing = []
    for name in ("a", "b"):
        link = RedisLink(RedisAddress.from_url(redis.url))
        store = RedisStore(link, redis.url, flush_interval_seconds=0.05)
        cluster = Cluster(link, store, node=name, clock=reactor)
        accounts = Accounts(store, FakePasswords(), clock=reactor)
        hub = Hub(
            reactor,
            store=store,
            accounts=accounts,
            listener=cluster.bus,
            directory=cluster.roster,
        )
        cluster.attach(hub)
        await store.start()
        await cluster.start()
        if name == "a":
            await store.create_account("bob", "fake$correct-horse")
        await ensureDeferred(accounts.load())
        hubs.append(hub)
        closing.append((store, cluster))
    yield hubs
    for store, cluster in closing:
        await store.stop()
        await cluster.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_left_on_one_node_is_delivered_on_the_other(nodes: list[Hub]) -> None:
    """bob leaves from node a; alice on node b leaves him a message and mentions him in
    the room he left; at his login on node a he gets both, the mention kept once."""
    a_hub, b_hub = nodes
    bob, alice = EventMember(), EventMember()
    a_hub.join(bob, "bob", registered=True)
    b_hub.join(alice, "alice")
    await wait_until(lambda: "bob" in b_hub.online() and "alice" in a_hub.online())
    a_hub.leave(bob, "Quit")
    await wait_until(lambda: "bob" not in b_hub.online())
    b_hub.whisper(alice, "bob", "see you on the other side")
    b_hub.say(alice, "has anyone seen bob?")
    kept = "bob is offline: your message will wait for their next login (kept up to 30d00h)."
    await wait_until(lambda: Notice(kept) in alice.events)
    store = b_hub.store
    assert store is not None
    for _ in range(100):  # the mention is written on its way, not waited for
        if await store.mentions_of("bob", 0):
            break
        await deferLater(reactor, 0.05)

    again = EventMember()
    a_hub.join(again, "bob", registered=True)
    await wait_until(lambda: members_events(again, OfflineMessage))
    (message,) = members_events(again, OfflineMessage)
    assert (message.sender, message.text) == ("alice", "see you on the other side")
    told = "1 line mentioned you while you were away: /mentions shows them."
    await wait_until(lambda: Notice(told) in again.events)
    assert await store.waiting_messages("bob", 0) == []
    assert len(await store.mentions_of("bob", 0)) == 1


@pytest_twisted.ensureDeferred
async def test_an_away_member_hears_of_mentions_made_on_another_node(nodes: list[Hub]) -> None:
    """bob, away on node a, is told on coming back of the line that mentioned him on
    node b, kept once."""
    a_hub, b_hub = nodes
    bob, alice = EventMember(), EventMember()
    a_hub.join(bob, "bob", registered=True)
    b_hub.join(alice, "alice")
    await wait_until(lambda: "bob" in b_hub.online() and "alice" in a_hub.online())
    a_hub.set_away(bob, "lunch")
    b_hub.say(alice, "bob: ping")
    store = a_hub.store
    assert store is not None
    for _ in range(100):
        if await store.mentions_of("bob", 0):
            break
        await deferLater(reactor, 0.05)
    a_hub.set_away(bob, None)
    told = "1 line mentioned you while you were away: /mentions shows them."
    await wait_until(lambda: Notice(told) in bob.events)
    assert len(await store.mentions_of("bob", 0)) == 1
