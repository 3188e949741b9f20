"""Tests for chatd.redisstore against a real redis-server on a loopback port.

Each test gets its own server (no persistence, a free port) and talks to it over
txredisapi, through :class:`TxRedisLink`: the :class:`~chatd.redisstore.RedisCommands`
a chatd link would give, minus reconnection, so "Redis is down" means exactly
that until the test reconnects. Most tests pass a ``task.Clock`` so that no
flush happens unless the test asks for it; Redis itself is checked with raw
commands on the same link, as another process would see it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent

from chatd import redisstore
from chatd.model import Account, Ban, HistoryEntry
from chatd.redisstore import RedisStore
from chatd.store import (
    HISTORY_ROOMS_AT_START,
    MIN_PENDING_BYTES,
    PENDING_ENTRY_OVERHEAD_BYTES,
    NoSuchAccount,
    StoreClosed,
    StoreError,
    StoreNotStarted,
)
from tests.redisserver import RedisServer

INTERVAL = 0.5
WAIT_SECONDS = 5.0


class TxRedisLink:
    """``execute`` over one txredisapi connection that never reconnects by itself."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._handler: Any = None

    async def connect(self) -> None:
        """Connect (again, after a restart of the server)."""
        await self.disconnect()
        self._handler = await txredisapi.Connection(
            "127.0.0.1", self.port, dbid=0, reconnect=False, convertNumbers=False
        )

    async def disconnect(self) -> None:
        if self._handler is not None:
            handler, self._handler = self._handler, None
            await handler.disconnect()

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        if self._handler is None:
            return fail(txredisapi.ConnectionError("Not connected"))
        reply: Deferred[Any] = self._handler.execute_command(*args)
        return reply


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


# Helpers.


def line(text: str, room: str = "#lobby", at: float = 0.0, kind: str = "say") -> HistoryEntry:
    return HistoryEntry(room=room, kind=kind, alias="alice", text=text, at=at)


def texts(entries: Sequence[HistoryEntry]) -> list[str]:
    return [entry.text for entry in entries]


def messages(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    return [formatEvent(event) for event in events if event.get("log_level") is level]


def make_store(link: Any, server: RedisServer, **options: Any) -> RedisStore:
    """A started store; by default on a Clock nobody advances, so only flush() writes."""
    options.setdefault("clock", Clock())
    options.setdefault("flush_interval_seconds", INTERVAL)
    store = RedisStore(link, server.url, **options)
    store.start()
    return store


async def in_redis(link: TxRedisLink, room: str = "#lobby") -> list[str]:
    """The text of every line of ``room``'s stream, oldest first, read straight from Redis."""
    entries = await link.execute("XRANGE", f"chatd:history:{room.lower()}", "-", "+")
    return [dict(zip(fields[::2], fields[1::2], strict=True))["text"] for _, fields in entries]


async def wait_until(condition: Callable[[], Any]) -> None:
    """Poll the async ``condition`` on the real reactor until it holds, or fail after a while."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await deferLater(reactor, 0.01, lambda: None)


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


# History: writing and reading.


@pytest_twisted.ensureDeferred
async def test_history_round_trip_in_order(store: RedisStore, link: TxRedisLink) -> None:
    """Lines come back exactly as appended (kind, unicode, float times), oldest first, per room."""
    entries = [
        HistoryEntry("#lobby", "say", "alice", "hello", 1700000000.1234567),
        HistoryEntry("#lobby", "act", "bob", "waves ☺", 1700000001.5),
        HistoryEntry("#other", "say", "carol", "elsewhere", 1700000002.0),
        HistoryEntry("#lobby", "say", "alice", "", 1700000003.25),
    ]
    for entry in entries:
        store.append_history(entry)
    await store.flush()
    assert await in_redis(link) == ["hello", "waves ☺", ""]
    assert await store.recent_history("#lobby", 10) == [entries[0], entries[1], entries[3]]
    assert await store.recent_history("#lobby", 2) == [entries[1], entries[3]]
    assert await store.recent_history("#other", 10) == [entries[2]]
    assert await store.recent_history("#nowhere", 10) == []
    assert await store.recent_history("#lobby", 0) == []


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


def test_entries_of_unknown_kind_are_refused(store: RedisStore) -> None:
    """Only "say" and "act" lines enter the store."""
    with pytest.raises(ValueError, match="kind"):
        store.append_history(line("x", kind="shout"))


@pytest.mark.parametrize(
    "options",
    [
        {"flush_interval_seconds": 0},
        {"history_per_room": 0},
        {"history_max_age_seconds": 0},
        {"max_pending_entries": 0},
        {"max_pending_bytes": 1000},
    ],
)
def test_nonsense_limits_are_refused(options: dict[str, Any]) -> None:
    """Settings that would never write, or keep nothing, are refused at construction."""
    with pytest.raises(ValueError):
        RedisStore(TxRedisLink(0), "redis://127.0.0.1:1/0", clock=Clock(), **options)


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
async def test_the_timer_writes_one_batch_after_the_interval(
    link: TxRedisLink, server: RedisServer
) -> None:
    """Nothing is sent before the interval; then every buffered line goes in one script."""
    clock = Clock()
    store = make_store(link, server, clock=clock)
    for text in ("a", "b", "c"):
        store.append_history(line(text))
    clock.advance(INTERVAL - 0.01)
    assert await in_redis(link) == []
    clock.advance(0.01)

    async def written() -> bool:
        return await in_redis(link) == ["a", "b", "c"]

    await wait_until(written)
    assert store.batches_written == 1
    assert store.write_seconds > 0
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_backlog_goes_in_batches_in_order(
    store: RedisStore, link: TxRedisLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More lines than a batch holds are written in several scripts, keeping their order."""
    monkeypatch.setattr(redisstore, "MAX_BATCH_ENTRIES", 2)
    for n in range(5):
        store.append_history(line(str(n)))
    await store.flush()
    assert await in_redis(link) == ["0", "1", "2", "3", "4"]
    assert store.batches_written == 3


@pytest_twisted.ensureDeferred
async def test_recent_history_before(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``before``, only strictly older lines, reading back as many chunks as it takes."""
    monkeypatch.setattr(redisstore, "READ_CHUNK_ENTRIES", 2)
    for at in range(10):
        store.append_history(line(f"at {at}", at=float(at)))
    await store.flush()
    store.append_history(line("unflushed", at=2.5))
    assert texts(await store.recent_history("#lobby", 2, before=4.0)) == ["at 3", "unflushed"]
    assert texts(await store.recent_history("#lobby", 3, before=2.0)) == ["at 0", "at 1"]


@pytest_twisted.ensureDeferred
async def test_recent_history_by_room(
    store: RedisStore, server: RedisServer, link: TxRedisLink
) -> None:
    """The newest lines of every room with history, written or not, named as said."""
    for n in range(3):
        store.append_history(line(f"lobby {n}"))
    store.append_history(line("other 0", room="#Other"))
    await store.flush()
    store.append_history(line("lobby 3"))
    store.append_history(line("new 0", room="#new"))
    by_room = await store.recent_history_by_room(2)
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#lobby": ["lobby 2", "lobby 3"],
        "#Other": ["other 0"],
        "#new": ["new 0"],
    }
    assert await store.recent_history_by_room(0) == {}
    other = make_store(link, server)
    assert set(await other.recent_history_by_room(5)) == {"#lobby", "#Other"}


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
async def test_rooms_with_unsent_lines_rank_first(store: RedisStore) -> None:
    """The most recently active rooms count lines not yet in Redis, with their stored lines."""
    for room in ("#a", "#b", "#c"):
        store.append_history(line(f"{room} 0", room=room))
        await store.flush()
        await deferLater(reactor, 0.01, lambda: None)
    store.append_history(line("#a 1", room="#a"))
    by_room = await store.recent_history_by_room(5, 2)
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#a": ["#a 0", "#a 1"],
        "#c": ["#c 0"],
    }


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


@pytest_twisted.ensureDeferred
async def test_buffer_cap_drops_oldest_and_logs(link: TxRedisLink, server: RedisServer) -> None:
    """Past ``max_pending_entries`` held lines the oldest go (a failed batch's first), logged."""
    clock = Clock()
    store = make_store(link, server, clock=clock, max_pending_entries=3)
    server.stop()
    with capturedLogs() as events:
        store.append_history(line("a"))
        store.append_history(line("b"))
        with pytest.raises(txredisapi.ConnectionError):
            await store.flush()
        for text in ("c", "d", "e"):
            store.append_history(line(text))
        server.start()
        await link.connect()
        assert texts(await store.recent_history("#lobby", 10)) == ["c", "d", "e"]
        await store.flush()
    assert any("2 oldest entries dropped" in error for error in messages(events, LogLevel.error))
    assert await in_redis(link) == ["c", "d", "e"]


@pytest_twisted.ensureDeferred
async def test_buffer_is_capped_in_bytes(link: TxRedisLink, server: RedisServer) -> None:
    """Long lines held during an outage are capped by ``max_pending_bytes`` (UTF-8 bytes)."""
    store = make_store(link, server, max_pending_bytes=MIN_PENDING_BYTES)
    server.stop()
    long_line = "\N{GRINNING FACE}" * 500  # 2,000 bytes in UTF-8
    fits = MIN_PENDING_BYTES // (2000 + 3 + PENDING_ENTRY_OVERHEAD_BYTES)
    with capturedLogs() as events:
        for n in range(100):
            store.append_history(line(f"{n:03d}{long_line}"))
        server.start()
        await link.connect()
        await store.flush()
    assert [text[:3] for text in await in_redis(link)] == [
        f"{n:03d}" for n in range(100 - fits, 100)
    ]
    assert sum(event.get("lost", 0) for event in events) == 100 - fits


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


@pytest_twisted.ensureDeferred
async def test_retries_back_off_while_writes_fail(link: TxRedisLink, server: RedisServer) -> None:
    """Each failed attempt doubles the wait before the next one, so the log is not flooded."""
    clock = Clock()
    store = make_store(link, server, clock=clock)
    await link.disconnect()
    store.append_history(line("stuck"))
    with capturedLogs() as events:
        clock.pump([INTERVAL, 2 * INTERVAL, 4 * INTERVAL])
    assert len(messages(events, LogLevel.error)) == 3
    assert [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()] == [
        pytest.approx(8 * INTERVAL)
    ]
    await link.connect()
    clock.advance(8 * INTERVAL)

    async def written() -> bool:
        return await in_redis(link) == ["stuck"]

    await wait_until(written)


# Life cycle.


@pytest_twisted.ensureDeferred
async def test_stop_flushes_then_refuses(store: RedisStore, link: TxRedisLink) -> None:
    """stop() writes what is pending; afterwards calls fail with StoreClosed, lines are dropped."""
    store.append_history(line("last words"))
    await store.stop()
    assert await in_redis(link) == ["last words"]
    with pytest.raises(StoreClosed):
        await store.get_account("alice")
    with pytest.raises(StoreClosed):
        await store.recent_history("#lobby", 5)
    with pytest.raises(StoreClosed):
        await store.flush()
    with capturedLogs() as events:
        store.append_history(line("too late"))
        store.append_history(line("later still"))
    assert len(messages(events, LogLevel.warn)) == 1
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_stop_while_redis_is_down_logs_the_loss(
    link: TxRedisLink, server: RedisServer
) -> None:
    """Stopping with Redis away completes, and logs how many lines were lost."""
    clock = Clock()
    store = make_store(link, server, clock=clock)
    server.stop()
    store.append_history(line("a"))
    store.append_history(line("b"))
    with capturedLogs() as events:
        await store.stop()
    assert any("2 history entries lost" in error for error in messages(events, LogLevel.error))
    assert clock.getDelayedCalls() == []


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


def test_use_before_start_and_second_start_are_refused() -> None:
    """Using a store never started raises StoreNotStarted; starting twice raises StoreError."""
    store = RedisStore(TxRedisLink(0), "redis://127.0.0.1:1/0", clock=Clock())
    with pytest.raises(StoreNotStarted):
        store.append_history(line("early"))
    with pytest.raises(StoreNotStarted):
        store.get_setting("motd")
    store.start()
    with pytest.raises(StoreError):
        store.start()
    never_started = RedisStore(TxRedisLink(0), "redis://127.0.0.1:1/0", clock=Clock())
    assert never_started.stop().called


def test_the_logged_url_has_no_password() -> None:
    """``path``, which the service logs, is the URL without its password."""
    store = RedisStore(TxRedisLink(0), "redis://:s3cret@redis.example:6379/0", clock=Clock())
    assert store.path == "redis://:***@redis.example:6379/0"
    plain = RedisStore(TxRedisLink(0), "redis://127.0.0.1:6379/0", clock=Clock())
    assert plain.path == "redis://127.0.0.1:6379/0"


# Accounts.


@pytest_twisted.ensureDeferred
async def test_accounts_are_unique_case_insensitively(
    link: TxRedisLink, server: RedisServer
) -> None:
    """An alias registers once in any case; it is found in any case, with its date."""
    clock = Clock()
    clock.advance(42.5)
    store = make_store(link, server, clock=clock)
    assert await store.create_account("Alice", "hash") is True
    assert await store.create_account("ALICE", "other") is False
    assert await store.get_account("alice") == Account("Alice", "hash", 42.5, ())
    assert await store.get_account("bob") is None
    assert await store.create_account("bob", "h2") is True
    assert await store.registered_keys() == {"alice", "bob"}


@pytest_twisted.ensureDeferred
async def test_password_hash_can_be_replaced(store: RedisStore) -> None:
    """A registered alias gets a new hash; an unknown one is reported, not created."""
    await store.create_account("alice", "old")
    assert await store.set_password_hash("ALICE", "new") is True
    account = await store.get_account("alice")
    assert account is not None and account.password_hash == "new"
    assert await store.set_password_hash("nobody", "x") is False
    assert await store.get_account("nobody") is None


@pytest_twisted.ensureDeferred
async def test_ignores_are_replaced_in_order(store: RedisStore) -> None:
    """The ignore list is kept in order and replaced whole; an unknown account fails."""
    await store.create_account("alice", "h")
    await store.set_ignores("alice", iter(["zed", "bob"]))
    account = await store.get_account("alice")
    assert account is not None and account.ignores == ("zed", "bob")
    await store.set_ignores("Alice", [])
    account = await store.get_account("alice")
    assert account is not None and account.ignores == ()
    with pytest.raises(NoSuchAccount):
        await store.set_ignores("nobody", ["x"])
    assert await store.get_account("nobody") is None


@pytest_twisted.ensureDeferred
async def test_ssh_keys(link: TxRedisLink, server: RedisServer) -> None:
    """Keys bind once, list oldest first, unbind once; an unregistered alias cannot bind."""
    clock = Clock()
    store = make_store(link, server, clock=clock)
    await store.create_account("alice", "h")
    assert await store.add_ssh_key("alice", "SHA256:zzz", "ssh-ed25519 AAAA first") is True
    clock.advance(1)
    assert await store.add_ssh_key("Alice", "SHA256:aaa", "ssh-ed25519 AAAA second") is True
    assert await store.add_ssh_key("alice", "SHA256:zzz", "ssh-ed25519 AAAA again") is False
    assert await store.ssh_keys("ALICE") == [
        ("SHA256:zzz", "ssh-ed25519 AAAA first"),
        ("SHA256:aaa", "ssh-ed25519 AAAA second"),
    ]
    assert await store.remove_ssh_key("alice", "SHA256:zzz") is True
    assert await store.remove_ssh_key("alice", "SHA256:zzz") is False
    assert await store.ssh_keys("alice") == [("SHA256:aaa", "ssh-ed25519 AAAA second")]
    with pytest.raises(NoSuchAccount):
        await store.add_ssh_key("nobody", "SHA256:x", "ssh-ed25519 AAAA")
    assert await store.ssh_keys("nobody") == []


# Bans, settings, topics.


@pytest_twisted.ensureDeferred
async def test_bans_expire(store: RedisStore, link: TxRedisLink) -> None:
    """Expired bans are left out and deleted; permanent and future ones stay, oldest first."""
    forever = Ban("carol", "alias", "spam", "op", 3.0, None)
    soon = Ban("192.0.2.1", "ip", "flood", "op", 1.0, 10.0)
    later = Ban("198.51.100.0/24", "cidr", "", "op", 2.0, 100.5)
    for ban in (forever, soon, later):
        await store.add_ban(ban)
    assert await store.active_bans(now=5) == [soon, later, forever]
    assert await store.active_bans(now=10) == [later, forever]
    assert await link.execute("HLEN", "chatd:bans") == 2
    assert await store.remove_ban("carol") is True
    assert await store.remove_ban("carol") is False
    assert await store.active_bans(now=10) == [later]


@pytest_twisted.ensureDeferred
async def test_ban_on_the_same_mask_replaces(store: RedisStore) -> None:
    """A second ban on a mask, in any case, replaces the first and keeps the new spelling."""
    await store.add_ban(Ban("Carol", "alias", "first", "op", 1.0, None))
    await store.add_ban(Ban("carol", "alias", "second", "op2", 2.0, 50.0))
    assert await store.active_bans(now=0) == [Ban("carol", "alias", "second", "op2", 2.0, 50.0)]
    assert await store.remove_ban("CAROL") is True
    assert await store.active_bans(now=0) == []


@pytest_twisted.ensureDeferred
async def test_settings_set_and_delete(store: RedisStore) -> None:
    """A setting reads back as set; None deletes it; an unknown one is None."""
    assert await store.get_setting("motd") is None
    await store.set_setting("motd", "Welcome ☺")
    await store.set_setting("motd", "Welcome again")
    assert await store.get_setting("motd") == "Welcome again"
    await store.set_setting("motd", None)
    assert await store.get_setting("motd") is None
    await store.set_setting("motd", None)


@pytest_twisted.ensureDeferred
async def test_topics(store: RedisStore) -> None:
    """Topics are set, replaced (in any case of the room) and cleared; named as last set."""
    await store.set_topic("#lobby", "Chat", "alice")
    await store.set_topic("#dev", "Code", "bob")
    await store.set_topic("#Lobby", "Talk", "carol")
    assert await store.topics() == {"#Lobby": "Talk", "#dev": "Code"}
    await store.set_topic("#DEV", None, "bob")
    assert await store.topics() == {"#Lobby": "Talk"}


@pytest_twisted.ensureDeferred
async def test_start_up_reads_only_the_topics_set_last(
    link: TxRedisLink, server: RedisServer
) -> None:
    """However many rooms have a topic, start-up reads the newest few; others one by one."""
    clock = Clock()
    store = make_store(link, server, clock=clock)
    for n in range(300):
        clock.advance(1)
        await store.set_topic(f"#r{n}", f"topic {n}", "alice")
    topics = await store.topics(100)
    assert list(topics)[:2] == ["#r299", "#r298"]
    assert len(topics) == 100 and "#r199" not in topics
    assert await store.topic("#R5") == "topic 5"
    assert await store.topic("#nothing") is None


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
    assert 0 < await link.execute("TTL", writer) <= redisstore.WRITER_TTL_SECONDS
