"""What only the Redis store does, against a real redis-server on a loopback port.

What every store promises is tested against this one too, in tests/test_stores.py;
here: rooms keyed in any case, batches and chunked reads, retention by Redis' own
clock, the layout of the keys, the URL in the log, what happens when Redis goes
away and comes back, and several nodes sharing one Redis.

Each test gets its own server (no persistence, a free port) and talks to it over
txredisapi, through :class:`~tests.storetesting.TxRedisLink`, which never
reconnects by itself. Most tests pass a ``task.Clock`` so that no flush happens
unless the test asks for it; Redis itself is checked with raw commands on the
same link, as another process would see it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs

from chatd.interfaces import HISTORY_ROOMS_AT_START
from chatd.model import Account, Ban, HistoryEntry
from chatd.stores import redis as redis_store
from chatd.stores.redis import RedisStore
from tests.redisserver import RedisServer
from tests.storetesting import INTERVAL, TxRedisLink, in_redis, messages, texts, wait_until


class AnswerLosingLink:
    """A link whose next EVAL runs in Redis but whose answer is lost, as when a link dies."""

    def __init__(self, link: TxRedisLink) -> None:
        self._link = link
        self.lose_next_eval_answer = False

    async def _run_then_fail(self, args: tuple[str | bytes | int | float, ...]) -> Any:
        await self._link.execute(*args)
        raise txredisapi.ConnectionError("Lost connection")

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        if args[0] == "EVAL" and self.lose_next_eval_answer:
            self.lose_next_eval_answer = False
            return Deferred.fromCoroutine(self._run_then_fail(args))
        return self._link.execute(*args)


class CountingLink:
    """A link that counts the commands it runs, by name."""

    def __init__(self, link: TxRedisLink) -> None:
        self._link = link
        self.counts: Counter[str] = Counter()

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        self.counts[str(args[0])] += 1
        return self._link.execute(*args)


class InstantLink:
    """A Redis that takes every history script at once and keeps only the lines' texts."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        assert args[0] == "EVAL"
        keys = int(args[2])
        lines = json.loads(args[3 + keys + 4])
        self.texts += [text for _, _, _, _, text, _ in lines]
        return succeed(len(lines))


def line(text: str, room: str = "#lobby", at: float = 0.0, kind: str = "say") -> HistoryEntry:
    return HistoryEntry(room=room, kind=kind, alias="alice", text=text, at=at)


def make_store(link: Any, server: RedisServer, **options: Any) -> RedisStore:
    """A started store; by default on a Clock nobody advances, so only flush() writes."""
    options.setdefault("clock", Clock())
    options.setdefault("flush_interval_seconds", INTERVAL)
    store = RedisStore(link, server.url, **options)
    store.start()
    return store


# Fixtures.


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest_twisted.async_yield_fixture
async def link(server: RedisServer) -> AsyncIterator[TxRedisLink]:
    link = TxRedisLink(server.port)
    await link.connect()
    yield link
    await link.disconnect()


@pytest.fixture
def store(link: TxRedisLink, server: RedisServer) -> RedisStore:
    return make_store(link, server)


# History.


@pytest_twisted.ensureDeferred
async def test_rooms_differing_in_case_share_one_history(store: RedisStore) -> None:
    """#Lobby and #lobby are one room, as in the hub; each line keeps the name it was said in."""
    store.append_history(line("one", room="#Lobby"))
    await store.flush()
    store.append_history(line("two", room="#lobby"))
    assert [(e.room, e.text) for e in await store.recent_history("#LOBBY", 5)] == [
        ("#Lobby", "one"),
        ("#lobby", "two"),
    ]


@pytest_twisted.ensureDeferred
async def test_unflushed_lines_are_read_once_and_only_here(
    store: RedisStore, link: TxRedisLink, server: RedisServer
) -> None:
    """Lines not yet sent are in this store's answers (once, after the flush too), not in Redis."""
    other = make_store(link, server)
    store.append_history(line("one"))
    await store.flush()
    store.append_history(line("two"))
    assert texts(await store.recent_history("#lobby", 5)) == ["one", "two"]
    assert texts(await other.recent_history("#lobby", 5)) == ["one"]
    assert await in_redis(link) == ["one"]
    await store.flush()
    assert texts(await store.recent_history("#lobby", 5)) == ["one", "two"]
    assert texts(await other.recent_history("#lobby", 5)) == ["one", "two"]


@pytest_twisted.ensureDeferred
async def test_a_backlog_goes_in_batches_in_order(
    store: RedisStore, link: TxRedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More lines than a batch holds are written in several scripts, keeping their order."""
    monkeypatch.setattr(redis_store, "MAX_BATCH_ENTRIES", 2)
    for n in range(5):
        store.append_history(line(str(n)))
    await store.flush()
    assert await in_redis(link) == ["0", "1", "2", "3", "4"]
    assert store.batches_written == 3


@pytest_twisted.ensureDeferred
async def test_recent_history_before_reads_back_in_chunks(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``before``, only strictly older lines, reading back as many chunks as it takes."""
    monkeypatch.setattr(redis_store, "READ_CHUNK_ENTRIES", 2)
    for at in range(10):
        store.append_history(line(f"at {at}", at=float(at)))
    await store.flush()
    store.append_history(line("unflushed", at=2.5))
    assert texts(await store.recent_history("#lobby", 2, before=4.0)) == ["at 3", "unflushed"]
    assert texts(await store.recent_history("#lobby", 3, before=2.0)) == ["at 0", "at 1"]


@pytest_twisted.ensureDeferred
async def test_start_up_read_is_bounded_however_many_rooms_have_history(
    link: TxRedisLink, server: RedisServer
) -> None:
    """With 20,000 rooms in Redis, the start-up read reads only the newest 100 streams."""
    counting = CountingLink(link)
    store = make_store(counting, server)
    for n in range(20_000):
        store.append_history(line(f"line {n}", room=f"#junk{n}"))
    await store.flush()
    await deferLater(reactor, 0.01, lambda: None)  # a later millisecond of Redis' clock
    store.append_history(line("late", room="#late"))
    await store.flush()
    counting.counts.clear()
    by_room = await store.recent_history_by_room(5)
    assert len(by_room) == HISTORY_ROOMS_AT_START
    assert texts(by_room["#late"]) == ["late"]
    assert counting.counts["XREVRANGE"] == HISTORY_ROOMS_AT_START
    assert len(await store.recent_history_by_room(5, 3)) == 3


@pytest_twisted.ensureDeferred
async def test_the_room_set_of_an_older_chatd_is_ranked_once(
    store: RedisStore, link: TxRedisLink
) -> None:
    """Rooms listed in the old unordered set are ranked by their newest line, and it goes."""
    for room, stream_id in (("#old", "1000-0"), ("#mid", "2000-0"), ("#newer", "3000-0")):
        await link.execute(
            "XADD", f"chatd:history:{room}", stream_id, "room", room, "kind", "say",
            "alias", "a", "text", room, "at", "1.0",
        )  # fmt: skip
    await link.execute("SADD", "chatd:history-rooms", "#old", "#mid", "#newer", "#gone")
    by_room = await store.recent_history_by_room(5, 2)
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#newer": ["#newer"],
        "#mid": ["#mid"],
    }
    assert await link.execute("EXISTS", "chatd:history-rooms") == 0
    assert await link.execute("ZRANGE", "chatd:history-recent", 0, -1, "WITHSCORES") == [
        "#old", "1000", "#mid", "2000", "#newer", "3000",
    ]  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_retention_by_count(link: TxRedisLink, server: RedisServer) -> None:
    """A room's stream is capped near ``history_per_room`` (Redis trims whole nodes)."""
    store = make_store(link, server, history_per_room=10)
    for n in range(500):
        store.append_history(line(str(n)))
    await store.flush()
    # "MAXLEN ~" leaves at most one stream node (100 entries by default) over the cap.
    assert 10 <= await link.execute("XLEN", "chatd:history:#lobby") <= 110
    assert texts(await store.recent_history("#lobby", 10)) == [str(n) for n in range(490, 500)]


@pytest_twisted.ensureDeferred
async def test_retention_by_age(link: TxRedisLink, server: RedisServer) -> None:
    """Lines past the age are never returned; a stream expires that long after its last write."""
    clock = Clock()
    clock.advance(1000)
    store = make_store(link, server, clock=clock, history_max_age_seconds=60)
    store.append_history(line("too old", at=930.0))
    store.append_history(line("recent", at=990.0))
    assert texts(await store.recent_history("#lobby", 5)) == ["recent"]
    await store.flush()
    assert await in_redis(link) == ["too old", "recent"]  # trimmed by Redis time, not by ``at``
    assert texts(await store.recent_history("#lobby", 5)) == ["recent"]
    assert texts((await store.recent_history_by_room(5))["#lobby"]) == ["recent"]
    assert 0 < await link.execute("PTTL", "chatd:history:#lobby") <= 60_000
    clock.advance(100)
    assert await store.recent_history("#lobby", 5) == []
    assert await store.recent_history_by_room(5) == {}


@pytest_twisted.ensureDeferred
async def test_expired_rooms_are_forgotten(link: TxRedisLink, server: RedisServer) -> None:
    """Once a room's stream has expired, the room leaves the set of rooms with history."""
    store = make_store(link, server, history_max_age_seconds=0.05)
    store.append_history(line("brief"))
    await store.flush()
    assert await link.execute("ZRANGE", "chatd:history-recent", 0, -1) == ["#lobby"]

    async def expired() -> bool:
        return not await link.execute("EXISTS", "chatd:history:#lobby")

    await wait_until(expired)
    assert await store.recent_history_by_room(5) == {}
    assert await link.execute("ZRANGE", "chatd:history-recent", 0, -1) == []


# History: when Redis is away.


@pytest_twisted.ensureDeferred
async def test_lines_said_during_an_outage_reach_redis_when_it_returns(
    link: TxRedisLink, server: RedisServer
) -> None:
    """Redis down: lines keep buffering, other calls fail at once; back up: the lines arrive."""
    store = make_store(link, server, clock=reactor, flush_interval_seconds=0.01)
    store.append_history(line("before"))
    await store.flush()
    server.stop()
    with capturedLogs() as events:
        store.append_history(line("during 1"))
        store.append_history(line("during 2"))
        with pytest.raises(txredisapi.ConnectionError):
            await store.get_account("alice")
        with pytest.raises(txredisapi.ConnectionError):
            await store.flush()
        with pytest.raises(txredisapi.ConnectionError):
            await store.recent_history("#lobby", 5)
        server.start()  # an unpersisted Redis comes back empty
        await link.connect()

        async def arrived() -> bool:
            return await in_redis(link) == ["during 1", "during 2"]

        await wait_until(arrived)
    errors = messages(events, LogLevel.error)
    assert errors and all("could not write 2 history entries" in error for error in errors)
    assert any("work again" in info for info in messages(events, LogLevel.info))
    assert await store.create_account("alice", "hash") is True
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_a_lost_answer_does_not_write_a_batch_twice(
    link: TxRedisLink, server: RedisServer
) -> None:
    """A batch that reached Redis though its answer was lost is retried, and kept once."""
    losing = AnswerLosingLink(link)
    store = make_store(losing, server)
    store.append_history(line("one"))
    store.append_history(line("two"))
    losing.lose_next_eval_answer = True
    with capturedLogs(), pytest.raises(txredisapi.ConnectionError):
        await store.flush()
    assert await in_redis(link) == ["one", "two"]
    assert texts(await store.recent_history("#lobby", 5)) == ["one", "two"]
    store.append_history(line("three"))
    await store.flush()
    assert await in_redis(link) == ["one", "two", "three"]


def test_a_fast_burst_loses_no_line() -> None:
    """200,000 lines appended at once all reach a Redis that keeps up, in order, though
    the flush timer never fires: a backlog is written at once, not left to overflow."""
    link = InstantLink()
    store = RedisStore(link, "redis://127.0.0.1:1/0", clock=Clock())
    store.start()
    with capturedLogs() as events:
        for n in range(200_000):
            store.append_history(line(str(n)))
        store.flush()
    assert messages(events, LogLevel.error) == []
    assert link.texts == [str(n) for n in range(200_000)]


# Life cycle and the log.


@pytest_twisted.ensureDeferred
async def test_stop_called_again_while_stopping_waits_for_the_write(
    store: RedisStore, link: TxRedisLink
) -> None:
    """A second stop() during the first fires only once the pending lines are in Redis."""
    store.append_history(line("last"))
    first, second = store.stop(), store.stop()
    assert not second.called
    await gatherResults([first, second])
    assert await in_redis(link) == ["last"]


def test_the_logged_url_has_no_password() -> None:
    """``location``, which the service logs, is the URL without its password."""
    store = RedisStore(TxRedisLink(0), "redis://:s3cret@redis.example:6379/0", clock=Clock())
    assert store.location == "redis://:***@redis.example:6379/0"
    plain = RedisStore(TxRedisLink(0), "redis://127.0.0.1:6379/0", clock=Clock())
    assert plain.location == "redis://127.0.0.1:6379/0"


# Topics, in any case of the room.


@pytest_twisted.ensureDeferred
async def test_topics_are_kept_per_room_in_any_case(store: RedisStore) -> None:
    """Topics are set, replaced (in any case of the room) and cleared; named as last set."""
    await store.set_topic("#lobby", "Chat", "alice")
    await store.set_topic("#dev", "Code", "bob")
    await store.set_topic("#Lobby", "Talk", "carol")
    assert await store.topics() == {"#Lobby": "Talk", "#dev": "Code"}
    await store.set_topic("#DEV", None, "bob")
    assert await store.topics() == {"#Lobby": "Talk"}


# Sharing one Redis.


@pytest_twisted.ensureDeferred
async def test_two_stores_on_one_redis_share_everything(
    link: TxRedisLink, server: RedisServer
) -> None:
    """What one node keeps, another node reads: history, accounts, keys, bans, settings, topics."""
    first, second = make_store(link, server), make_store(link, server)
    first.append_history(line("from the first"))
    second.append_history(line("from the second"))
    await first.flush()
    await second.flush()
    await first.create_account("alice", "h")
    await first.set_ignores("alice", ["bob"])
    await first.add_ssh_key("alice", "SHA256:k", "ssh-ed25519 AAAA")
    await first.add_ban(Ban("carol", "alias", "", "op", 1.0, None))
    await first.set_setting("motd", "Hi")
    await first.set_topic("#lobby", "Chat", "alice")
    assert texts(await second.recent_history("#lobby", 5)) == ["from the first", "from the second"]
    assert texts(await first.recent_history("#lobby", 5)) == ["from the first", "from the second"]
    assert await second.registered_keys() == {"alice"}
    assert await second.get_account("ALICE") == Account("alice", "h", 0.0, ("bob",))
    assert await second.ssh_keys("alice") == [("SHA256:k", "ssh-ed25519 AAAA")]
    assert await second.create_account("Alice", "mine") is False
    assert await second.active_bans(now=5) == [Ban("carol", "alias", "", "op", 1.0, None)]
    assert await second.get_setting("motd") == "Hi"
    assert await second.topics() == {"#lobby": "Chat"}


@pytest_twisted.ensureDeferred
async def test_one_of_two_racing_registrations_wins(
    link: TxRedisLink, server: RedisServer
) -> None:
    """Two nodes registering one alias at the same moment: exactly one succeeds."""
    first, second = make_store(link, server), make_store(link, server)
    results = await gatherResults(
        [first.create_account("Dave", "one"), second.create_account("dave", "two")]
    )
    assert sorted(results) == [False, True]
    assert await first.registered_keys() == {"dave"}


@pytest_twisted.ensureDeferred
async def test_prefixes_keep_installations_apart(link: TxRedisLink, server: RedisServer) -> None:
    """Stores with different prefixes share a Redis without seeing each other's data."""
    ours = make_store(link, server, prefix="a:")
    theirs = make_store(link, server, prefix="b:")
    await ours.create_account("alice", "h")
    await ours.set_setting("motd", "ours")
    assert await theirs.registered_keys() == set()
    assert await theirs.get_setting("motd") is None


@pytest_twisted.ensureDeferred
async def test_the_redis_layout(store: RedisStore, link: TxRedisLink) -> None:
    """The keys are those the module documents, so other tools can rely on them."""
    store.append_history(line("hi", room="#Lobby"))
    await store.flush()
    await store.create_account("Alice", "h")
    await store.add_ssh_key("alice", "SHA256:k", "ssh-ed25519 AAAA")
    await store.add_ban(Ban("carol", "alias", "", "op", 1.0, None))
    await store.set_setting("motd", "Hi")
    await store.set_topic("#Lobby", "Chat", "alice")
    keys = set(await link.execute("KEYS", "chatd:*"))
    (writer,) = {key for key in keys if key.startswith("chatd:history-writer:")}
    assert keys - {writer} == {
        "chatd:history:#lobby",
        "chatd:history-recent",
        "chatd:account:alice",
        "chatd:accounts",
        "chatd:sshkeys:alice",
        "chatd:bans",
        "chatd:settings",
        "chatd:topics",
    }
    assert await link.execute("GET", writer) == "1"
    assert 0 < await link.execute("TTL", writer) <= redis_store.WRITER_TTL_SECONDS
