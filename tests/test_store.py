"""Tests for chatd.store: SQLite persistence, run synchronously on a task.Clock.

All but one test pass ``run_synchronously`` and a Clock, so every statement runs at
once in the test's thread and time moves only when a test says so. One test runs
the real thread pool under the real reactor. Files are checked with plain sqlite3
connections of their own, as another process would see them.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from chatd.model import Account, Ban, HistoryEntry
from chatd.store import (
    _FORGET_PRUNED_ROOMS_SQL,
    _MIGRATIONS,
    _NOTE_ROOM_SQL,
    _PRUNE_AGE_SQL,
    _PRUNE_ROOM_SQL,
    _RECENT_HISTORY_SQL,
    _RECENT_ROOMS_SQL,
    HISTORY_ROOMS_AT_START,
    MIN_PENDING_BYTES,
    PENDING_ENTRY_OVERHEAD_BYTES,
    SCHEMA_VERSION,
    NoSuchAccount,
    Store,
    StoreClosed,
    StoreError,
    StoreNotStarted,
    run_synchronously,
)

T = TypeVar("T")

INTERVAL = 0.5


# Helpers.


def succeeded(d: Deferred[T]) -> T:
    """The result of a Deferred that has already fired successfully."""
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "the Deferred has not fired"
    return results[0]


def failed(d: Deferred[Any]) -> Failure:
    """The Failure of a Deferred that has already failed."""
    outcome: list[object] = []
    d.addBoth(outcome.append)
    assert outcome, "the Deferred has not fired"
    assert isinstance(outcome[0], Failure), f"the Deferred succeeded with {outcome[0]!r}"
    return outcome[0]


def make_store(path: Path, clock: Clock, **options: Any) -> Store:
    """A store that runs its SQL at once, in the test's thread."""
    return Store(path, clock=clock, run_in_thread=run_synchronously, **options)


def started(path: Path, clock: Clock, **options: Any) -> Store:
    store = make_store(path, clock, **options)
    succeeded(store.start())
    return store


def query(path: Path, sql: str, *params: Any) -> list[Any]:
    """Run ``sql`` on a connection of its own, as another process would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


def on_disk(path: Path) -> list[str]:
    """The text of every history line committed to the file, in order."""
    return [text for (text,) in query(path, "SELECT text FROM history ORDER BY id")]


def line(text: str, room: str = "lobby", at: float = 0.0, kind: str = "say") -> HistoryEntry:
    return HistoryEntry(room=room, kind=kind, alias="alice", text=text, at=at)


def texts(entries: Sequence[HistoryEntry]) -> list[str]:
    return [entry.text for entry in entries]


def messages(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    return [formatEvent(event) for event in events if event.get("log_level") is level]


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
def store(path: Path, clock: Clock) -> Iterator[Store]:
    store = started(path, clock)
    yield store
    succeeded(store.stop())


def refuse_history_inserts(path: Path, when: str = "1") -> None:
    """Make every insert into history fail (where ``when`` holds), like a full disk."""
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON history"
            f" WHEN {when} BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END"
        )
        db.commit()


def accept_history_inserts(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("DROP TRIGGER refuse")
        db.commit()


# Opening: schema, pragmas, versions.


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


def test_newer_schema_is_refused(path: Path, clock: Clock) -> None:
    """A database written by a newer schema fails the start instead of being misread."""
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = make_store(path, clock)
    failure = failed(store.start())
    assert failure.check(StoreError)
    assert "schema version" in str(failure.value)
    succeeded(store.stop())


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
def test_nonsense_limits_are_refused(path: Path, clock: Clock, options: dict[str, Any]) -> None:
    """Limits that would never write or would keep nothing raise ValueError."""
    with pytest.raises(ValueError):
        make_store(path, clock, **options)


def test_entries_of_unknown_kind_are_refused(store: Store) -> None:
    """History kinds (on entering the store) and ban kinds outside the known sets raise."""
    with pytest.raises(ValueError):
        store.append_history(line("hi", kind="shout"))
    with pytest.raises(ValueError):
        Ban("x", "host", "", "mod", 0.0, None)


# History: when it is written.


def test_nothing_is_written_before_the_interval(store: Store, path: Path, clock: Clock) -> None:
    """Appended lines reach the file exactly at the flush interval, not before."""
    store.append_history(line("one"))
    store.append_history(line("two"))
    clock.advance(INTERVAL - 0.01)
    assert on_disk(path) == []
    clock.advance(0.01)
    assert on_disk(path) == ["one", "two"]


def test_interval_runs_from_the_first_unflushed_line(
    store: Store, path: Path, clock: Clock
) -> None:
    """A later line does not postpone the flush the first unflushed line started."""
    store.append_history(line("one"))
    clock.advance(0.3)
    store.append_history(line("two"))
    clock.advance(INTERVAL - 0.3)
    assert on_disk(path) == ["one", "two"]
    assert clock.getDelayedCalls() == []


def test_one_transaction_per_flush(path: Path, clock: Clock) -> None:
    """All lines of one flush, in every room, go to the database in one transaction."""
    connect = RecordingConnect()
    runner = CountingRunner()
    store = Store(path, clock=clock, run_in_thread=runner, connect=connect)
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


def test_flush_writes_at_once(store: Store, path: Path, clock: Clock) -> None:
    """flush() writes pending lines immediately and cancels the timer."""
    store.append_history(line("now"))
    succeeded(store.flush())
    assert on_disk(path) == ["now"]
    assert clock.getDelayedCalls() == []


def test_flushed_line_is_readable_by_another_connection(store: Store, path: Path) -> None:
    """A flushed line is in the file, for any reader, while the store is still open."""
    store.append_history(line("durable", at=12.5))
    succeeded(store.flush())
    assert query(path, "SELECT room, kind, alias, text, at FROM history") == [
        ("lobby", "say", "alice", "durable", 12.5)
    ]


def test_stop_flushes_pending_history(path: Path, clock: Clock) -> None:
    """Lines still in memory when the store stops are written before it closes."""
    store = started(path, clock)
    store.append_history(line("last words"))
    succeeded(store.stop())
    assert on_disk(path) == ["last words"]
    assert clock.getDelayedCalls() == []


# History: reading it back.


def test_recent_history_includes_unflushed_lines_in_order(store: Store) -> None:
    """recent_history returns the newest lines of the room, flushed or not, oldest first."""
    for n in range(3):
        store.append_history(line(f"old {n}", at=n))
    succeeded(store.flush())
    store.append_history(line("elsewhere", room="dev", at=3))
    store.append_history(line("new 3", at=4))
    store.append_history(line("new 4", at=5))
    recent = succeeded(store.recent_history("lobby", 4))
    assert texts(recent) == ["old 1", "old 2", "new 3", "new 4"]
    assert texts(succeeded(store.recent_history("lobby", 10))) == [
        "old 0",
        "old 1",
        "old 2",
        "new 3",
        "new 4",
    ]
    assert succeeded(store.recent_history("lobby", 0)) == []


def test_recent_history_before(store: Store) -> None:
    """With ``before``, only lines strictly older than that time are returned."""
    for n in range(4):
        store.append_history(line(f"flushed {n}", at=10 + n))
    succeeded(store.flush())
    store.append_history(line("pending", at=14))
    assert texts(succeeded(store.recent_history("lobby", 2, before=13))) == [
        "flushed 1",
        "flushed 2",
    ]
    assert texts(succeeded(store.recent_history("lobby", 10, before=14.5))) == [
        "flushed 0",
        "flushed 1",
        "flushed 2",
        "flushed 3",
        "pending",
    ]


def test_recent_history_by_room(store: Store) -> None:
    """Every room's newest lines come back at once, flushed and unflushed merged."""
    for n in range(3):
        store.append_history(line(f"lobby {n}"))
        store.append_history(line(f"dev {n}", room="dev"))
    succeeded(store.flush())
    store.append_history(line("lobby 3"))
    store.append_history(line("quiet 0", room="quiet"))
    by_room = succeeded(store.recent_history_by_room(2))
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "dev": ["dev 1", "dev 2"],
        "lobby": ["lobby 2", "lobby 3"],
        "quiet": ["quiet 0"],
    }


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


def test_rooms_with_unflushed_lines_rank_first(store: Store) -> None:
    """The most recently active rooms count lines not yet written, which are newer."""
    for room in ("#a", "#b", "#c"):
        store.append_history(line(f"{room} 0", room=room))
    succeeded(store.flush())
    store.append_history(line("#a 1", room="#a"))
    by_room = succeeded(store.recent_history_by_room(5, 2))
    assert {room: texts(entries) for room, entries in by_room.items()} == {
        "#a": ["#a 0", "#a 1"],
        "#c": ["#c 0"],
    }


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


def test_history_entries_round_trip(store: Store) -> None:
    """Every field of an entry, actions included, comes back as it went in."""
    entry = HistoryEntry(room="dev", kind="act", alias="Bob", text="waves ☺", at=1.25)
    store.append_history(entry)
    succeeded(store.flush())
    assert succeeded(store.recent_history("dev", 1)) == [entry]


def test_history_read_during_a_write_has_each_line_once(path: Path, clock: Clock) -> None:
    """Lines being written when a query runs are returned once, whether the write succeeds."""
    runner = QueuedRunner()
    store = Store(path, clock=clock, run_in_thread=runner)
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
    store = Store(path, clock=clock, run_in_thread=runner)
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
    succeeded(started(path, clock).stop())
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


# History: when the disk fails.


def test_write_failure_keeps_entries_and_logs(store: Store, path: Path, clock: Clock) -> None:
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


def test_retries_back_off_while_writes_fail(store: Store, path: Path, clock: Clock) -> None:
    """Each failed attempt doubles the wait before the next one, so the log is not flooded."""
    refuse_history_inserts(path)
    store.append_history(line("stuck"))
    with capturedLogs() as events:
        clock.pump([INTERVAL, 1.0, 2.0, 4.0 - 0.01])
    assert len(messages(events, LogLevel.error)) == 3
    assert [call.getTime() - clock.seconds() for call in clock.getDelayedCalls()] == [
        pytest.approx(0.01)
    ]
    accept_history_inserts(path)
    clock.advance(0.01)
    assert on_disk(path) == ["stuck"]


def test_buffer_cap_drops_oldest_and_logs(path: Path, clock: Clock) -> None:
    """Past ``max_pending_entries`` unwritten lines the oldest go, and the loss is logged."""
    store = started(path, clock, max_pending_entries=3)
    refuse_history_inserts(path)
    with capturedLogs() as events:
        for n in range(6):
            store.append_history(line(f"line {n}"))  # the first is written at once, and fails
        clock.advance(2 * INTERVAL)  # the retry, after the backoff, not at each line
    errors = messages(events, LogLevel.error)
    assert len(errors) == 3
    assert "could not write 1 history entries" in errors[0]
    assert "3 oldest entries dropped" in errors[1]
    assert "could not write 3 history entries" in errors[2]
    accept_history_inserts(path)
    clock.advance(4 * INTERVAL)
    assert on_disk(path) == ["line 3", "line 4", "line 5"]
    succeeded(store.stop())


def test_buffer_is_capped_in_bytes(path: Path, clock: Clock) -> None:
    """Long lines are capped by ``max_pending_bytes``, counting their UTF-8 bytes."""
    store = started(path, clock, max_pending_bytes=MIN_PENDING_BYTES)
    refuse_history_inserts(path)
    long_line = "\N{GRINNING FACE}" * 500  # 2,000 bytes in UTF-8
    fits = MIN_PENDING_BYTES // (2000 + 3 + PENDING_ENTRY_OVERHEAD_BYTES)
    with capturedLogs() as events:
        for n in range(100):
            store.append_history(line(f"{n:03d}{long_line}"))
        clock.advance(30.0)
        accept_history_inserts(path)
        clock.advance(30.0)
    assert [text[:3] for text in on_disk(path)] == [f"{n:03d}" for n in range(100 - fits, 100)]
    assert sum(event.get("lost", 0) for event in events) == 100 - fits
    succeeded(store.stop())


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
        s.count("CAST(") for s in connect.statements if s.startswith("INSERT INTO history ")
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


def test_waiting_lines_are_compact(path: Path, clock: Clock) -> None:
    """A line waiting to be written costs at most its UTF-8 text and 300 bytes, even when
    one emoji would make Python keep it at four bytes per character."""
    # Nothing is written: the clock stays put and the lines stay under the early write.
    store = started(path, clock, max_pending_entries=100_000, max_pending_bytes=1 << 30)
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


def test_a_line_utf_8_cannot_encode_does_not_block_the_writer(store: Store, path: Path) -> None:
    """A lone surrogate is written as "?" rather than failing its batch, and every retry."""
    store.append_history(line("bad \ud800 half"))
    store.append_history(line("next"))
    succeeded(store.flush())
    assert on_disk(path) == ["bad ? half", "next"]


def test_explicit_flush_reports_failure(store: Store, path: Path) -> None:
    """flush() fails when the write fails, and the lines stay for the next attempt."""
    refuse_history_inserts(path)
    store.append_history(line("kept"))
    with capturedLogs():
        assert failed(store.flush()).check(sqlite3.Error)
    accept_history_inserts(path)
    succeeded(store.flush())
    assert on_disk(path) == ["kept"]


def test_stop_while_writes_fail_logs_the_loss_and_completes(path: Path, clock: Clock) -> None:
    """Stopping with unwritable lines logs how many were lost and still closes cleanly."""
    store = started(path, clock)
    refuse_history_inserts(path)
    store.append_history(line("a"))
    store.append_history(line("b"))
    with capturedLogs() as events:
        assert succeeded(store.stop()) is None
    assert any("2 history entries lost" in error for error in messages(events, LogLevel.error))
    assert clock.getDelayedCalls() == []


# Life cycle.


def test_use_before_start_raises(path: Path, clock: Clock) -> None:
    """Any use of a store that was never started raises StoreNotStarted at once."""
    store = make_store(path, clock)
    with pytest.raises(StoreNotStarted):
        store.append_history(line("early"))
    with pytest.raises(StoreNotStarted):
        store.get_setting("motd")
    with pytest.raises(StoreNotStarted):
        store.flush()
    assert not path.exists()


def test_use_after_stop_fails_softly(path: Path, clock: Clock) -> None:
    """After stop, queries fail with StoreClosed and history lines are dropped with one warning."""
    store = started(path, clock)
    succeeded(store.stop())
    assert failed(store.get_account("alice")).check(StoreClosed)
    assert failed(store.recent_history("lobby", 5)).check(StoreClosed)
    with capturedLogs() as events:
        store.append_history(line("too late"))
        store.append_history(line("later still"))
    assert len(messages(events, LogLevel.warn)) == 1
    assert clock.getDelayedCalls() == []


def test_stop_twice_and_stop_unstarted_are_harmless(path: Path, clock: Clock) -> None:
    """stop() on a stopped or never-started store just succeeds."""
    store = started(path, clock)
    succeeded(store.stop())
    succeeded(store.stop())
    succeeded(make_store(path, clock).stop())


def test_stop_called_again_while_stopping_waits_for_the_close(path: Path, clock: Clock) -> None:
    """A second stop() during the first fires only once the database is closed."""
    runner = QueuedRunner()
    store = Store(path, clock=clock, run_in_thread=runner)
    store.start()
    runner.run_all()
    fired: list[str] = []
    store.stop().addCallback(lambda _: fired.append("first"))
    store.stop().addCallback(lambda _: fired.append("second"))
    assert fired == []
    runner.run_all()
    assert sorted(fired) == ["first", "second"]


def test_start_twice_is_refused(store: Store) -> None:
    """A store starts once; a second start is a wiring mistake and raises."""
    with pytest.raises(StoreError):
        store.start()


# Accounts.


def test_accounts_are_unique_case_insensitively(store: Store, clock: Clock) -> None:
    """An alias can be registered once, whatever its case, and is found in any case."""
    clock.advance(1000)
    assert succeeded(store.create_account("Alice", "hash-1")) is True
    assert succeeded(store.create_account("aLICE", "hash-2")) is False
    assert succeeded(store.get_account("ALICE")) == Account("Alice", "hash-1", 1000.0, ())
    assert succeeded(store.get_account("bob")) is None


def test_registered_keys_lists_every_account(store: Store) -> None:
    """registered_keys gives the case-insensitive key of every registered alias."""
    assert succeeded(store.registered_keys()) == set()
    succeeded(store.create_account("Alice", "h"))
    succeeded(store.create_account("bob", "h"))
    assert succeeded(store.registered_keys()) == {"alice", "bob"}


def test_password_hash_can_be_replaced(store: Store) -> None:
    """set_password_hash replaces the stored string, and reports unknown aliases."""
    succeeded(store.create_account("alice", "old"))
    assert succeeded(store.set_password_hash("Alice", "new")) is True
    assert succeeded(store.set_password_hash("nobody", "x")) is False
    account = succeeded(store.get_account("alice"))
    assert account is not None
    assert account.password_hash == "new"


def test_ignores_are_replaced_in_order(store: Store) -> None:
    """set_ignores replaces the whole list, keeping its order."""
    succeeded(store.create_account("alice", "h"))
    succeeded(store.set_ignores("alice", ["zed", "Bob"]))
    succeeded(store.set_ignores("ALICE", ["carol", "zed", "bob"]))
    account = succeeded(store.get_account("alice"))
    assert account is not None
    assert account.ignores == ("carol", "zed", "bob")


def test_ignores_of_an_unknown_account_fail(store: Store) -> None:
    """set_ignores for an alias nobody registered fails with NoSuchAccount."""
    assert failed(store.set_ignores("ghost", ["alice"])).check(NoSuchAccount)


# Bans, settings, topics.


def test_bans_expire(store: Store) -> None:
    """active_bans leaves out bans expired by ``now`` and deletes them for good."""
    forever = Ban("troll", "alias", "spam", "mod", 1.0, None)
    later = Ban("10.0.0.0/8", "cidr", "flood", "mod", 2.0, 100.0)
    soon = Ban("192.0.2.7", "ip", "abuse", "mod", 3.0, 50.0)
    for ban in (forever, later, soon):
        succeeded(store.add_ban(ban))
    assert succeeded(store.active_bans(now=10)) == [forever, later, soon]
    assert succeeded(store.active_bans(now=50)) == [forever, later]
    assert succeeded(store.active_bans(now=0)) == [forever, later]  # soon is gone
    assert succeeded(store.active_bans(now=100)) == [forever]


def test_ban_on_the_same_mask_replaces(store: Store) -> None:
    """Adding a ban on a mask already banned (in any case) replaces it; removal reports."""
    succeeded(store.add_ban(Ban("troll", "alias", "spam", "mod", 1.0, 10.0)))
    replacement = Ban("Troll", "alias", "again", "op", 5.0, None)
    succeeded(store.add_ban(replacement))
    assert succeeded(store.active_bans(now=20)) == [replacement]
    assert succeeded(store.remove_ban("TROLL")) is True
    assert succeeded(store.remove_ban("troll")) is False
    assert succeeded(store.active_bans(now=20)) == []


def test_settings_set_and_delete(store: Store) -> None:
    """A setting can be set, replaced and deleted with None."""
    assert succeeded(store.get_setting("motd")) is None
    succeeded(store.set_setting("motd", "Hello"))
    succeeded(store.set_setting("motd", "Be nice"))
    assert succeeded(store.get_setting("motd")) == "Be nice"
    succeeded(store.set_setting("motd", None))
    assert succeeded(store.get_setting("motd")) is None
    succeeded(store.set_setting("motd", None))  # deleting nothing is fine


def test_topics(store: Store) -> None:
    """Topics can be set, replaced and cleared per room."""
    succeeded(store.set_topic("lobby", "Welcome", "alice"))
    succeeded(store.set_topic("dev", "Ship it", "bob"))
    succeeded(store.set_topic("lobby", "Welcome back", "carol"))
    assert succeeded(store.topics()) == {"dev": "Ship it", "lobby": "Welcome back"}
    succeeded(store.set_topic("dev", None, "bob"))
    assert succeeded(store.topics()) == {"lobby": "Welcome back"}


def test_start_up_reads_only_the_topics_set_last(store: Store, clock: Clock) -> None:
    """However many rooms have a topic, start-up reads the newest few; others one by one."""
    for n in range(300):
        clock.advance(1)
        succeeded(store.set_topic(f"#r{n}", f"topic {n}", "alice"))
    topics = succeeded(store.topics(100))
    assert list(topics)[:2] == ["#r299", "#r298"]
    assert len(topics) == 100 and "#r199" not in topics
    assert succeeded(store.topic("#R5")) == "topic 5"
    assert succeeded(store.topic("#nothing")) is None


# Across restarts.


def test_everything_survives_close_and_reopen(path: Path, clock: Clock) -> None:
    """A new store on the same file sees the history, accounts, bans, settings and topics."""
    store = started(path, clock)
    store.append_history(line("flushed"))
    succeeded(store.flush())
    store.append_history(line("written at stop"))
    succeeded(store.create_account("Alice", "hash"))
    succeeded(store.set_ignores("alice", ["bob"]))
    ban = Ban("192.0.2.0/24", "cidr", "spam", "mod", 1.0, None)
    succeeded(store.add_ban(ban))
    succeeded(store.set_setting("motd", "Hi"))
    succeeded(store.set_topic("lobby", "Chat", "alice"))
    succeeded(store.stop())

    again = started(path, Clock())
    assert texts(succeeded(again.recent_history("lobby", 10))) == ["flushed", "written at stop"]
    assert succeeded(again.get_account("alice")) == Account("Alice", "hash", 0.0, ("bob",))
    assert succeeded(again.active_bans(now=5)) == [ban]
    assert succeeded(again.get_setting("motd")) == "Hi"
    assert succeeded(again.topics()) == {"lobby": "Chat"}
    succeeded(again.stop())


# The real thing: a thread pool and the reactor.


@pytest_twisted.ensureDeferred
async def test_real_thread_pool_runs_all_sql_off_the_reactor(path: Path) -> None:
    """With the real reactor, every statement runs on one thread that is not the reactor's."""
    connect = RecordingConnect()
    store = Store(path, connect=connect)
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
    store = Store(path, reactor=reactor)  # type: ignore[arg-type]
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
    store = Store(path, reactor=reactor)  # type: ignore[arg-type]
    await store.start()
    await store.stop()
    assert reactor.triggers == {}
