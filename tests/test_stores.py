"""The contract of every store (chatd.interfaces.IChatStore), run against both stores.

Each test runs twice: on a :class:`~chatd.stores.sqlite.SQLiteStore` that runs
its SQL at once in the test's thread (``run_synchronously``), and on a
:class:`~chatd.stores.redis.RedisStore` on a real redis-server of its own
(tests/redisserver.py) over a link that never reconnects by itself. Both run on a
``task.Clock`` nobody advances unless the test does, so no write happens unless
the test asks for it. A :class:`Backend` gives what differs: how the storage is
read as another process would (:meth:`Backend.stored`), how writes are made to
fail (a trigger refusing inserts; the link to Redis cut) and what a write that
fails raises.

What only one store does (SQLite's schema, files and thread; Redis' layout,
reconnection and sharing by several nodes) is tested in tests/test_sqlitestore.py
and tests/test_redisstore.py.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, capturedLogs
from zope.interface.verify import verifyObject

from chatd.interfaces import IChatStore
from chatd.model import (
    BOX_FULL,
    KEPT,
    SENDER_FULL,
    Account,
    Ban,
    HistoryEntry,
    WaitingMessage,
)
from chatd.stores.base import (
    MIN_PENDING_BYTES,
    PENDING_ENTRY_OVERHEAD_BYTES,
    NoSuchAccount,
    StoreClosed,
    StoreError,
    StoreNotStarted,
)
from chatd.stores.redis import RedisStore
from chatd.stores.sqlite import SQLiteStore, run_synchronously
from tests.redisserver import RedisServer
from tests.storetesting import (
    INTERVAL,
    TxRedisLink,
    accept_history_inserts,
    in_redis,
    messages,
    on_disk,
    query,
    refuse_history_inserts,
    succeeded,
    texts,
    wait_until,
)

AnyStore = SQLiteStore | RedisStore


def line(text: str, room: str = "#lobby", at: float = 0.0, kind: str = "say") -> HistoryEntry:
    return HistoryEntry(room=room, kind=kind, alias="alice", text=text, at=at)


class Backend:
    """One kind of store, on storage of the test's own, with a Clock of its own."""

    # What a write fails with while writes are refused (see refuse_writes).
    write_error: type[Exception]
    # What binding an SSH key to an alias nobody registered fails with.
    unregistered_ssh_key_error: type[Exception]

    def __init__(self) -> None:
        self.clock = Clock()

    def make(self, **options: Any) -> AnyStore:
        """A store on this storage, not started; by default on the backend's Clock."""
        raise NotImplementedError

    def started(self, **options: Any) -> AnyStore:
        """A started store on this storage (another one, if one is running already)."""
        store = self.make(**options)
        succeeded(store.start())
        return store

    async def stored(self, room: str = "#lobby") -> list[str]:
        """The texts of ``room`` in the storage, oldest first, as another process sees them."""
        raise NotImplementedError

    async def eventually_stored(self, expected: list[str], room: str = "#lobby") -> None:
        """Wait until the storage holds ``expected`` for ``room`` (a write may be on its way)."""

        async def holds() -> bool:
            return await self.stored(room) == expected

        await wait_until(holds)

    async def refuse_writes(self) -> None:
        """Make every history write fail from now on, like a full disk or Redis gone."""
        raise NotImplementedError

    async def accept_writes(self) -> None:
        raise NotImplementedError

    async def later(self) -> None:
        """Let the storage's own clock move on, so the next write is newer than the last."""

    async def ban_count(self) -> int:
        """How many bans the storage holds, expired or not."""
        raise NotImplementedError

    async def is_untouched(self) -> bool:
        """Whether the storage holds nothing, not even an empty schema."""
        raise NotImplementedError


class SQLiteBackend(Backend):
    write_error = sqlite3.Error
    # The foreign key of the ssh_keys table refuses it.
    unregistered_ssh_key_error = sqlite3.IntegrityError

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def make(self, **options: Any) -> AnyStore:
        options.setdefault("clock", self.clock)
        options.setdefault("flush_interval_seconds", INTERVAL)
        return SQLiteStore(self.path, run_in_thread=run_synchronously, **options)

    async def stored(self, room: str = "#lobby") -> list[str]:
        return on_disk(self.path, room)

    async def refuse_writes(self) -> None:
        refuse_history_inserts(self.path)

    async def accept_writes(self) -> None:
        accept_history_inserts(self.path)

    async def ban_count(self) -> int:
        ((count,),) = query(self.path, "SELECT COUNT(*) FROM bans")
        return int(count)

    async def is_untouched(self) -> bool:
        return not self.path.exists()


class RedisBackend(Backend):
    write_error = txredisapi.ConnectionError
    unregistered_ssh_key_error = NoSuchAccount

    def __init__(self, server: RedisServer, link: TxRedisLink) -> None:
        super().__init__()
        self.server = server
        self.link = link

    def make(self, **options: Any) -> AnyStore:
        options.setdefault("clock", self.clock)
        options.setdefault("flush_interval_seconds", INTERVAL)
        return RedisStore(self.link, self.server.url, **options)

    async def stored(self, room: str = "#lobby") -> list[str]:
        return await in_redis(self.link, room)

    async def refuse_writes(self) -> None:
        await self.link.disconnect()

    async def accept_writes(self) -> None:
        await self.link.connect()

    async def later(self) -> None:
        # Redis ranks rooms by the millisecond of their last write.
        await deferLater(reactor, 0.01, lambda: None)

    async def ban_count(self) -> int:
        count: int = await self.link.execute("HLEN", "chatd:bans")
        return count

    async def is_untouched(self) -> bool:
        return await self.link.execute("DBSIZE") == 0


@pytest_twisted.async_yield_fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "chatd.sqlite3")
        return
    with RedisServer() as server:
        link = TxRedisLink(server.port)
        await link.connect()
        yield RedisBackend(server, link)
        await link.disconnect()


@pytest_twisted.async_yield_fixture
async def store(backend: Backend) -> AsyncIterator[AnyStore]:
    store = backend.started()
    yield store
    await store.stop()


# The interface.


def test_the_store_provides_the_interface(store: AnyStore) -> None:
    """Every store has each method and attribute of IChatStore, as the rest of chatd uses it."""
    assert verifyObject(IChatStore, store)


# Settings refused at construction.


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
def test_nonsense_limits_are_refused(backend: Backend, options: dict[str, Any]) -> None:
    """Limits that would never write or would keep nothing raise ValueError at construction."""
    with pytest.raises(ValueError):
        backend.make(**options)


def test_entries_of_unknown_kind_are_refused(store: AnyStore) -> None:
    """History kinds (on entering the store) and ban kinds outside the known sets raise."""
    with pytest.raises(ValueError, match="kind"):
        store.append_history(line("hi", kind="shout"))
    with pytest.raises(ValueError):
        Ban("x", "host", "", "mod", 0.0, None)


# History: when it is written.


@pytest_twisted.ensureDeferred
async def test_nothing_is_written_before_the_interval(store: AnyStore, backend: Backend) -> None:
    """Appended lines reach the storage exactly at the flush interval, not before."""
    store.append_history(line("one"))
    store.append_history(line("two"))
    backend.clock.advance(INTERVAL - 0.01)
    assert await backend.stored() == []
    backend.clock.advance(0.01)
    await backend.eventually_stored(["one", "two"])


@pytest_twisted.ensureDeferred
async def test_the_timer_writes_one_batch_after_the_interval(
    store: AnyStore, backend: Backend
) -> None:
    """Nothing is sent before the interval; then every buffered line goes in one batch."""
    for text in ("a", "b", "c"):
        store.append_history(line(text))
    backend.clock.advance(INTERVAL - 0.01)
    assert await backend.stored() == []
    backend.clock.advance(0.01)
    await backend.eventually_stored(["a", "b", "c"])
    assert store.batches_written == 1
    assert store.write_seconds > 0
    assert backend.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_interval_runs_from_the_first_unflushed_line(
    store: AnyStore, backend: Backend
) -> None:
    """A later line does not postpone the flush the first unflushed line started."""
    store.append_history(line("one"))
    backend.clock.advance(0.3)
    store.append_history(line("two"))
    backend.clock.advance(INTERVAL - 0.3)
    await backend.eventually_stored(["one", "two"])
    assert backend.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_flush_writes_at_once(store: AnyStore, backend: Backend) -> None:
    """flush() writes pending lines immediately and cancels the timer."""
    store.append_history(line("now"))
    await store.flush()
    assert await backend.stored() == ["now"]
    assert backend.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_stop_flushes_pending_history(backend: Backend) -> None:
    """Lines still in memory when the store stops are written before it closes."""
    store = backend.started()
    store.append_history(line("last words"))
    await store.stop()
    assert await backend.stored() == ["last words"]
    assert backend.clock.getDelayedCalls() == []


# History: reading it back.


@pytest_twisted.ensureDeferred
async def test_history_round_trip_in_order(store: AnyStore, backend: Backend) -> None:
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
    assert await backend.stored() == ["hello", "waves ☺", ""]
    assert await store.recent_history("#lobby", 10) == [entries[0], entries[1], entries[3]]
    assert await store.recent_history("#lobby", 2) == [entries[1], entries[3]]
    assert await store.recent_history("#other", 10) == [entries[2]]
    assert await store.recent_history("#nowhere", 10) == []
    assert await store.recent_history("#lobby", 0) == []


@pytest_twisted.ensureDeferred
async def test_history_entries_round_trip(store: AnyStore) -> None:
    """Every field of an entry, actions included, comes back as it went in."""
    entry = HistoryEntry(room="#dev", kind="act", alias="Bob", text="waves ☺", at=1.25)
    store.append_history(entry)
    await store.flush()
    assert await store.recent_history("#dev", 1) == [entry]


@pytest_twisted.ensureDeferred
async def test_recent_history_includes_unflushed_lines_in_order(store: AnyStore) -> None:
    """recent_history returns the newest lines of the room, flushed or not, oldest first."""
    for n in range(3):
        store.append_history(line(f"old {n}", at=n))
    await store.flush()
    store.append_history(line("elsewhere", room="#dev", at=3))
    store.append_history(line("new 3", at=4))
    store.append_history(line("new 4", at=5))
    recent = await store.recent_history("#lobby", 4)
    assert texts(recent) == ["old 1", "old 2", "new 3", "new 4"]
    assert texts(await store.recent_history("#lobby", 10)) == [
        "old 0",
        "old 1",
        "old 2",
        "new 3",
        "new 4",
    ]
    assert await store.recent_history("#lobby", 0) == []


@pytest_twisted.ensureDeferred
async def test_recent_history_before(store: AnyStore) -> None:
    """With ``before``, only lines strictly older than that time are returned."""
    for n in range(4):
        store.append_history(line(f"flushed {n}", at=10 + n))
    await store.flush()
    store.append_history(line("pending", at=14))
    assert texts(await store.recent_history("#lobby", 2, before=13)) == [
        "flushed 1",
        "flushed 2",
    ]
    assert texts(await store.recent_history("#lobby", 10, before=14.5)) == [
        "flushed 0",
        "flushed 1",
        "flushed 2",
        "flushed 3",
        "pending",
    ]


@pytest_twisted.ensureDeferred
async def test_recent_history_by_room(store: AnyStore) -> None:
    """Every room's newest lines come back at once, flushed and unflushed merged."""
    for n in range(3):
        store.append_history(line(f"lobby {n}"))
        store.append_history(line(f"dev {n}", room="#dev"))
    await store.flush()
    store.append_history(line("lobby 3"))
    store.append_history(line("quiet 0", room="#quiet"))
    by_room = await store.recent_history_by_room(2)
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#dev": ["dev 1", "dev 2"],
        "#lobby": ["lobby 2", "lobby 3"],
        "#quiet": ["quiet 0"],
    }


@pytest_twisted.ensureDeferred
async def test_recent_history_by_room_names_rooms_as_said(
    store: AnyStore, backend: Backend
) -> None:
    """The newest lines of every room with history, written or not, named as said; another
    store on the same storage sees the written ones."""
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
    other = backend.started()
    assert set(await other.recent_history_by_room(5)) == {"#lobby", "#Other"}


@pytest_twisted.ensureDeferred
async def test_rooms_with_unflushed_lines_rank_first(store: AnyStore, backend: Backend) -> None:
    """The most recently active rooms count lines not yet written, with their stored lines."""
    for room in ("#a", "#b", "#c"):
        store.append_history(line(f"{room} 0", room=room))
        await store.flush()
        await backend.later()
    store.append_history(line("#a 1", room="#a"))
    by_room = await store.recent_history_by_room(5, 2)
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#a": ["#a 0", "#a 1"],
        "#c": ["#c 0"],
    }


# History: what is held while it waits.


def test_waiting_lines_are_compact(backend: Backend) -> None:
    """A line waiting to be written costs at most its UTF-8 text and 300 bytes, even when
    one emoji would make Python keep it at four bytes per character."""
    # Nothing is written: the clock stays put and the lines stay under the early write.
    store = backend.started(max_pending_entries=100_000, max_pending_bytes=1 << 30)
    long_line = "x" * 1999 + "\N{GRINNING FACE}"  # 2,003 bytes in UTF-8, 8 KB as a str
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            store.append_history(
                HistoryEntry(
                    "#lobby", "say", "alice", long_line[:-1] + "\N{GRINNING FACE}", float(n)
                )
            )
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held / 2000 <= 2003 + 300


@pytest_twisted.ensureDeferred
async def test_a_line_utf_8_cannot_encode_does_not_block_the_writer(
    store: AnyStore, backend: Backend
) -> None:
    """A lone surrogate is written as "?" rather than failing its batch, and every retry."""
    store.append_history(line("bad \ud800 half"))
    store.append_history(line("next"))
    await store.flush()
    assert await backend.stored() == ["bad ? half", "next"]


# History: when writes fail.


@pytest_twisted.ensureDeferred
async def test_explicit_flush_reports_failure(store: AnyStore, backend: Backend) -> None:
    """flush() fails when the write fails, and the lines stay for the next attempt."""
    await backend.refuse_writes()
    store.append_history(line("kept"))
    with capturedLogs(), pytest.raises(backend.write_error):
        await store.flush()
    await backend.accept_writes()
    await store.flush()
    assert await backend.stored() == ["kept"]


@pytest_twisted.ensureDeferred
async def test_retries_back_off_while_writes_fail(store: AnyStore, backend: Backend) -> None:
    """Each failed attempt doubles the wait before the next one, so the log is not flooded."""
    clock = backend.clock
    await backend.refuse_writes()
    store.append_history(line("stuck"))
    with capturedLogs() as events:
        clock.pump([INTERVAL, 2 * INTERVAL, 4 * INTERVAL])
        assert [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()] == [
            pytest.approx(8 * INTERVAL)
        ]
        clock.advance(8 * INTERVAL - 0.01)
    assert len(messages(events, LogLevel.error)) == 3
    assert [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()] == [
        pytest.approx(0.01)
    ]
    await backend.accept_writes()
    clock.advance(0.01)
    await backend.eventually_stored(["stuck"])


@pytest_twisted.ensureDeferred
async def test_buffer_cap_drops_oldest_and_logs(backend: Backend) -> None:
    """Past ``max_pending_entries`` unwritten lines the oldest go, and the loss is logged."""
    clock = backend.clock
    store = backend.started(max_pending_entries=3)
    await backend.refuse_writes()
    with capturedLogs() as events:
        for n in range(6):
            store.append_history(line(f"line {n}"))  # the first is written at once, and fails
        clock.advance(2 * INTERVAL)  # the retry, after the backoff, not at each line
    errors = messages(events, LogLevel.error)
    assert len(errors) == 3
    assert "could not write 1 history entries" in errors[0]
    assert "3 oldest entries dropped" in errors[1]
    assert "could not write 3 history entries" in errors[2]
    await backend.accept_writes()
    clock.advance(4 * INTERVAL)
    await backend.eventually_stored(["line 3", "line 4", "line 5"])
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_buffer_cap_drops_a_failed_batchs_oldest_first(backend: Backend) -> None:
    """Past ``max_pending_entries`` held lines the oldest go (a failed batch's first), logged."""
    store = backend.started(max_pending_entries=3)
    await backend.refuse_writes()
    with capturedLogs() as events:
        store.append_history(line("a"))
        store.append_history(line("b"))
        with pytest.raises(backend.write_error):
            await store.flush()
        for text in ("c", "d", "e"):
            store.append_history(line(text))
        await backend.accept_writes()
        assert texts(await store.recent_history("#lobby", 10)) == ["c", "d", "e"]
        await store.flush()
    assert any("2 oldest entries dropped" in error for error in messages(events, LogLevel.error))
    assert await backend.stored() == ["c", "d", "e"]


@pytest_twisted.ensureDeferred
async def test_buffer_is_capped_in_bytes(backend: Backend) -> None:
    """Long lines held while writes fail are capped by ``max_pending_bytes`` (UTF-8 bytes)."""
    clock = backend.clock
    store = backend.started(max_pending_bytes=MIN_PENDING_BYTES)
    await backend.refuse_writes()
    long_line = "\N{GRINNING FACE}" * 500  # 2,000 bytes in UTF-8
    fits = MIN_PENDING_BYTES // (2000 + 3 + PENDING_ENTRY_OVERHEAD_BYTES)
    with capturedLogs() as events:
        for n in range(100):
            store.append_history(line(f"{n:03d}{long_line}"))
        clock.advance(30.0)
        await backend.accept_writes()
        clock.advance(30.0)
        await backend.eventually_stored([f"{n:03d}{long_line}" for n in range(100 - fits, 100)])
    assert sum(event.get("lost", 0) for event in events) == 100 - fits
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_stop_while_writes_fail_logs_the_loss_and_completes(backend: Backend) -> None:
    """Stopping with unwritable lines logs how many were lost and still closes cleanly."""
    store = backend.started()
    await backend.refuse_writes()
    store.append_history(line("a"))
    store.append_history(line("b"))
    with capturedLogs() as events:
        assert await store.stop() is None
    assert any("2 history entries lost" in error for error in messages(events, LogLevel.error))
    assert backend.clock.getDelayedCalls() == []


# Life cycle.


@pytest_twisted.ensureDeferred
async def test_use_before_start_raises(backend: Backend) -> None:
    """Any use of a store that was never started raises StoreNotStarted at once."""
    store = backend.make()
    with pytest.raises(StoreNotStarted):
        store.append_history(line("early"))
    with pytest.raises(StoreNotStarted):
        store.get_setting("motd")
    with pytest.raises(StoreNotStarted):
        store.flush()
    assert await backend.is_untouched()


def test_start_twice_is_refused(store: AnyStore) -> None:
    """A store starts once; a second start is a wiring mistake and raises."""
    with pytest.raises(StoreError):
        store.start()


def test_stop_twice_and_stop_unstarted_are_harmless(backend: Backend) -> None:
    """stop() on a stopped or never-started store just succeeds, at once."""
    store = backend.started()
    succeeded(store.stop())
    succeeded(store.stop())
    never_started = backend.make()
    assert never_started.stop().called
    succeeded(never_started.stop())


@pytest_twisted.ensureDeferred
async def test_use_after_stop_fails_softly(backend: Backend) -> None:
    """After stop, queries fail with StoreClosed and history lines are dropped with one warning."""
    store = backend.started()
    await store.stop()
    with pytest.raises(StoreClosed):
        await store.get_account("alice")
    with pytest.raises(StoreClosed):
        await store.recent_history("#lobby", 5)
    with capturedLogs() as events:
        store.append_history(line("too late"))
        store.append_history(line("later still"))
    assert len(messages(events, LogLevel.warn)) == 1
    assert backend.clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_stop_flushes_then_refuses(store: AnyStore, backend: Backend) -> None:
    """stop() writes what is pending; afterwards calls fail with StoreClosed, lines are dropped."""
    store.append_history(line("last words"))
    await store.stop()
    assert await backend.stored() == ["last words"]
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


# Accounts.


@pytest_twisted.ensureDeferred
async def test_accounts_are_unique_case_insensitively(store: AnyStore, backend: Backend) -> None:
    """An alias can be registered once, whatever its case, and is found in any case, dated."""
    backend.clock.advance(1000)
    assert await store.create_account("Alice", "hash-1") is True
    assert await store.create_account("aLICE", "hash-2") is False
    assert await store.get_account("ALICE") == Account("Alice", "hash-1", 1000.0, ())
    assert await store.get_account("bob") is None
    assert await store.create_account("bob", "h2") is True
    assert await store.registered_keys() == {"alice", "bob"}


@pytest_twisted.ensureDeferred
async def test_registered_keys_lists_every_account(store: AnyStore) -> None:
    """registered_keys gives the case-insensitive key of every registered alias."""
    assert await store.registered_keys() == set()
    await store.create_account("Alice", "h")
    await store.create_account("bob", "h")
    assert await store.registered_keys() == {"alice", "bob"}


@pytest_twisted.ensureDeferred
async def test_password_hash_can_be_replaced(store: AnyStore) -> None:
    """set_password_hash replaces the stored string; an unknown alias is reported, not created."""
    await store.create_account("alice", "old")
    assert await store.set_password_hash("Alice", "new") is True
    assert await store.set_password_hash("nobody", "x") is False
    account = await store.get_account("alice")
    assert account is not None
    assert account.password_hash == "new"
    assert await store.get_account("nobody") is None


@pytest_twisted.ensureDeferred
async def test_ignores_are_replaced_in_order(store: AnyStore) -> None:
    """set_ignores replaces the whole list (from any iterable), keeping its order."""
    await store.create_account("alice", "h")
    await store.set_ignores("alice", ["zed", "Bob"])
    await store.set_ignores("ALICE", ["carol", "zed", "bob"])
    account = await store.get_account("alice")
    assert account is not None
    assert account.ignores == ("carol", "zed", "bob")
    await store.set_ignores("alice", iter(["zed", "bob"]))
    account = await store.get_account("alice")
    assert account is not None and account.ignores == ("zed", "bob")
    await store.set_ignores("Alice", [])
    account = await store.get_account("alice")
    assert account is not None and account.ignores == ()


@pytest_twisted.ensureDeferred
async def test_ignores_of_an_unknown_account_fail(store: AnyStore) -> None:
    """set_ignores for an alias nobody registered fails with NoSuchAccount, creating nothing."""
    with pytest.raises(NoSuchAccount):
        await store.set_ignores("ghost", ["alice"])
    assert await store.get_account("ghost") is None


@pytest_twisted.ensureDeferred
async def test_ssh_keys(store: AnyStore, backend: Backend) -> None:
    """Keys bind once, list oldest first, unbind once; an unregistered alias cannot bind."""
    await store.create_account("alice", "h")
    assert await store.add_ssh_key("alice", "SHA256:zzz", "ssh-ed25519 AAAA first") is True
    backend.clock.advance(1)
    assert await store.add_ssh_key("Alice", "SHA256:aaa", "ssh-ed25519 AAAA second") is True
    assert await store.add_ssh_key("alice", "SHA256:zzz", "ssh-ed25519 AAAA again") is False
    assert await store.ssh_keys("ALICE") == [
        ("SHA256:zzz", "ssh-ed25519 AAAA first"),
        ("SHA256:aaa", "ssh-ed25519 AAAA second"),
    ]
    assert await store.remove_ssh_key("alice", "SHA256:zzz") is True
    assert await store.remove_ssh_key("alice", "SHA256:zzz") is False
    assert await store.ssh_keys("alice") == [("SHA256:aaa", "ssh-ed25519 AAAA second")]
    with pytest.raises(backend.unregistered_ssh_key_error):
        await store.add_ssh_key("nobody", "SHA256:x", "ssh-ed25519 AAAA")
    assert await store.ssh_keys("nobody") == []


# Bans.


@pytest_twisted.ensureDeferred
async def test_bans_expire(store: AnyStore) -> None:
    """active_bans leaves out bans expired by ``now`` and deletes them for good."""
    forever = Ban("troll", "alias", "spam", "mod", 1.0, None)
    later = Ban("10.0.0.0/8", "cidr", "flood", "mod", 2.0, 100.0)
    soon = Ban("192.0.2.7", "ip", "abuse", "mod", 3.0, 50.0)
    for ban in (forever, later, soon):
        await store.add_ban(ban)
    assert await store.active_bans(now=10) == [forever, later, soon]
    assert await store.active_bans(now=50) == [forever, later]
    assert await store.active_bans(now=0) == [forever, later]  # soon is gone
    assert await store.active_bans(now=100) == [forever]


@pytest_twisted.ensureDeferred
async def test_expired_bans_are_deleted_and_the_rest_listed_oldest_first(
    store: AnyStore, backend: Backend
) -> None:
    """Expired bans are left out and deleted; permanent and future ones stay, oldest first."""
    forever = Ban("carol", "alias", "spam", "op", 3.0, None)
    soon = Ban("192.0.2.1", "ip", "flood", "op", 1.0, 10.0)
    later = Ban("198.51.100.0/24", "cidr", "", "op", 2.0, 100.5)
    for ban in (forever, soon, later):
        await store.add_ban(ban)
    assert await store.active_bans(now=5) == [soon, later, forever]
    assert await store.active_bans(now=10) == [later, forever]
    assert await backend.ban_count() == 2
    assert await store.remove_ban("carol") is True
    assert await store.remove_ban("carol") is False
    assert await store.active_bans(now=10) == [later]


@pytest_twisted.ensureDeferred
async def test_ban_on_the_same_mask_replaces(store: AnyStore) -> None:
    """Adding a ban on a mask already banned (in any case) replaces it; removal reports."""
    await store.add_ban(Ban("troll", "alias", "spam", "mod", 1.0, 10.0))
    replacement = Ban("Troll", "alias", "again", "op", 5.0, None)
    await store.add_ban(replacement)
    assert await store.active_bans(now=20) == [replacement]
    assert await store.remove_ban("TROLL") is True
    assert await store.remove_ban("troll") is False
    assert await store.active_bans(now=20) == []


@pytest_twisted.ensureDeferred
async def test_a_replacing_ban_keeps_the_new_spelling(store: AnyStore) -> None:
    """A second ban on a mask, in any case, replaces the first and keeps the new spelling."""
    await store.add_ban(Ban("Carol", "alias", "first", "op", 1.0, None))
    await store.add_ban(Ban("carol", "alias", "second", "op2", 2.0, 50.0))
    assert await store.active_bans(now=0) == [Ban("carol", "alias", "second", "op2", 2.0, 50.0)]
    assert await store.remove_ban("CAROL") is True
    assert await store.active_bans(now=0) == []


# Settings and topics.


@pytest_twisted.ensureDeferred
async def test_settings_set_and_delete(store: AnyStore) -> None:
    """A setting can be set, replaced and deleted with None; an unknown one is None."""
    assert await store.get_setting("motd") is None
    await store.set_setting("motd", "Hello ☺")
    assert await store.get_setting("motd") == "Hello ☺"
    await store.set_setting("motd", "Be nice")
    assert await store.get_setting("motd") == "Be nice"
    await store.set_setting("motd", None)
    assert await store.get_setting("motd") is None
    await store.set_setting("motd", None)  # deleting nothing is fine


@pytest_twisted.ensureDeferred
async def test_topics(store: AnyStore) -> None:
    """Topics can be set, replaced and cleared per room."""
    await store.set_topic("#lobby", "Welcome", "alice")
    await store.set_topic("#dev", "Ship it", "bob")
    await store.set_topic("#lobby", "Welcome back", "carol")
    assert await store.topics() == {"#dev": "Ship it", "#lobby": "Welcome back"}
    await store.set_topic("#dev", None, "bob")
    assert await store.topics() == {"#lobby": "Welcome back"}


@pytest_twisted.ensureDeferred
async def test_start_up_reads_only_the_topics_set_last(store: AnyStore, backend: Backend) -> None:
    """However many rooms have a topic, start-up reads the newest few; others one by one."""
    for n in range(300):
        backend.clock.advance(1)
        await store.set_topic(f"#r{n}", f"topic {n}", "alice")
    topics = await store.topics(100)
    assert list(topics)[:2] == ["#r299", "#r298"]
    assert len(topics) == 100 and "#r199" not in topics
    assert await store.topic("#R5") == "topic 5"
    assert await store.topic("#nothing") is None


# Across restarts.


@pytest_twisted.ensureDeferred
async def test_everything_survives_close_and_reopen(backend: Backend) -> None:
    """A new store on the same storage sees the history, accounts, bans, settings and topics."""
    store = backend.started()
    store.append_history(line("flushed"))
    await store.flush()
    store.append_history(line("written at stop"))
    await store.create_account("Alice", "hash")
    await store.set_ignores("alice", ["bob"])
    ban = Ban("192.0.2.0/24", "cidr", "spam", "mod", 1.0, None)
    await store.add_ban(ban)
    await store.set_setting("motd", "Hi")
    await store.set_topic("#lobby", "Chat", "alice")
    await store.stop()

    again = backend.started(clock=Clock())
    assert texts(await again.recent_history("#lobby", 10)) == ["flushed", "written at stop"]
    assert await again.get_account("alice") == Account("Alice", "hash", 0.0, ("bob",))
    assert await again.active_bans(now=5) == [ban]
    assert await again.get_setting("motd") == "Hi"
    assert await again.topics() == {"#lobby": "Chat"}
    await again.stop()


# What waits for registered aliases (chatd.offline).


def waiting(sender: str, text: str, at: float) -> WaitingMessage:
    return WaitingMessage(sender, text, at)


@pytest_twisted.ensureDeferred
async def test_waiting_messages_are_kept_read_oldest_first_and_dropped(store: AnyStore) -> None:
    """Kept messages are read back oldest first by the recipient in any case, and only
    the ones dropped by their handle go."""
    for n in range(3):
        assert (
            await store.keep_message("Bob", waiting("alice", f"m{n}", 10.0 + n), 5, 5, 0) == KEPT
        )
    held = await store.waiting_messages("BOB", 0)
    assert [(m.sender, m.text, m.at) for m in held] == [
        ("alice", "m0", 10.0),
        ("alice", "m1", 11.0),
        ("alice", "m2", 12.0),
    ]
    await store.drop_messages("bob", [held[0].handle, held[2].handle])
    assert [m.text for m in await store.waiting_messages("bob", 0)] == ["m1"]
    assert await store.waiting_messages("carol", 0) == []


@pytest_twisted.ensureDeferred
async def test_two_equal_messages_are_two(store: AnyStore) -> None:
    """The same text sent twice at the same time waits twice, and dropping one keeps the other."""
    for _ in range(2):
        await store.keep_message("bob", waiting("alice", "same", 1.0), 5, 5, 0)
    held = await store.waiting_messages("bob", 0)
    assert len(held) == 2
    await store.drop_messages("bob", [held[0].handle])
    assert [m.text for m in await store.waiting_messages("bob", 0)] == ["same"]


@pytest_twisted.ensureDeferred
async def test_a_full_box_refuses_and_so_does_a_senders_share(store: AnyStore) -> None:
    """A box takes at most its bound, one sender at most their share of it, and a
    refused message is not kept."""
    assert await store.keep_message("bob", waiting("alice", "a1", 1.0), 3, 2, 0) == KEPT
    assert await store.keep_message("bob", waiting("Alice", "a2", 2.0), 3, 2, 0) == KEPT
    assert await store.keep_message("bob", waiting("alice", "a3", 3.0), 3, 2, 0) == SENDER_FULL
    assert await store.keep_message("bob", waiting("carol", "c1", 4.0), 3, 2, 0) == KEPT
    assert await store.keep_message("bob", waiting("dave", "d1", 5.0), 3, 2, 0) == BOX_FULL
    assert [m.text for m in await store.waiting_messages("bob", 0)] == ["a1", "a2", "c1"]


@pytest_twisted.ensureDeferred
async def test_a_senders_share_is_counted_by_the_key_given(store: AnyStore) -> None:
    """Two aliases counted as one sender share one share, and keep their own names."""
    kept = await store.keep_message("bob", waiting("alice", "a", 1.0), 5, 1, 0, sender_key="x")
    refused = await store.keep_message("bob", waiting("alice2", "b", 2.0), 5, 1, 0, sender_key="x")
    other = await store.keep_message("bob", waiting("alice2", "c", 3.0), 5, 1, 0, sender_key="y")
    assert (kept, refused, other) == (KEPT, SENDER_FULL, KEPT)
    assert [(m.sender, m.text) for m in await store.waiting_messages("bob", 0)] == [
        ("alice", "a"),
        ("alice2", "c"),
    ]


@pytest_twisted.ensureDeferred
async def test_messages_past_the_age_are_neither_read_nor_counted(store: AnyStore) -> None:
    """A message older than the age is not read, and no longer takes room in the box."""
    await store.keep_message("bob", waiting("alice", "old", 10.0), 1, 1, 0)
    assert [m.text for m in await store.waiting_messages("bob", 5.0)] == ["old"]
    assert await store.waiting_messages("bob", 11.0) == []
    assert await store.keep_message("bob", waiting("alice", "new", 20.0), 1, 1, 11.0) == KEPT
    assert [m.text for m in await store.waiting_messages("bob", 0)] == ["new"]


@pytest_twisted.ensureDeferred
async def test_mentions_keep_the_newest_within_the_age(store: AnyStore) -> None:
    """Mentions are read oldest first, capped to the newest, without those past the
    age, and cleared per account."""
    for n in range(5):
        entry = HistoryEntry("#lobby", "say", "alice", f"bob: {n}", float(n))
        await store.add_mention("Bob", entry, 3, 0)
    await store.add_mention("carol", line("carol!", at=1.0), 3, 0)
    assert texts(await store.mentions_of("bob", 0)) == ["bob: 2", "bob: 3", "bob: 4"]
    assert (await store.mentions_of("bob", 0))[0] == HistoryEntry(
        "#lobby", "say", "alice", "bob: 2", 2.0
    )
    assert texts(await store.mentions_of("BOB", 3.0)) == ["bob: 3", "bob: 4"]
    await store.clear_mentions("BOB")
    assert await store.mentions_of("bob", 0) == []
    assert texts(await store.mentions_of("carol", 0)) == ["carol!"]


@pytest_twisted.ensureDeferred
async def test_away_rooms_are_set_and_cleared(store: AnyStore) -> None:
    """The room an account left is kept by key until it is back."""
    await store.set_away_room("Bob", "#Rust", 5.0)
    await store.set_away_room("carol", "#lobby", 6.0)
    await store.set_away_room("bob", "#go", 7.0)
    assert await store.away_rooms() == {"bob": ("#go", 7.0), "carol": ("#lobby", 6.0)}
    await store.set_away_room("carol", None, 8.0)
    assert await store.away_rooms() == {"bob": ("#go", 7.0)}


@pytest_twisted.ensureDeferred
async def test_what_waits_survives_close_and_reopen(backend: Backend) -> None:
    """Waiting messages, mentions and away rooms are there for a new store on the same storage."""
    store = backend.started()
    await store.keep_message("bob", waiting("alice", "hi bob", 3.0), 5, 5, 0)
    await store.add_mention("bob", line("bob?", at=4.0), 5, 0)
    await store.set_away_room("bob", "#lobby", 2.0)
    await store.stop()

    again = backend.started(clock=Clock())
    assert [(m.sender, m.text, m.at) for m in await again.waiting_messages("bob", 0)] == [
        ("alice", "hi bob", 3.0)
    ]
    assert texts(await again.mentions_of("bob", 0)) == ["bob?"]
    assert await again.away_rooms() == {"bob": ("#lobby", 2.0)}
    await again.stop()


@pytest_twisted.ensureDeferred
async def test_what_waits_fails_softly_when_storage_is_gone(backend: Backend) -> None:
    """Keeping a message on a closed store fails its Deferred (the hub tells the sender),
    never raises."""
    store = backend.started()
    await store.stop()
    with pytest.raises(StoreClosed):
        await store.keep_message("bob", waiting("alice", "hi", 1.0), 5, 5, 0)
