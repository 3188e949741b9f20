"""Helpers for the store tests: fired Deferreds, log lines, a plain Redis link, SQLite by hand.

Shared by the contract suite (tests/test_stores.py), the tests of what only one
store does (tests/test_sqlitestore.py, tests/test_redisstore.py) and the tests
of the code that uses a store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.python.failure import Failure

from chatd.model import HistoryEntry

T = TypeVar("T")

INTERVAL = 0.5
WAIT_SECONDS = 5.0


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


def texts(entries: Sequence[HistoryEntry]) -> list[str]:
    return [entry.text for entry in entries]


def messages(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    return [formatEvent(event) for event in events if event.get("log_level") is level]


async def wait_until(condition: Callable[[], Awaitable[Any]]) -> None:
    """Poll the async ``condition`` on the real reactor until it holds, or fail after a while."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await deferLater(reactor, 0.01, lambda: None)


# SQLite, as another process would see the file.


def query(path: Path, sql: str, *params: Any) -> list[Any]:
    """Run ``sql`` on a connection of its own, as another process would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


def on_disk(path: Path, room: str | None = None) -> list[str]:
    """The text of every history line committed to the file (of ``room``), in order."""
    if room is None:
        return [text for (text,) in query(path, "SELECT text FROM history ORDER BY id")]
    rows = query(path, "SELECT text FROM history WHERE room = ? ORDER BY id", room)
    return [text for (text,) in rows]


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


# Redis, through a link that does not reconnect by itself.


class TxRedisLink:
    """``execute`` over one txredisapi connection that never reconnects by itself.

    The :class:`~chatd.stores.redis.RedisCommands` a chatd link would give, minus
    reconnection, so "Redis is down" means exactly that until the test reconnects.
    """

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


async def in_redis(link: TxRedisLink, room: str = "#lobby") -> list[str]:
    """The text of every line of ``room``'s stream, oldest first, read straight from Redis."""
    entries = await link.execute("XRANGE", f"chatd:history:{room.lower()}", "-", "+")
    return [dict(zip(fields[::2], fields[1::2], strict=True))["text"] for _, fields in entries]
