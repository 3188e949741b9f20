"""What only the SQLite store does: its schema and migrations, its files, its database thread.

What every store promises is tested against this one too, in tests/test_stores.py.
All but a few tests here pass ``run_synchronously`` and a Clock, so every statement
runs at once in the test's thread and time moves only when a test says so. The
last ones run the real thread pool under the real reactor. Files are checked with
plain sqlite3 connections of their own, as another process would see them.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from chatd.interfaces import HISTORY_ROOMS_AT_START
from chatd.model import HistoryEntry, WaitingMessage
from chatd.stores.base import StoreError
from chatd.stores.sqlite import (
    _FORGET_PRUNED_ROOMS_SQL,
    _MIGRATIONS,
    _NOTE_ROOM_SQL,
    _PRUNE_AGE_SQL,
    _PRUNE_ROOM_SQL,
    _RECENT_HISTORY_SQL,
    _RECENT_ROOMS_SQL,
    SCHEMA_VERSION,
    SQLiteStore,
    run_synchronously,
)
from tests.storetesting import (
    INTERVAL,
    accept_history_inserts,
    failed,
    messages,
    on_disk,
    query,
    refuse_history_inserts,
    succeeded,
    texts,
)

T = TypeVar("T")


# Helpers.


def make_store(path: Path, clock: Clock, **options: Any) -> SQLiteStore:
    """A store that runs its SQL at once, in the test's thread."""
    return SQLiteStore(path, clock=clock, run_in_thread=run_synchronously, **options)


def started(path: Path, clock: Clock, **options: Any) -> SQLiteStore:
    store = make_store(path, clock, **options)
    succeeded(store.start())
    return store


def line(text: str, room: str = "lobby", at: float = 0.0, kind: str = "say") -> HistoryEntry:
    return HistoryEntry(room=room, kind=kind, alias="alice", text=text, at=at)


class RecordingConnect:
    """A ``connect`` that keeps the connections and traces every statement they run."""

    def __init__(self) -> None:
        self.connections: list[sqlite3.Connection] = []
        self.statements: list[str] = []
        self.threads: set[int] = set()

    def __call__(self, path: Path) -> sqlite3.Connection:
        connection = sqlite3.connect(path)
        connection.set_trace_callback(self._trace)
        self.connections.append(connection)
        return connection

    def _trace(self, statement: str) -> None:
        self.statements.append(statement)
        self.threads.add(threading.get_ident())

    def count(self, prefix: str) -> int:
        return sum(1 for s in self.statements if s.strip().upper().startswith(prefix))


class CountingRunner:
    """``run_synchronously`` that counts the calls it runs, by function name."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, function: Callable[..., T], /, *args: Any) -> Deferred[T]:
        self.calls.append(function.__name__)
        return run_synchronously(function, *args)


class QueuedRunner:
    """A database thread the test drives by hand: calls wait, in order, until run."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, function: Callable[..., T], /, *args: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self.queue.append((function, args, d))
        return d

    def run_next(self) -> None:
        function, args, d = self.queue.pop(0)
        run_synchronously(function, *args).chainDeferred(d)

    def run_all(self) -> None:
        while self.queue:
            self.run_next()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "chatd.sqlite3"


@pytest.fixture
def store(path: Path, clock: Clock) -> Iterator[SQLiteStore]:
    store = started(path, clock)
    yield store
    succeeded(store.stop())


# Opening: schema, migrations, pragmas, file permissions.


def test_start_creates_schema_in_wal_mode(tmp_path: Path, clock: Clock) -> None:
    """Starting creates the missing directory, every table, the schema version and WAL mode."""
    path = tmp_path / "new" / "dir" / "chatd.sqlite3"
    store = started(path, clock)
    tables = {name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"history", "accounts", "account_ignores", "bans", "settings", "topics"} <= tables
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    succeeded(store.stop())


def test_database_and_its_directory_are_for_chatds_user_alone(
    tmp_path: Path, clock: Clock
) -> None:
    """A new data directory is made 0700 and the database, its -wal and -shm files 0600."""
    path = tmp_path / "chatd-data" / "chatd.sqlite3"
    previous = os.umask(0o022)  # the usual umask, which would make them world-readable
    try:
        store = started(path, clock)
        store.append_history(line("one"))
        clock.advance(INTERVAL)
        modes = {
            name: stat.S_IMODE((tmp_path / "chatd-data" / name).stat().st_mode)
            for name in ("", "chatd.sqlite3", "chatd.sqlite3-wal", "chatd.sqlite3-shm")
        }
        succeeded(store.stop())
    finally:
        os.umask(previous)
    assert modes == {
        "": 0o700,
        "chatd.sqlite3": 0o600,
        "chatd.sqlite3-wal": 0o600,
        "chatd.sqlite3-shm": 0o600,
    }


def test_an_existing_databases_permissions_are_kept(path: Path, clock: Clock) -> None:
    """A database the operator made group-readable stays so: only new files are made private."""
    with closing(sqlite3.connect(path)):
        pass
    path.chmod(0o640)
    succeeded(started(path, clock).stop())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_connection_pragmas(path: Path, clock: Clock) -> None:
    """The store's connection runs with synchronous=NORMAL, a busy timeout and foreign keys."""
    connect = RecordingConnect()
    store = started(path, clock, connect=connect, busy_timeout_seconds=2.5)
    (connection,) = connect.connections
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert connection.execute("PRAGMA busy_timeout").fetchone() == (2500,)
    assert connection.execute("PRAGMA foreign_keys").fetchone() == (1,)
    succeeded(store.stop())


def test_reopening_keeps_schema_version(path: Path, clock: Clock) -> None:
    """A database already at the current version is opened again without migrating."""
    succeeded(started(path, clock).stop())
    connect = RecordingConnect()
    succeeded(started(path, clock, connect=connect).stop())
    assert connect.count("CREATE") == 0
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_schema_3_database_is_upgraded_keeping_its_data(path: Path, clock: Clock) -> None:
    """A database of the schema before messages waited (version 3) opens, keeps its
    accounts and history, and can then keep messages, mentions and away rooms."""
    with closing(sqlite3.connect(path)) as db:
        for migration in _MIGRATIONS[:3]:
            for statement in migration:
                db.execute(statement)
        db.execute("PRAGMA user_version = 3")
        db.execute(
            "INSERT INTO accounts (alias_key, alias, password_hash, created_at)"
            " VALUES (?, ?, ?, ?)",
            ("bob", "Bob", "fake$pw", 1.0),
        )
        db.execute(
            "INSERT INTO history (room, kind, alias, text, at) VALUES (?, ?, ?, ?, ?)",
            ("lobby", "say", "alice", "before the upgrade", 2.0),
        )
        db.commit()
    store = started(path, clock)
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(4,)]
    assert succeeded(store.get_account("bob")).alias == "Bob"
    assert texts(succeeded(store.recent_history("lobby", 10))) == ["before the upgrade"]
    assert succeeded(store.keep_message("bob", WaitingMessage("alice", "hi", 3.0), 5, 5, 0))
    succeeded(store.add_mention("bob", line("bob?", at=4.0), 5, 0))
    succeeded(store.set_away_room("bob", "lobby", 5.0))
    assert [m.text for m in succeeded(store.waiting_messages("bob", 0))] == ["hi"]
    assert texts(succeeded(store.mentions_of("bob", 0))) == ["bob?"]
    assert succeeded(store.away_rooms()) == {"bob": ("lobby", 5.0)}
    succeeded(store.stop())


def test_newer_schema_is_refused(path: Path, clock: Clock) -> None:
    """A database written by a newer schema fails the start instead of being misread."""
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = make_store(path, clock)
    failure = failed(store.start())
    assert failure.check(StoreError)
    assert "schema version" in str(failure.value)
    succeeded(store.stop())


# History: how it is written.


def test_one_transaction_per_flush(path: Path, clock: Clock) -> None:
    """All lines of one flush, in every room, go to the database in one transaction."""
    connect = RecordingConnect()
    runner = CountingRunner()
    store = SQLiteStore(path, clock=clock, run_in_thread=runner, connect=connect)
    succeeded(store.start())
    runner.calls.clear()
    connect.statements.clear()
    for n in range(5):
        store.append_history(line(f"line {n}", room=("lobby", "dev")[n % 2]))
    clock.advance(INTERVAL)
    assert runner.calls == ["write_history"]
    assert connect.count("BEGIN") == 1
    assert connect.count("COMMIT") == 1
    assert len(on_disk(path)) == 5
    succeeded(store.stop())


def test_flushed_line_is_readable_by_another_connection(store: SQLiteStore, path: Path) -> None:
    """A flushed line is in the file, for any reader, while the store is still open."""
    store.append_history(line("durable", at=12.5))
    succeeded(store.flush())
    assert query(path, "SELECT room, kind, alias, text, at FROM history") == [
        ("lobby", "say", "alice", "durable", 12.5)
    ]


# History: the index of recently active rooms.


def test_start_up_read_is_bounded_however_many_rooms_spoke(path: Path, clock: Clock) -> None:
    """With 20,000 rooms in the file, the start-up read returns only the newest 100,
    in about 100 queries, not one per room ever used."""
    connect = RecordingConnect()
    store = started(path, clock, connect=connect)
    for n in range(20_000):
        store.append_history(line(f"line {n}", room=f"#junk{n}"))
    succeeded(store.flush())
    connect.statements.clear()
    by_room = succeeded(store.recent_history_by_room(5))
    assert len(by_room) == HISTORY_ROOMS_AT_START
    assert set(by_room) == {f"#junk{n}" for n in range(19_900, 20_000)}
    assert by_room["#junk19999"] == [line("line 19999", room="#junk19999")]
    assert connect.count("SELECT") <= HISTORY_ROOMS_AT_START + 1
    assert len(succeeded(store.recent_history_by_room(5, 3))) == 3
    succeeded(store.stop())


def test_upgrade_ranks_the_rooms_already_in_the_file(path: Path, clock: Clock) -> None:
    """A database from before the room index gets one at start, ranked by newest line."""
    with closing(sqlite3.connect(path)) as db:
        for migration in _MIGRATIONS[:2]:
            for statement in migration:
                db.execute(statement)
        db.execute("PRAGMA user_version = 2")
        db.executemany(
            "INSERT INTO history (room, kind, alias, text, at) VALUES (?, 'say', 'a', ?, 0)",
            [("#old", "first"), ("#newer", "second"), ("#old", "third"), ("#mid", "fourth")],
        )
        db.commit()
    store = started(path, clock)
    by_room = succeeded(store.recent_history_by_room(5, 2))
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#mid": ["fourth"],
        "#old": ["first", "third"],
    }
    succeeded(store.stop())


def test_rooms_pruned_empty_by_age_are_forgotten(path: Path, clock: Clock) -> None:
    """A room whose every line is past the age leaves the index of active rooms."""
    store = started(path, clock, history_max_age_seconds=60)
    store.append_history(line("old", room="#quiet", at=0))
    succeeded(store.flush())
    clock.advance(100)
    store.append_history(line("new", room="#busy", at=100))
    succeeded(store.flush())
    assert query(path, "SELECT room FROM history_rooms") == [("#busy",)]
    assert set(succeeded(store.recent_history_by_room(5))) == {"#busy"}
    succeeded(store.stop())


# History: reads while a write is on the database thread.


def test_history_read_during_a_write_has_each_line_once(path: Path, clock: Clock) -> None:
    """Lines being written when a query runs are returned once, whether the write succeeds."""
    runner = QueuedRunner()
    store = SQLiteStore(path, clock=clock, run_in_thread=runner)
    store.start()
    runner.run_all()
    store.append_history(line("one"))
    flushed = store.flush()
    recent = store.recent_history("lobby", 10)
    store.append_history(line("two"))
    runner.run_all()
    succeeded(flushed)
    assert texts(succeeded(recent)) == ["one", "two"]
    assert on_disk(path) == ["one"]
    store.stop()
    runner.run_all()


def test_history_read_during_a_failed_write_has_each_line_once(path: Path, clock: Clock) -> None:
    """Lines whose write fails while a query waits are returned once, from memory."""
    runner = QueuedRunner()
    store = SQLiteStore(path, clock=clock, run_in_thread=runner)
    store.start()
    runner.run_all()
    refuse_history_inserts(path)
    store.append_history(line("one"))
    flushed = store.flush()
    recent = store.recent_history("lobby", 10)
    store.append_history(line("two"))
    with capturedLogs():
        runner.run_all()
        assert failed(flushed).check(sqlite3.Error)
    assert texts(succeeded(recent)) == ["one", "two"]
    accept_history_inserts(path)
    store.stop()
    runner.run_all()
    assert on_disk(path) == ["one", "two"]


# History: retention.


def test_retention_by_count(path: Path, clock: Clock) -> None:
    """Each room keeps only its newest ``history_per_room`` lines, across flushes."""
    store = started(path, clock, history_per_room=3)
    for n in range(5):
        store.append_history(line(f"lobby {n}"))
    store.append_history(line("dev 0", room="dev"))
    succeeded(store.flush())
    assert on_disk(path) == ["lobby 2", "lobby 3", "lobby 4", "dev 0"]
    store.append_history(line("lobby 5"))
    succeeded(store.flush())
    assert on_disk(path) == ["lobby 3", "lobby 4", "dev 0", "lobby 5"]
    succeeded(store.stop())


def test_retention_prunes_every_tenth_of_the_limit(path: Path, clock: Clock) -> None:
    """Between prunes a room holds at most a tenth more than its limit, never more."""
    store = started(path, clock, history_per_room=20)
    store.append_history(line("first"))
    succeeded(store.flush())  # a room's first write after start prunes
    counts = []
    for n in range(60):
        store.append_history(line(f"lobby {n}"))
        succeeded(store.flush())
        counts.append(len(on_disk(path)))
    assert max(counts) <= 22
    assert counts[-1] >= 20
    assert on_disk(path)[-1] == "lobby 59"
    succeeded(store.stop())


def test_retention_by_age(path: Path, clock: Clock) -> None:
    """Lines older than ``history_max_age_seconds`` are dropped at flushes and at start."""
    store = started(path, clock, history_max_age_seconds=60)
    clock.advance(100)
    for at in (10, 39, 40, 90):
        store.append_history(line(f"at {at}", at=at))
    succeeded(store.flush())
    assert on_disk(path) == ["at 40", "at 90"]
    succeeded(store.stop())
    clock.advance(45)  # now 145: "at 40" is too old, "at 90" is not
    store = started(path, clock, history_max_age_seconds=60)
    assert on_disk(path) == ["at 90"]
    succeeded(store.stop())


def test_history_queries_use_the_indexes(path: Path, clock: Clock) -> None:
    """Reading and pruning history search an index; none scans the whole table."""
    # The index on time is kept only by a store that prunes by age.
    succeeded(started(path, clock, history_max_age_seconds=60).stop())
    plans = {
        _PRUNE_ROOM_SQL: ("lobby", 3),
        _PRUNE_AGE_SQL: (1.0,),
        _RECENT_HISTORY_SQL: ("lobby", None, 5),
        _NOTE_ROOM_SQL: ("lobby",),
        _FORGET_PRUNED_ROOMS_SQL: (),
        _RECENT_ROOMS_SQL: (5,),
    }
    for sql, params in plans.items():
        steps = [detail for *_, detail in query(path, "EXPLAIN QUERY PLAN " + sql, *params)]
        touching = [step for step in steps if " history " in f" {step} "]
        assert all(step.startswith("SEARCH history") for step in touching), steps
        rooms = [step for step in steps if " history_rooms " in f" {step} "]
        assert all("INDEX" in step for step in rooms), steps
        assert touching or rooms, steps
        assert not any("TEMP B-TREE" in step for step in steps), steps


def indexes(path: Path) -> set[str]:
    return {name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type='index'")}


def test_index_on_time_is_kept_only_with_a_maximum_age(path: Path, clock: Clock) -> None:
    """Only a store that prunes by age keeps history indexed by time; the others drop it."""
    succeeded(started(path, clock).stop())
    assert "history_at" not in indexes(path)
    assert "history_room_id" in indexes(path)
    succeeded(started(path, clock, history_max_age_seconds=60).stop())
    assert "history_at" in indexes(path)
    succeeded(started(path, clock, history_max_age_seconds=60).stop())
    assert "history_at" in indexes(path)
    succeeded(started(path, clock).stop())
    assert "history_at" not in indexes(path)


# History: when the disk fails, and big batches.


def test_write_failure_keeps_entries_and_logs(
    store: SQLiteStore, path: Path, clock: Clock
) -> None:
    """A failed flush is logged, rolled back and retried later with the same lines, once each."""
    refuse_history_inserts(path, when="NEW.text = 'two'")
    for text in ("one", "two", "three"):
        store.append_history(line(text))
    with capturedLogs() as events:
        clock.advance(INTERVAL)
    assert on_disk(path) == []  # "one" was rolled back with the rest
    (error,) = messages(events, LogLevel.error)
    assert "could not write 3 history entries" in error
    assert "simulated write failure" in str(events[-1]["log_failure"].value)
    assert texts(succeeded(store.recent_history("lobby", 10))) == ["one", "two", "three"]
    store.append_history(line("four"))
    accept_history_inserts(path)
    with capturedLogs() as events:
        clock.advance(1.0)  # the first retry comes after twice the interval
    assert on_disk(path) == ["one", "two", "three", "four"]
    assert any("work again" in message for message in messages(events, LogLevel.info))
    assert texts(succeeded(store.recent_history("lobby", 10))) == on_disk(path)


def test_batches_fit_a_sqlite_with_few_parameters_per_statement(path: Path, clock: Clock) -> None:
    """A SQLite built with the old cap of 999 parameters still takes every line of a
    big batch, in statements of few sizes (each compiled once)."""
    connect = RecordingConnect()

    def old_sqlite(path: Path) -> sqlite3.Connection:
        connection = connect(path)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        return connection

    store = started(path, clock, connect=old_sqlite, history_per_room=10_000)
    for n in range(1000):
        store.append_history(line(str(n)))
    succeeded(store.flush())
    assert on_disk(path) == [str(n) for n in range(1000)]
    inserts = {
        s.count("), (") + 1 for s in connect.statements if s.startswith("INSERT INTO history ")
    }
    assert inserts <= {1, 2, 4, 8, 16, 32, 64, 128}
    succeeded(store.stop())


def test_a_fast_burst_loses_no_line(path: Path, clock: Clock) -> None:
    """200,000 lines appended at once are all written, in order: a backlog is written
    at once in growing batches instead of overflowing the buffer before the timer."""
    store = started(path, clock, history_per_room=1_000_000)
    with capturedLogs() as events:
        for n in range(200_000):
            store.append_history(line(str(n), at=n))
        succeeded(store.flush())
    assert messages(events, LogLevel.error) == []
    assert query(
        path, "SELECT COUNT(*), MIN(at), MAX(at), SUM(text = CAST(at AS INT)) FROM history"
    ) == [(200_000, 0.0, 199_999.0, 200_000)]
    assert store.batches_written < 200_000 / 1_000
    succeeded(store.stop())


# Life cycle.


def test_stop_called_again_while_stopping_waits_for_the_close(path: Path, clock: Clock) -> None:
    """A second stop() during the first fires only once the database is closed."""
    runner = QueuedRunner()
    store = SQLiteStore(path, clock=clock, run_in_thread=runner)
    store.start()
    runner.run_all()
    fired: list[str] = []
    store.stop().addCallback(lambda _: fired.append("first"))
    store.stop().addCallback(lambda _: fired.append("second"))
    assert fired == []
    runner.run_all()
    assert sorted(fired) == ["first", "second"]


# The real thing: a thread pool and the reactor.


@pytest_twisted.ensureDeferred
async def test_real_thread_pool_runs_all_sql_off_the_reactor(path: Path) -> None:
    """With the real reactor, every statement runs on one thread that is not the reactor's."""
    connect = RecordingConnect()
    store = SQLiteStore(path, connect=connect)
    await store.start()
    store.append_history(line("threaded"))
    await store.flush()
    assert query(path, "SELECT text FROM history") == [("threaded",)]
    assert await store.create_account("alice", "h") is True
    assert texts(await store.recent_history("lobby", 5)) == ["threaded"]
    await store.stop()
    await store.stop()
    assert len(connect.threads) == 1
    assert threading.get_ident() not in connect.threads
    assert not [t for t in threading.enumerate() if "chatd-store" in t.name]


class TriggerRecordingReactor:
    """The real reactor, except that system event triggers are only recorded."""

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.real: Any = reactor
        self.triggers: dict[object, tuple[str, str, Callable[[], Any]]] = {}

    def addSystemEventTrigger(self, phase: str, event: str, function: Callable[[], Any]) -> object:
        handle = object()
        self.triggers[handle] = (phase, event, function)
        return handle

    def removeSystemEventTrigger(self, handle: object) -> None:
        del self.triggers[handle]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest_twisted.ensureDeferred
async def test_reactor_shutdown_stops_a_forgotten_store(path: Path) -> None:
    """A store nobody stopped is flushed and closed during reactor shutdown, thread and all."""
    reactor = TriggerRecordingReactor()
    store = SQLiteStore(path, reactor=reactor)  # type: ignore[arg-type]
    await store.start()
    store.append_history(line("said just before shutdown"))
    ((phase, event, at_shutdown),) = reactor.triggers.values()
    assert (phase, event) == ("during", "shutdown")
    await at_shutdown()
    assert on_disk(path) == ["said just before shutdown"]
    assert not [t for t in threading.enumerate() if "chatd-store" in t.name]


@pytest_twisted.ensureDeferred
async def test_explicit_stop_removes_the_shutdown_trigger(path: Path) -> None:
    """Once stopped, the store leaves nothing for reactor shutdown to run."""
    reactor = TriggerRecordingReactor()
    store = SQLiteStore(path, reactor=reactor)  # type: ignore[arg-type]
    await store.start()
    await store.stop()
    assert reactor.triggers == {}
