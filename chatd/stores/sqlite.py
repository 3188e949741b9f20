"""chatd's persistent state in one SQLite file: room history, accounts, bans, settings, topics.

The reactor never touches the file: every SQL statement runs on one dedicated
thread that owns the ``sqlite3`` connection, so a slow disk delays answers but
never the chat. With one thread, work runs in the order it was asked for and no
two statements ever race on the connection.

History is buffered by :class:`chatd.stores.base.BufferedStore` and each batch
is written in one transaction. Accounts, bans, settings, topics and what waits for
registered aliases (messages, mentions) are rare and
precious, so each change commits before its Deferred fires.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A committed
transaction survives the chatd process being killed, since it is already in the
operating system's hands; a power loss or kernel crash may lose the last
transactions before the next checkpoint (never corrupting the file). That is the
usual trade for a chat log, and it spares an fsync per flush.

If the disk fails (full, read-only, gone), the store logs it and keeps the
unwritten lines for the next attempt, up to a cap past which the oldest are
dropped and counted. The store never blocks the reactor and never lets a disk
error escape into the chat path.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from chatd.files import create_private
from chatd.interfaces import TOPICS_AT_START, IChatStore
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
    FLUSH_INTERVAL_SECONDS,
    HISTORY_PER_ROOM,
    MAX_PENDING_BYTES,
    MAX_PENDING_ENTRIES,
    BufferedStore,
    NoSuchAccount,
    PendingRow,
    StoreClosed,
    StoreError,
)
from chatd.text import alias_key

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 5.0


class RunInThread(Protocol):
    """Runs ``function(*args)`` on the database thread; the Deferred fires on the reactor."""

    def __call__(self, function: Callable[..., T], /, *args: Any) -> Deferred[T]: ...


def run_synchronously(function: Callable[..., T], /, *args: Any) -> Deferred[T]:
    """A :class:`RunInThread` for tests and tools: call at once, in the calling thread.

    With it (and a ``task.Clock``) a store runs deterministically with no reactor.
    """
    try:
        return succeed(function(*args))
    except Exception:
        return fail()


Connect = Callable[[Path], sqlite3.Connection]


# The schema, as migrations: migration N (counting from 1) takes a database from
# ``PRAGMA user_version`` N-1 to N. Append new ones; never edit a published one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            room TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('say', 'act')),
            alias TEXT NOT NULL,
            text TEXT NOT NULL,
            at REAL NOT NULL
        )
        """,
        # Recent lines of a room, and pruning a room, walk this index, never the table.
        "CREATE INDEX history_room_id ON history (room, id)",
        # Pruning by age deletes from the old end of this index. Only a store with
        # a maximum age keeps it (see _AGE_INDEX_SQL): without one it is never read.
        "CREATE INDEX history_at ON history (at)",
        """
        CREATE TABLE accounts (
            alias_key TEXT PRIMARY KEY,
            alias TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE account_ignores (
            account_key TEXT NOT NULL
                REFERENCES accounts (alias_key) ON DELETE CASCADE ON UPDATE CASCADE,
            position INTEGER NOT NULL,
            ignored TEXT NOT NULL,
            PRIMARY KEY (account_key, position)
        ) WITHOUT ROWID
        """,
        # NOCASE: "Alice" and "alice", or two spellings of an IPv6 address, are one ban.
        """
        CREATE TABLE bans (
            mask TEXT COLLATE NOCASE PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('alias', 'ip', 'cidr')),
            reason TEXT NOT NULL,
            set_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL
        )
        """,
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """
        CREATE TABLE topics (
            room TEXT PRIMARY KEY,
            topic TEXT NOT NULL,
            set_by TEXT NOT NULL,
            set_at REAL NOT NULL
        )
        """,
    ),
    (
        # SSH public keys that log their owner in as a registered alias (/sshkey).
        """
        CREATE TABLE ssh_keys (
            account_key TEXT NOT NULL
                REFERENCES accounts (alias_key) ON DELETE CASCADE ON UPDATE CASCADE,
            fingerprint TEXT NOT NULL,
            public_key TEXT NOT NULL,
            added_at REAL NOT NULL,
            PRIMARY KEY (account_key, fingerprint)
        )
        """,
    ),
    (
        # Each room's newest line, so that the most recently active rooms are an
        # index walk however many rooms ever spoke. A room whose lines are all
        # pruned by age is removed; the store keeps it up to date on every write.
        """
        CREATE TABLE history_rooms (
            room TEXT PRIMARY KEY,
            last_id INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX history_rooms_last_id ON history_rooms (last_id)",
        """
        INSERT INTO history_rooms (room, last_id)
        SELECT room, MAX(id) FROM history GROUP BY room
        """,
    ),
    (
        # Private messages kept for a registered alias while it is offline, by its
        # alias key (a box per recipient, bounded by the caller's limits).
        """
        CREATE TABLE waiting_messages (
            id INTEGER PRIMARY KEY,
            recipient TEXT NOT NULL,
            sender TEXT NOT NULL,
            sender_key TEXT NOT NULL,
            text TEXT NOT NULL,
            at REAL NOT NULL
        )
        """,
        "CREATE INDEX waiting_messages_recipient ON waiting_messages (recipient, id)",
        # Lines that mentioned a registered alias while it was away, by its key.
        """
        CREATE TABLE mentions (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            room TEXT NOT NULL,
            kind TEXT NOT NULL,
            alias TEXT NOT NULL,
            text TEXT NOT NULL,
            at REAL NOT NULL
        )
        """,
        "CREATE INDEX mentions_account ON mentions (account, id)",
        # The room each registered alias offline was last in, and since when.
        """
        CREATE TABLE away_rooms (
            account TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            since REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Lines inserted by one statement at most (SQLite's cap on parameters permitting:
# 32,766 since 3.32). One statement for many rows, not executemany: sqlite3 lets go
# of the GIL and takes it back at every statement step, and while the reactor is
# busy each take-back waits up to the switch interval (5 ms). A batch is cut into
# statements of powers of two rows, so that a dozen statements, compiled once and
# cached, serve every batch: compiling one while the reactor is busy takes long.
INSERT_ROWS_PER_STATEMENT = 4096
_HISTORY_COLUMNS = 5
# SQLite's cap on parameters per statement before 3.32.
OLD_MAX_PARAMETERS = 999


def _insert_history_sql(rows: int) -> str:
    """An INSERT of ``rows`` lines (see :func:`_history_parameters`)."""
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO history (room, kind, alias, text, at) VALUES {values}"


def _history_parameters(rows: list[PendingRow]) -> list[object]:
    """The parameters of an INSERT of ``rows``, texts decoded from UTF-8 here.

    Decoding here, on the database thread, and binding a str costs the thread less
    than binding the bytes and having SQLite ``CAST(? AS TEXT)`` them: a batch of
    2,048 lines written and pruned in a room of 10,000 took 1.33 us a line with the
    cast, 1.15 us with this.
    """
    return list(
        chain.from_iterable(
            (room, kind, alias, text.decode("utf-8"), at) for room, kind, alias, text, at in rows
        )
    )


def _statement_sizes(rows: int, most: int) -> Iterator[int]:
    """``rows`` cut into statements of powers of two, none over ``most`` (one too)."""
    while rows >= most:
        yield most
        rows -= most
    size = most
    while rows:
        size //= 2
        if rows >= size:
            yield size
            rows -= size


# Records a room's newest line, after its lines of a batch are in.
_NOTE_ROOM_SQL = """
    INSERT INTO history_rooms (room, last_id)
    SELECT ?1, MAX(id) FROM history WHERE room = ?1
    ON CONFLICT (room) DO UPDATE SET last_id = excluded.last_id
"""
# Deletes the room's lines beyond the newest N: the subquery steps N entries down
# the (room, id) index and the delete takes the range below, O(N + deleted).
_PRUNE_ROOM_SQL = """
    DELETE FROM history WHERE room = ?1 AND id <= (
        SELECT id FROM history WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2
    )
"""
_PRUNE_AGE_SQL = "DELETE FROM history WHERE at < ?"
# The index that pruning by age walks, made when the store is opened with a maximum
# age and dropped when without: every line written updates it and every line pruned
# by room deletes from it, a third of the writer's work that only pruning by age uses.
_AGE_INDEX_SQL = "CREATE INDEX IF NOT EXISTS history_at ON history (at)"
_NO_AGE_INDEX_SQL = "DROP INDEX IF EXISTS history_at"
# After pruning by age: a room whose newest line is older than every line left has
# none left. A room whose lines were all pruned while an older line of another room
# survived (times said out of write order) stays listed; reads skip it, as empty.
_FORGET_PRUNED_ROOMS_SQL = """
    DELETE FROM history_rooms
    WHERE last_id < IFNULL((SELECT MIN(id) FROM history), 9223372036854775807)
"""
_RECENT_HISTORY_SQL = """
    SELECT room, kind, alias, text, at FROM history
    WHERE room = ?1 AND (?2 IS NULL OR at < ?2)
    ORDER BY id DESC LIMIT ?3
"""
# The most recently active rooms, newest first: a walk down the last_id index.
_RECENT_ROOMS_SQL = "SELECT room FROM history_rooms ORDER BY last_id DESC LIMIT ?"


def _max_parameters(connection: sqlite3.Connection) -> int:
    """How many parameters one statement may take on ``connection``.

    Python 3.10 cannot ask (``getlimit`` came in 3.11): it assumes the old default
    of 999, which every SQLite allows.
    """
    if sys.version_info >= (3, 11):
        return connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return OLD_MAX_PARAMETERS


@contextmanager
def _transaction(
    connection: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE"
) -> Iterator[sqlite3.Connection]:
    """Run the block as one transaction: all of it is committed, or none of it.

    Writers begin IMMEDIATE, taking the write lock up front, so a transaction
    never fails half-way for want of a lock it could have waited for.
    """
    connection.execute(begin)
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            # A failing rollback must not hide the error that caused it.
            with suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema up to SCHEMA_VERSION, in one transaction."""
    with _transaction(connection):
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {version}; this chatd knows only "
                f"up to {SCHEMA_VERSION} (was it written by a newer chatd?)"
            )
        for migration in _MIGRATIONS[version:]:
            for statement in migration:
                connection.execute(statement)
        if version != SCHEMA_VERSION:
            # PRAGMA takes no parameters; the value is our own integer.
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")


def _history_entry(row: tuple[Any, ...]) -> HistoryEntry:
    return HistoryEntry._make(row)


class _Database:
    """The sqlite3 connection and every SQL statement.

    Every method runs on the store's database thread and nowhere else (sqlite3's
    own thread check enforces it). Nothing here knows about the reactor.
    """

    def __init__(
        self, path: Path, connect: Connect, busy_timeout_seconds: float, history_per_room: int
    ) -> None:
        self._path = path
        self._connect = connect
        self._busy_timeout_ms = round(busy_timeout_seconds * 1000)
        self._history_per_room = history_per_room
        self._prune_every = max(1, history_per_room // 10)
        self._rows_per_insert = INSERT_ROWS_PER_STATEMENT
        # Lines added per room since it was last pruned; a room not listed is
        # pruned at its next write (the count before this process is unknown).
        self._added_since_prune: dict[str, int] = {}
        self._connection: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreClosed(f"the database {self._path} is not open")
        return self._connection

    # Opening and closing.

    def open(self, cutoff: float | None) -> str:
        """Open (creating if need be) and migrate the database; return its journal mode.

        With a ``cutoff`` (the store keeps lines up to an age) the lines older are
        deleted and the index on their time is made if need be; without, it is dropped.
        """
        create_private(self._path)
        connection = self._connect(self._path)
        try:
            connection.isolation_level = None  # we issue BEGIN and COMMIT ourselves
            journal_mode = self._configure(connection)
            _migrate(connection)
            with _transaction(connection):
                if cutoff is None:
                    connection.execute(_NO_AGE_INDEX_SQL)
                else:
                    connection.execute(_AGE_INDEX_SQL)
                    connection.execute(_PRUNE_AGE_SQL, (cutoff,))
                    connection.execute(_FORGET_PRUNED_ROOMS_SQL)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        most = _max_parameters(connection) // _HISTORY_COLUMNS
        self._rows_per_insert = min(INSERT_ROWS_PER_STATEMENT, 1 << (most.bit_length() - 1))
        return journal_mode

    def _configure(self, connection: sqlite3.Connection) -> str:
        # PRAGMAs take no parameters; every value here is our own constant or int.
        connection.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
        journal_mode: str = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        return journal_mode

    def close(self) -> None:
        """Close the connection; harmless if it is not open."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    # History.

    def write_history(self, rows: list[PendingRow], cutoff: float | None) -> None:
        """Insert ``rows``, note and prune the rooms they touch, in one transaction."""
        added = Counter(row[0] for row in rows)
        with _transaction(self._db) as db:
            start = 0
            for size in _statement_sizes(len(rows), self._rows_per_insert):
                chunk = rows[start : start + size]
                db.execute(_insert_history_sql(size), _history_parameters(chunk))
                start += size
            db.executemany(_NOTE_ROOM_SQL, [(room,) for room in added])
            for room in sorted(added):
                # Pruning walks the room's newest N index entries, so it is done
                # once a tenth of N has been added, not on every write: a room
                # holds at most 10% more than its limit between prunes.
                since = self._added_since_prune.get(room)
                if since is None or since + added[room] >= self._prune_every:
                    db.execute(_PRUNE_ROOM_SQL, (room, self._history_per_room))
                    self._added_since_prune[room] = 0
                else:
                    self._added_since_prune[room] = since + added[room]
            if cutoff is not None:
                db.execute(_PRUNE_AGE_SQL, (cutoff,))
                db.execute(_FORGET_PRUNED_ROOMS_SQL)

    def recent_history(self, room: str, limit: int, before: float | None) -> list[HistoryEntry]:
        """The newest ``limit`` lines of ``room`` (before ``before``), oldest first."""
        rows = self._db.execute(_RECENT_HISTORY_SQL, (room, before, limit)).fetchall()
        return [_history_entry(row) for row in reversed(rows)]

    def recent_history_by_room(
        self, per_room: int, max_rooms: int, also: list[str]
    ) -> dict[str, list[HistoryEntry]]:
        """The newest ``per_room`` lines of the ``max_rooms`` most recently active
        rooms, newest room first, and of the rooms ``also``, from one snapshot."""
        with _transaction(self._db, "BEGIN") as db:
            recent = [room for (room,) in db.execute(_RECENT_ROOMS_SQL, (max_rooms,))]
            rooms = dict.fromkeys([*also, *recent])
            by_room = {room: self.recent_history(room, per_room, None) for room in rooms}
        return {room: entries for room, entries in by_room.items() if entries}

    # Accounts.

    def get_account(self, key: str) -> Account | None:
        """The account registered under alias key ``key``, with its ignore list."""
        with _transaction(self._db, "BEGIN") as db:
            row = db.execute(
                "SELECT alias, password_hash, created_at FROM accounts WHERE alias_key = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            ignores = db.execute(
                "SELECT ignored FROM account_ignores WHERE account_key = ? ORDER BY position",
                (key,),
            ).fetchall()
        alias, password_hash, created_at = row
        return Account(alias, password_hash, created_at, tuple(ignored for (ignored,) in ignores))

    def registered_keys(self) -> set[str]:
        """The alias keys of every account."""
        return {key for (key,) in self._db.execute("SELECT alias_key FROM accounts")}

    def create_account(self, key: str, alias: str, password_hash: str, created_at: float) -> bool:
        """Register ``alias`` unless its key is taken; one statement, so atomic."""
        cursor = self._db.execute(
            "INSERT INTO accounts (alias_key, alias, password_hash, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (alias_key) DO NOTHING",
            (key, alias, password_hash, created_at),
        )
        return cursor.rowcount == 1

    def set_password_hash(self, key: str, password_hash: str) -> bool:
        """Replace the account's hash; False if there is no such account."""
        cursor = self._db.execute(
            "UPDATE accounts SET password_hash = ? WHERE alias_key = ?", (password_hash, key)
        )
        return cursor.rowcount == 1

    def add_ssh_key(self, key: str, fingerprint: str, public_key: str, added_at: float) -> bool:
        """Bind an SSH key to the account; False if it was bound already."""
        cursor = self._db.execute(
            "INSERT INTO ssh_keys (account_key, fingerprint, public_key, added_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (key, fingerprint, public_key, added_at),
        )
        return cursor.rowcount == 1

    def remove_ssh_key(self, key: str, fingerprint: str) -> bool:
        """Unbind an SSH key; False if it was not bound."""
        cursor = self._db.execute(
            "DELETE FROM ssh_keys WHERE account_key = ? AND fingerprint = ?", (key, fingerprint)
        )
        return cursor.rowcount == 1

    def ssh_keys(self, key: str) -> list[tuple[str, str]]:
        """The (fingerprint, public key) pairs bound to the account, oldest first."""
        return self._db.execute(
            "SELECT fingerprint, public_key FROM ssh_keys WHERE account_key = ? ORDER BY added_at",
            (key,),
        ).fetchall()

    def set_ignores(self, key: str, ignores: tuple[str, ...]) -> None:
        """Replace the account's ignore list, keeping its order."""
        with _transaction(self._db) as db:
            if db.execute("SELECT 1 FROM accounts WHERE alias_key = ?", (key,)).fetchone() is None:
                raise NoSuchAccount(f"no account is registered as {key}")
            db.execute("DELETE FROM account_ignores WHERE account_key = ?", (key,))
            db.executemany(
                "INSERT INTO account_ignores (account_key, position, ignored) VALUES (?, ?, ?)",
                [(key, position, ignored) for position, ignored in enumerate(ignores)],
            )

    # Bans.

    def add_ban(self, ban: Ban) -> None:
        """Record ``ban``, replacing any ban on the same mask."""
        self._db.execute(
            "INSERT INTO bans (mask, kind, reason, set_by, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (mask) DO UPDATE SET"
            " mask = excluded.mask, kind = excluded.kind, reason = excluded.reason,"
            " set_by = excluded.set_by, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at",
            (ban.mask, ban.kind, ban.reason, ban.set_by, ban.created_at, ban.expires_at),
        )

    def remove_ban(self, mask: str) -> bool:
        """Lift the ban on ``mask``; False if there was none."""
        return self._db.execute("DELETE FROM bans WHERE mask = ?", (mask,)).rowcount == 1

    def active_bans(self, now: float) -> list[Ban]:
        """Delete the bans expired at ``now`` and return the rest, oldest first."""
        with _transaction(self._db) as db:
            db.execute("DELETE FROM bans WHERE expires_at <= ?", (now,))
            rows = db.execute(
                "SELECT mask, kind, reason, set_by, created_at, expires_at FROM bans"
                " ORDER BY created_at, mask"
            ).fetchall()
        return [Ban(*row) for row in rows]

    # Settings and topics.

    def get_setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else cast(str, row[0])

    def set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self._db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def set_topic(self, room: str, topic: str | None, set_by: str, set_at: float) -> None:
        if topic is None:
            self._db.execute("DELETE FROM topics WHERE room = ?", (room,))
        else:
            self._db.execute(
                "INSERT INTO topics (room, topic, set_by, set_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (room) DO UPDATE SET topic = excluded.topic,"
                " set_by = excluded.set_by, set_at = excluded.set_at",
                (room, topic, set_by, set_at),
            )

    def topics(self, max_rooms: int) -> dict[str, str]:
        return dict(
            self._db.execute(
                "SELECT room, topic FROM topics ORDER BY set_at DESC LIMIT ?", (max_rooms,)
            )
        )

    # What waits for registered aliases.

    def keep_message(
        self,
        recipient: str,
        message: WaitingMessage,
        per_recipient: int,
        per_sender: int,
        not_before: float,
        sender_key: str,
    ) -> str:
        """Keep ``message`` unless a bound says no; checked and written in one transaction."""
        with _transaction(self._db) as db:
            db.execute(
                "DELETE FROM waiting_messages WHERE recipient = ? AND at < ?",
                (recipient, not_before),
            )
            ((held, from_sender),) = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(sender_key = ?), 0) FROM waiting_messages"
                " WHERE recipient = ?",
                (sender_key, recipient),
            ).fetchall()
            if held >= per_recipient:
                return BOX_FULL
            if from_sender >= per_sender:
                return SENDER_FULL
            db.execute(
                "INSERT INTO waiting_messages (recipient, sender, sender_key, text, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (recipient, message.sender, sender_key, message.text, message.at),
            )
        return KEPT

    def waiting_messages(self, recipient: str, not_before: float) -> list[WaitingMessage]:
        rows = self._db.execute(
            "SELECT sender, text, at, id FROM waiting_messages"
            " WHERE recipient = ? AND at >= ? ORDER BY id",
            (recipient, not_before),
        ).fetchall()
        return [WaitingMessage(sender, text, at, str(row_id)) for sender, text, at, row_id in rows]

    def drop_messages(self, recipient: str, handles: tuple[str, ...]) -> None:
        with _transaction(self._db) as db:
            db.executemany(
                "DELETE FROM waiting_messages WHERE recipient = ? AND id = ?",
                [(recipient, int(handle)) for handle in handles],
            )

    def add_mention(
        self, account: str, entry: HistoryEntry, limit: int, not_before: float
    ) -> None:
        with _transaction(self._db) as db:
            db.execute(
                "INSERT INTO mentions (account, room, kind, alias, text, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (account, *entry),
            )
            db.execute(
                "DELETE FROM mentions WHERE account = ? AND (at < ? OR id NOT IN"
                " (SELECT id FROM mentions WHERE account = ? ORDER BY id DESC LIMIT ?))",
                (account, not_before, account, limit),
            )

    def mentions_of(self, account: str, not_before: float) -> list[HistoryEntry]:
        rows = self._db.execute(
            "SELECT room, kind, alias, text, at FROM mentions"
            " WHERE account = ? AND at >= ? ORDER BY id",
            (account, not_before),
        ).fetchall()
        return [_history_entry(row) for row in rows]

    def clear_mentions(self, account: str) -> None:
        self._db.execute("DELETE FROM mentions WHERE account = ?", (account,))

    def set_away_room(self, account: str, room: str | None, since: float) -> None:
        if room is None:
            self._db.execute("DELETE FROM away_rooms WHERE account = ?", (account,))
        else:
            self._db.execute(
                "INSERT INTO away_rooms (account, room, since) VALUES (?, ?, ?)"
                " ON CONFLICT (account) DO UPDATE"
                " SET room = excluded.room, since = excluded.since",
                (account, room, since),
            )

    def away_rooms(self) -> dict[str, tuple[str, float]]:
        rows = self._db.execute("SELECT account, room, since FROM away_rooms")
        return {account: (room, since) for account, room, since in rows}

    def topic(self, room: str) -> str | None:
        row = self._db.execute(
            "SELECT topic FROM topics WHERE room = ? COLLATE NOCASE ORDER BY set_at DESC LIMIT 1",
            (room,),
        ).fetchone()
        return None if row is None else str(row[0])


@implementer(IChatStore)
class SQLiteStore(BufferedStore):
    """chatd's persistent state in one SQLite file, used from the reactor thread.

    Call :meth:`start` once and wait for it; :meth:`stop` flushes and closes.
    Using the store before ``start`` raises :class:`StoreNotStarted` at once (a
    wiring mistake); after ``stop`` the Deferreds fail with :class:`StoreClosed`
    (a race with shutdown, which callers handle like any disk error).

    Room names are stored as given: callers pass their canonical form. Aliases of
    accounts are keyed by :func:`chatd.text.alias_key`, so they are unique
    regardless of case.

    ``reactor`` runs the thread pool's results back on the reactor thread;
    ``clock`` (default: the reactor) times flushes and dates accounts and topics.
    Tests pass a ``task.Clock`` and ``run_in_thread=run_synchronously`` and then
    need no reactor or thread at all. ``connect`` opens the sqlite3 connection
    (a hook for instrumentation and tests).
    """

    log = Logger()

    def __init__(
        self,
        path: Path,
        *,
        reactor: IReactorFromThreads | None = None,
        clock: IReactorTime | None = None,
        run_in_thread: RunInThread | None = None,
        connect: Connect = sqlite3.connect,
        flush_interval_seconds: float = FLUSH_INTERVAL_SECONDS,
        history_per_room: int = HISTORY_PER_ROOM,
        history_max_age_seconds: float | None = None,
        max_pending_entries: int = MAX_PENDING_ENTRIES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        if reactor is None and (run_in_thread is None or clock is None):
            from twisted.internet import reactor as default_reactor

            reactor = cast(IReactorFromThreads, default_reactor)
        super().__init__(
            clock if clock is not None else cast(IReactorTime, reactor),
            flush_interval_seconds=flush_interval_seconds,
            history_per_room=history_per_room,
            history_max_age_seconds=history_max_age_seconds,
            max_pending_entries=max_pending_entries,
            max_pending_bytes=max_pending_bytes,
        )
        self.path = path
        self.location = str(path)
        self._reactor = reactor
        self._pool: ThreadPool | None = None
        if run_in_thread is None:
            # One thread: it owns the connection, and work runs in the order asked for.
            self._pool = ThreadPool(1, 1, name="chatd-store")
            # The reactor is never None here: the default one was taken above.
            threads = cast(IReactorFromThreads, reactor)
            run_in_thread = cast(RunInThread, partial(deferToThreadPool, threads, self._pool))
        self._run_in_thread = run_in_thread
        self._db = _Database(path, connect, busy_timeout_seconds, history_per_room)
        self._shutdown_trigger: Any = None
        # The batch being written (at most one): a failed one goes back to _pending.
        self._in_flight: list[PendingRow] = []

    # Life cycle.

    def _open(self) -> Deferred[None]:
        """Open the database on the store's thread, creating or migrating the schema.

        Calls made before the returned Deferred fires are fine: they run after the
        opening, in order.
        """
        if self._pool is not None:
            self._pool.start()
            # Pool threads are not daemons: without a stop the process would never exit.
            core = cast(IReactorCore, self._reactor)
            self._shutdown_trigger = core.addSystemEventTrigger(
                "during", "shutdown", self._stop_at_shutdown
            )
        return self._run_in_thread(self._db.open, self._age_cutoff()).addCallback(self._opened)

    def _opened(self, journal_mode: str) -> None:
        if journal_mode.lower() != "wal":
            self.log.warn(
                "{location}: journal mode is {mode}, not WAL; readers may wait for writers",
                location=self.location,
                mode=journal_mode,
            )
        self.log.info("store open: {location}", location=self.location)

    def stop(self) -> Deferred[None]:
        """Write pending history, close the database and stop the thread.

        The Deferred never fails (what goes wrong is logged: the daemon is on its
        way down). Calling it again, or without a start, is harmless.
        """
        self._remove_shutdown_trigger()
        return super().stop()

    def _stop_at_shutdown(self) -> Deferred[None]:
        self._shutdown_trigger = None
        return self.stop()

    def _remove_shutdown_trigger(self) -> None:
        if self._shutdown_trigger is not None:
            cast(IReactorCore, self._reactor).removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None

    def _close(self) -> Deferred[None]:
        d = self._run_in_thread(self._db.close)
        d.addBoth(self._stop_pool)
        return d

    def _stop_pool(self, result: T) -> T:
        if self._pool is not None:
            # The thread is idle by now (the close has run), so this join is immediate.
            self._pool.stop()
        return result

    # History.

    async def _write_pending(self) -> None:
        """Write the pending entries; only ever one batch at a time (the lock).

        One batch at a time keeps history in order even when a write fails and its
        entries go back to the front of the queue. While the chat keeps a backlog
        waiting, the next batch (all of it) is written as soon as one is done.
        """
        self._cancel_flush_timer()
        self._report_lost()
        while self._pending:
            await self._write_batch()
            if not self._backlogged():
                break

    def _write_batch(self) -> Deferred[None]:
        batch = self._pending.take(len(self._pending))
        self._in_flight = batch
        started = time.monotonic()
        d = self._run_in_thread(self._db.write_history, batch, self._age_cutoff())
        d.addCallbacks(
            self._written,
            self._write_failed,
            callbackArgs=(started,),
            errbackArgs=(batch,),
        )
        return d

    def _written(self, _: None, started: float) -> None:
        self._in_flight = []
        self._batch_written(started)

    def _write_failed(self, failure: Failure, batch: list[PendingRow]) -> Failure:
        # Back in front of the lines said meanwhile; the caps apply to all of them.
        self._in_flight = []
        self._pending.put_back(batch)
        return self._batch_failed(failure, len(batch))

    def _held(self) -> tuple[int, int]:
        return len(self._pending), self._pending.size

    def _drop_oldest(self) -> None:
        self._pending.take(1)

    def _clear_held(self) -> None:
        self._pending.clear()

    def _unflushed(self) -> Iterator[PendingRow]:
        """History in memory, oldest first.

        Read when a query's answer arrives: results come back from the one thread
        in order, so by then any batch written before the query has been settled
        (cleared or requeued) and nothing here is also in the answer.
        """
        yield from self._in_flight
        yield from self._pending

    def _room_key(self, room: str) -> str:
        # Rooms are stored as given: callers pass their canonical form.
        return room

    def _read_history(
        self, room: str, limit: int, before: float | None, cutoff: float | None
    ) -> Deferred[list[HistoryEntry]]:
        # No cutoff: lines past the age are deleted at every write and at start.
        return self._run_in_thread(self._db.recent_history, room, limit, before)

    def _read_history_by_room(
        self, per_room: int, max_rooms: int
    ) -> Deferred[dict[str, list[HistoryEntry]]]:
        # One snapshot of the file for every room read.
        waiting = self._waiting_rooms(max_rooms)
        d = self._run_in_thread(self._db.recent_history_by_room, per_room, max_rooms, waiting)
        d.addCallback(self._with_unflushed_by_room, per_room, max_rooms, None)
        return d

    # Accounts: each change is committed before its Deferred fires.

    def get_account(self, alias: str) -> Deferred[Account | None]:
        """The account registered under ``alias`` in any case, or None."""
        return self._call("get_account", self._db.get_account, alias_key(alias))

    def registered_keys(self) -> Deferred[set[str]]:
        """The alias keys of every account, so the hub can tell registered aliases at once."""
        return self._call("registered_keys", self._db.registered_keys)

    def create_account(self, alias: str, password_hash: str) -> Deferred[bool]:
        """Register ``alias``; False if it (in any case) is registered already."""
        return self._call(
            "create_account",
            self._db.create_account,
            alias_key(alias),
            alias,
            password_hash,
            self._clock.seconds(),
        )

    def set_password_hash(self, alias: str, new_hash: str) -> Deferred[bool]:
        """Replace the password hash; False if ``alias`` is not registered."""
        return self._call(
            "set_password_hash", self._db.set_password_hash, alias_key(alias), new_hash
        )

    def add_ssh_key(self, alias: str, fingerprint: str, public_key: str) -> Deferred[bool]:
        """Bind an SSH key to registered ``alias``; False if bound already."""
        return self._call(
            "add_ssh_key",
            self._db.add_ssh_key,
            alias_key(alias),
            fingerprint,
            public_key,
            self._clock.seconds(),
        )

    def remove_ssh_key(self, alias: str, fingerprint: str) -> Deferred[bool]:
        """Unbind the SSH key with ``fingerprint`` from ``alias``; False if it was not bound."""
        return self._call("remove_ssh_key", self._db.remove_ssh_key, alias_key(alias), fingerprint)

    def ssh_keys(self, alias: str) -> Deferred[list[tuple[str, str]]]:
        """The (fingerprint, public key) pairs bound to ``alias``."""
        return self._call("ssh_keys", self._db.ssh_keys, alias_key(alias))

    def set_ignores(self, alias: str, ignores: Iterable[str]) -> Deferred[None]:
        """Replace the ignore list of ``alias``; fails with NoSuchAccount if unregistered."""
        # A tuple: the thread must not see a list the caller may still change.
        return self._call("set_ignores", self._db.set_ignores, alias_key(alias), tuple(ignores))

    # Bans.

    def add_ban(self, ban: Ban) -> Deferred[None]:
        """Record ``ban``, replacing any ban on the same mask (compared case-insensitively)."""
        return self._call("add_ban", self._db.add_ban, ban)

    def remove_ban(self, mask: str) -> Deferred[bool]:
        """Lift the ban on ``mask``; False if there was none."""
        return self._call("remove_ban", self._db.remove_ban, mask)

    def active_bans(self, now: float) -> Deferred[list[Ban]]:
        """The bans in force at ``now``; expired ones are deleted on the way."""
        return self._call("active_bans", self._db.active_bans, now)

    # Settings (the MOTD, ...) and room topics.

    def get_setting(self, key: str) -> Deferred[str | None]:
        """The value of setting ``key``, or None if it is not set."""
        return self._call("get_setting", self._db.get_setting, key)

    def set_setting(self, key: str, value: str | None) -> Deferred[None]:
        """Set ``key`` to ``value``; None deletes it."""
        return self._call("set_setting", self._db.set_setting, key, value)

    def set_topic(self, room: str, topic: str | None, set_by: str) -> Deferred[None]:
        """Set the topic of ``room``; None clears it."""
        return self._call(
            "set_topic", self._db.set_topic, room, topic, set_by, self._clock.seconds()
        )

    def topics(self, max_rooms: int = TOPICS_AT_START) -> Deferred[dict[str, str]]:
        """The topics of the ``max_rooms`` rooms whose topic was set last, newest first."""
        return self._call("topics", self._db.topics, max_rooms)

    def topic(self, room: str) -> Deferred[str | None]:
        """The topic of ``room`` (in any case), or None if it has none."""
        return self._call("topic", self._db.topic, room)

    # What waits for registered aliases while they are offline or away.

    def keep_message(
        self,
        recipient: str,
        message: WaitingMessage,
        per_recipient: int,
        per_sender: int,
        not_before: float,
        sender_key: str | None = None,
    ) -> Deferred[str]:
        """Keep ``message`` for ``recipient`` unless a bound says no: KEPT, BOX_FULL or
        SENDER_FULL; ``sender_key`` (by default the sender's alias key) is who the
        sender's share is counted against."""
        return self._call(
            "keep_message",
            self._db.keep_message,
            alias_key(recipient),
            message,
            per_recipient,
            per_sender,
            not_before,
            alias_key(message.sender) if sender_key is None else sender_key,
        )

    def waiting_messages(
        self, recipient: str, not_before: float
    ) -> Deferred[list[WaitingMessage]]:
        """The messages kept for ``recipient``, oldest first, each with its handle."""
        return self._call(
            "waiting_messages", self._db.waiting_messages, alias_key(recipient), not_before
        )

    def drop_messages(self, recipient: str, handles: Iterable[str]) -> Deferred[None]:
        """Delete the messages of ``recipient`` with these handles; others stay."""
        return self._call(
            "drop_messages", self._db.drop_messages, alias_key(recipient), tuple(handles)
        )

    def add_mention(
        self, account: str, entry: HistoryEntry, limit: int, not_before: float
    ) -> Deferred[None]:
        """Keep ``entry`` as mentioning ``account``; the newest ``limit`` are kept."""
        return self._call(
            "add_mention", self._db.add_mention, alias_key(account), entry, limit, not_before
        )

    def mentions_of(self, account: str, not_before: float) -> Deferred[list[HistoryEntry]]:
        """The lines kept as mentioning ``account``, oldest first."""
        return self._call("mentions_of", self._db.mentions_of, alias_key(account), not_before)

    def clear_mentions(self, account: str) -> Deferred[None]:
        """Forget the lines kept as mentioning ``account``."""
        return self._call("clear_mentions", self._db.clear_mentions, alias_key(account))

    def set_away_room(self, account: str, room: str | None, since: float) -> Deferred[None]:
        """Note the room ``account`` went offline from, at ``since``; None: it is back."""
        return self._call("set_away_room", self._db.set_away_room, alias_key(account), room, since)

    def away_rooms(self) -> Deferred[dict[str, tuple[str, float]]]:
        """Every account offline: account key -> (room, since)."""
        return self._call("away_rooms", self._db.away_rooms)

    # Plumbing.

    def _call(self, name: str, function: Callable[..., T], *args: Any) -> Deferred[T]:
        if (refused := self._refusal(name)) is not None:
            return refused
        return self._run_in_thread(function, *args)
