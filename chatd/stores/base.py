"""What both stores share: the buffered history writer, its life cycle and errors.

Chat lines are the hot path, so a store's :meth:`~BufferedStore.append_history`
only appends to a buffer in memory; a timer writes the buffer at most
``flush_interval_seconds`` after the first line in it, or at once when a busy
chat has filled a quarter of it. A line waits as a compact tuple with its text
in UTF-8 (room and alias are the hub's own strings, shared), and the buffer is
capped in lines (20,000) and in bytes (8 MiB): past either, the oldest lines are
dropped and counted. When a write fails the lines are kept for the next attempt,
which backs off while writes keep failing, so an outage neither floods the log
nor loses what was said during it (up to the caps). Reads answer with the lines
not yet written as well as the stored ones.

:class:`BufferedStore` is that writer and the store's life cycle (not started,
running, closed); :class:`chatd.stores.sqlite.SQLiteStore` and
:class:`chatd.stores.redis.RedisStore` say how a batch is written and read and
keep everything else (accounts, bans, settings, topics) their own way. Both
implement :class:`chatd.interfaces.IChatStore`.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from chatd.interfaces import HISTORY_ROOMS_AT_START
from chatd.model import HistoryEntry

FLUSH_INTERVAL_SECONDS = 0.5
HISTORY_PER_ROOM = 10_000
# Lines held in memory while the store refuses them or the chat outpaces it, capped
# in lines and in bytes (past either the oldest are dropped): one batch being
# written can hold as much again, so history buffers at most twice the bytes.
MAX_PENDING_ENTRIES = 20_000
MAX_PENDING_BYTES = 8 * 1024 * 1024
# Room for a few of the longest lines the protocol lets through.
MIN_PENDING_BYTES = 64 * 1024
# What a waiting line costs beyond the bytes of its text: its tuple, the headers of
# its text and time, its buffer slot (145 bytes by bench/history_writer.py).
PENDING_ENTRY_OVERHEAD_BYTES = 200
# A write starts before the timer once this fraction of either cap is waiting, so
# a fast chat is written in batches that grow with the backlog, not dropped.
EARLY_WRITE_FRACTION = 0.25
# Longest wait between attempts to write history while writes keep failing.
MAX_RETRY_SECONDS = 30.0

HISTORY_KINDS = frozenset({"say", "act"})


class StoreError(Exception):
    """Something the store cannot do; the message says what, for the log."""


class StoreNotStarted(StoreError):
    """The store was used before ``start``: a wiring mistake."""


class StoreClosed(StoreError):
    """The store was used after ``stop``, or its database is not open."""


class NoSuchAccount(StoreError, LookupError):
    """A change was asked for an account that is not registered."""


PendingRow = tuple[str, str, str, bytes, float]
"""A line waiting to be written: a :class:`HistoryEntry` with its text in UTF-8.

A plain tuple that shares the entry's room, kind, alias and time objects: only the
text is new, and UTF-8 is the smallest form of it (a str with one emoji takes four
bytes per character). A text Python cannot encode (a lone surrogate) is written
with ``?`` in its place rather than failing every batch it is in.
"""


def _unpack_row(row: PendingRow) -> HistoryEntry:
    """The entry a waiting line stands for, to answer a read."""
    room, kind, alias, text, at = row
    return HistoryEntry(room, kind, alias, text.decode("utf-8"), at)


def row_bytes(row: PendingRow) -> int:
    """What a waiting line costs in memory, near enough to cap the buffer by."""
    return len(row[3]) + PENDING_ENTRY_OVERHEAD_BYTES


def _newest_rooms(
    stored: dict[str, list[HistoryEntry]],
    unflushed: Iterable[tuple[str, PendingRow]],
    per_room: int,
    max_rooms: int,
    merge: Callable[[list[HistoryEntry], list[HistoryEntry]], list[HistoryEntry]],
) -> dict[str, list[HistoryEntry]]:
    """What ``recent_history_by_room`` answers, from a store's read and its unflushed lines.

    ``stored`` has the stored rooms' newest lines, the most recently active room
    first, under the store's own room key; ``unflushed`` the lines not yet
    stored, oldest first, each with its room key; ``merge`` joins the two for a
    room. Rooms with unflushed lines spoke after every stored line, so they rank
    first, the one spoken in last first; ``max_rooms`` of all are kept.
    """
    waiting = _latest_rooms(unflushed, max_rooms)
    ranked = [*waiting, *(key for key in stored if key not in waiting)]
    newest: dict[str, list[HistoryEntry]] = {}
    for key in ranked[:max_rooms]:
        rows = waiting.get(key, [])[-per_room:]
        newest[key] = merge(stored.get(key, []), [_unpack_row(row) for row in rows])[-per_room:]
    return newest


def _latest_rooms(
    unflushed: Iterable[tuple[str, PendingRow]], max_rooms: int
) -> dict[str, list[PendingRow]]:
    """The ``max_rooms`` rooms of the newest of ``unflushed`` (oldest first, each with
    its room key), the one spoken in last first, with their lines oldest first."""
    waiting: dict[str, list[PendingRow]] = {}
    for key, row in unflushed:
        # Re-inserted at each line, so that the dict ends ordered by newest line.
        rows = waiting.pop(key, None) or []
        rows.append(row)
        waiting[key] = rows
    latest = list(waiting)[: -max_rooms - 1 : -1]
    return {key: waiting[key] for key in latest}


class Backlog:
    """Lines waiting to be written, oldest first, and the bytes they take.

    Both stores keep their pending lines in one; :attr:`size` is kept with every
    change so that capping the buffer by bytes costs nothing per line.
    """

    __slots__ = ("rows", "size")

    def __init__(self) -> None:
        self.rows: deque[PendingRow] = deque()
        self.size = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[PendingRow]:
        return iter(self.rows)

    def append(self, row: PendingRow) -> None:
        self.rows.append(row)
        self.size += len(row[3]) + PENDING_ENTRY_OVERHEAD_BYTES  # row_bytes, inlined

    def take(self, count: int) -> list[PendingRow]:
        """Remove and return the oldest ``count`` lines (all of them if fewer wait)."""
        if count >= len(self.rows):
            rows = list(self.rows)
            self.clear()
            return rows
        rows = [self.rows.popleft() for _ in range(count)]
        self.size -= sum(map(row_bytes, rows))
        return rows

    def put_back(self, rows: list[PendingRow]) -> None:
        """Return ``rows``, older than every line waiting, to the front."""
        self.rows.extendleft(reversed(rows))
        self.size += sum(map(row_bytes, rows))

    def clear(self) -> None:
        self.rows.clear()
        self.size = 0


class _State(enum.Enum):
    """Where a store is in its life: used once, from NEW through RUNNING to CLOSED."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


# For append_history: a module global is read several times faster than an enum's
# member through its class (0.01 against 0.05 us on Python 3.11), on every line.
_RUNNING = _State.RUNNING


def _check_limits(
    flush_interval_seconds: float,
    history_per_room: int,
    history_max_age_seconds: float | None,
    max_pending_entries: int,
    max_pending_bytes: int,
) -> None:
    """Refuse settings that would make the store write never, or keep nothing."""
    if flush_interval_seconds <= 0:
        raise ValueError("flush_interval_seconds must be greater than 0")
    if history_per_room < 1:
        raise ValueError("history_per_room must be at least 1")
    if history_max_age_seconds is not None and history_max_age_seconds <= 0:
        raise ValueError("history_max_age_seconds must be greater than 0 (or None)")
    if max_pending_entries < 1:
        raise ValueError("max_pending_entries must be at least 1")
    if max_pending_bytes < MIN_PENDING_BYTES:
        raise ValueError(f"max_pending_bytes must be at least {MIN_PENDING_BYTES}")


class BufferedStore:
    """A store's life cycle and its buffered history writes, shared by both stores.

    A store that buffers history lines and writes them in batches writes soon
    after the first line, at once when a quarter of its buffer is full (and no
    write is running: the one running takes the backlog when it ends), backs off
    while writes fail, reports the lines it had to drop and answers reads with
    the lines not yet written. Call :meth:`start` once; using the store before
    raises :class:`StoreNotStarted` at once (a wiring mistake); after
    :meth:`stop` its Deferreds fail with :class:`StoreClosed` (a race with
    shutdown, which callers handle like any storage error).

    A subclass says how its storage opens and closes (:meth:`_open`,
    :meth:`_close`), how held lines are written (:meth:`_write_pending`, which
    reports each batch to :meth:`_batch_written` or :meth:`_batch_failed`), how
    they are held while not yet written (:meth:`_held`, :meth:`_drop_oldest`,
    :meth:`_clear_held`, :meth:`_unflushed`), how rooms are keyed
    (:meth:`_room_key`) and how stored lines are read and joined with the
    unflushed ones (:meth:`_read_history`, :meth:`_read_history_by_room`,
    :meth:`_read_cutoff`, :meth:`_merge`).
    """

    log: Logger
    # Where the data is, for the log (a file, or a Redis URL without its password).
    location: str

    def __init__(
        self,
        clock: IReactorTime,
        *,
        flush_interval_seconds: float,
        history_per_room: int,
        history_max_age_seconds: float | None,
        max_pending_entries: int,
        max_pending_bytes: int,
    ) -> None:
        _check_limits(
            flush_interval_seconds,
            history_per_room,
            history_max_age_seconds,
            max_pending_entries,
            max_pending_bytes,
        )
        self._clock = clock
        # The retention limits, public so that the service's wiring can be checked.
        self.history_per_room = history_per_room
        self.history_max_age_seconds = history_max_age_seconds
        self._flush_interval = flush_interval_seconds
        self._max_pending = max_pending_entries
        self._max_pending_bytes = max_pending_bytes
        self._early_entries = max_pending_entries * EARLY_WRITE_FRACTION
        self._early_bytes = max_pending_bytes * EARLY_WRITE_FRACTION
        self._state = _State.NEW
        # History not yet written, oldest first (a subclass may hold more: see _held).
        self._pending = Backlog()
        self._write_lock = DeferredLock()
        self._flush_call: IDelayedCall | None = None
        self._failed_writes = 0
        self._lost = 0
        # History batches written, and the seconds each took from hand-over to
        # the storage's answer (queueing included), for the metrics.
        self.batches_written = 0
        self.write_seconds = 0.0
        self._warned_closed = False
        self._stop_waiters: list[Deferred[None]] = []
        self._stopped = False

    # Life cycle.

    def start(self) -> Deferred[None]:
        """Open the storage; calls made before the Deferred fires run after the opening."""
        if self._state is not _State.NEW:
            raise StoreError("a store can be started only once")
        self._state = _State.RUNNING
        return self._open()

    def stop(self) -> Deferred[None]:
        """Write pending history (best effort), close the storage and refuse any later use.

        The Deferred never fails (what goes wrong is logged: the daemon is on its
        way down). Calling it again, or without a start, is harmless; a call while
        the first is under way fires once the store is closed.
        """
        if self._state is _State.CLOSED:
            if self._stopped:
                return succeed(None)
            waiter: Deferred[None] = Deferred()
            self._stop_waiters.append(waiter)
            return waiter
        was_running = self._state is _State.RUNNING
        self._state = _State.CLOSED
        if not was_running:
            self._stopped = True
            return succeed(None)
        self._cancel_flush_timer()
        d = self._write_lock.run(self._write_pending)
        d.addErrback(lambda _: None)  # already logged by _batch_failed
        d.addCallback(lambda _: self._drop_unwritten())
        d.addCallback(lambda _: self._close())
        d.addErrback(self._log_failure, "could not close {location}", location=self.location)
        d.addCallback(self._finish_stop)
        return d

    def _drop_unwritten(self) -> None:
        lost = self._held()[0] + self._lost
        self._clear_held()
        self._lost = 0
        if lost:
            self.log.error(
                "{lost} history entries lost at shutdown: {location} did not take them",
                lost=lost,
                location=self.location,
            )

    def _finish_stop(self, _: object) -> None:
        self._stopped = True
        self.log.info("store closed: {location}", location=self.location)
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # History: buffering and writing.

    def append_history(self, entry: HistoryEntry) -> None:
        """Keep ``entry`` for the next write; cheap, for the path of every chat line.

        It is written at most ``flush_interval_seconds`` later. After :meth:`stop`
        the entry is dropped (with one warning), never raised about: a line said
        during shutdown must not break the chat.
        """
        # Paid for every line said, on the reactor: a few operations, no calls but
        # the encoding while the buffer is under its caps and writes succeed.
        room, kind, alias, text, at = entry
        if kind not in HISTORY_KINDS:
            raise ValueError(f"history kind must be 'say' or 'act', not {kind!r}")
        if self._state is not _RUNNING:
            self._refuse_entry()
            return
        pending = self._pending
        rows = pending.rows
        row = (room, kind, alias, text.encode("utf-8", "replace"), at)
        rows.append(row)  # pending.append(row), inlined
        pending.size += len(row[3]) + PENDING_ENTRY_OVERHEAD_BYTES
        if (
            self._failed_writes
            or len(rows) > self._max_pending
            or pending.size > self._max_pending_bytes
        ):
            # Over a cap, or holding a failed batch beyond _pending (see _held).
            self._cap_pending()
        if (len(rows) >= self._early_entries or pending.size >= self._early_bytes) and not (
            self._write_lock.locked or self._failed_writes
        ):
            # While writes fail, the backoff timer alone decides when to try again.
            self._flush_due()
        elif self._flush_call is None:
            self._flush_call = self._clock.callLater(self._flush_interval, self._flush_due)

    def flush(self) -> Deferred[None]:
        """Write every pending history entry now.

        Fires once they are stored. If a write fails, the Deferred fails, the
        failure is logged and the entries are kept for the next attempt.
        """
        if (refused := self._refusal("flush")) is not None:
            return refused
        return self._write_lock.run(self._write_pending)

    def _cap_pending(self) -> None:
        """Drop the oldest lines held until they fit both caps, counting them."""
        while self._over_cap(*self._held()):
            self._drop_oldest()
            self._lost += 1

    def _over_cap(self, entries: int, size: int) -> bool:
        """Whether ``entries`` lines of ``size`` bytes are more than the buffer may hold."""
        return entries > self._max_pending or size > self._max_pending_bytes

    def _backlogged(self) -> bool:
        """Whether enough is waiting to write it now rather than at the timer."""
        return len(self._pending) >= self._early_entries or self._pending.size >= self._early_bytes

    def _flush_due(self) -> None:
        self._cancel_flush_timer()
        self.flush().addErrback(lambda _: None)  # already logged by _batch_failed

    def _refuse_entry(self) -> None:
        if self._state is _State.NEW:
            raise StoreNotStarted(f"{type(self).__name__}.append_history() called before start()")
        if not self._warned_closed:
            self._warned_closed = True
            self.log.warn("history entries after the store was stopped are not kept")

    def _batch_written(self, started: float) -> None:
        """Count a batch written, handed over at ``time.monotonic()`` ``started``."""
        self.batches_written += 1
        self.write_seconds += time.monotonic() - started
        if self._failed_writes:
            self.log.info(
                "history writes work again after {failures} failures", failures=self._failed_writes
            )
            self._failed_writes = 0

    def _batch_failed(self, failure: Failure, count: int) -> Failure:
        """After the subclass held a failed batch of ``count`` lines again: cap, log, retry."""
        self._cap_pending()
        self._failed_writes += 1
        self._log_failure(
            failure,
            "could not write {count} history entries to {location};"
            " keeping them for the next attempt",
            count=count,
            location=self.location,
        )
        self._report_lost()
        if self._state is _State.RUNNING:
            self._schedule_flush(self._retry_delay())
        return failure

    def _report_lost(self) -> None:
        if self._lost:
            self.log.error(
                "history buffer full (writes failing, or slower than the chat):"
                " {lost} oldest entries dropped",
                lost=self._lost,
            )
            self._lost = 0

    def _retry_delay(self) -> float:
        """Back off while writes keep failing, so an outage does not flood the log."""
        return min(self._flush_interval * 2.0**self._failed_writes, MAX_RETRY_SECONDS)

    def _schedule_flush(self, delay: float) -> None:
        self._cancel_flush_timer()
        self._flush_call = self._clock.callLater(delay, self._flush_due)

    def _cancel_flush_timer(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None

    def _age_cutoff(self) -> float | None:
        if self.history_max_age_seconds is None:
            return None
        return self._clock.seconds() - self.history_max_age_seconds

    # History: reading, stored and unflushed lines merged.

    def recent_history(
        self, room: str, limit: int, before: float | None = None
    ) -> Deferred[list[HistoryEntry]]:
        """The newest ``limit`` lines of ``room``, oldest first, written or not.

        With ``before``, only lines strictly older than that time (for paging back).
        """
        if (refused := self._refusal("recent_history")) is not None:
            return refused
        if limit <= 0:
            return succeed([])
        cutoff = self._read_cutoff()
        d = self._read_history(room, limit, before, cutoff)
        d.addCallback(self._with_unflushed_of_room, self._room_key(room), limit, before, cutoff)
        return d

    def _with_unflushed_of_room(
        self,
        stored: list[HistoryEntry],
        key: str,
        limit: int,
        before: float | None,
        cutoff: float | None,
    ) -> list[HistoryEntry]:
        unflushed = [
            _unpack_row(row)
            for row_key, row in self._unflushed_by_room(cutoff)
            if row_key == key and (before is None or row[4] < before)
        ]
        return self._merge(stored, unflushed)[-limit:]

    def recent_history_by_room(
        self, per_room: int, max_rooms: int = HISTORY_ROOMS_AT_START
    ) -> Deferred[dict[str, list[HistoryEntry]]]:
        """The newest ``per_room`` lines, oldest first, of the ``max_rooms`` rooms
        spoken in most recently (by their newest line, written or not): to warm a
        cache with a bounded read however many rooms ever spoke."""
        if (refused := self._refusal("recent_history_by_room")) is not None:
            return refused
        if per_room <= 0 or max_rooms <= 0:
            return succeed({})
        return self._read_history_by_room(per_room, max_rooms)

    def _waiting_rooms(self, max_rooms: int) -> list[str]:
        """The keys of the ``max_rooms`` rooms with lines not yet written, newest first.

        They spoke after every stored line, so they rank first among the most
        recently active rooms: their stored lines are read too.
        """
        return list(_latest_rooms(self._unflushed_by_room(None), max_rooms))

    def _with_unflushed_by_room(
        self,
        stored: dict[str, list[HistoryEntry]],
        per_room: int,
        max_rooms: int,
        cutoff: float | None,
    ) -> dict[str, list[HistoryEntry]]:
        """What ``recent_history_by_room`` answers, from the stored rooms (by key)."""
        return _newest_rooms(
            stored, self._unflushed_by_room(cutoff), per_room, max_rooms, self._merge
        )

    def _unflushed_by_room(self, cutoff: float | None) -> Iterator[tuple[str, PendingRow]]:
        """The lines not yet written (not before ``cutoff``), oldest first, with their room key."""
        for row in self._unflushed():
            if cutoff is None or row[4] >= cutoff:
                yield self._room_key(row[0]), row

    # Plumbing.

    def _refusal(self, name: str) -> Deferred[Any] | None:
        """None if the store may be used now; else raise, or a failed Deferred."""
        if self._state is _State.RUNNING:
            return None
        if self._state is _State.NEW:
            raise StoreNotStarted(f"{type(self).__name__}.{name}() called before start()")
        return fail(StoreClosed(f"{type(self).__name__}.{name}() called after stop()"))

    def _log_failure(self, failure: Failure, message: str, **fields: Any) -> None:
        self.log.failure(message, failure, LogLevel.error, **fields)

    # What each store does its own way.

    def _open(self) -> Deferred[None]:
        """Open the storage, at :meth:`start`."""
        raise NotImplementedError

    def _close(self) -> Deferred[None]:
        """Close the storage, at :meth:`stop`, once the last write is done."""
        raise NotImplementedError

    async def _write_pending(self) -> None:
        """Write what is held, one batch at a time (under the write lock), in order."""
        raise NotImplementedError

    def _held(self) -> tuple[int, int]:
        """The lines held for writing and their bytes, not counting a batch on its way.

        Beyond ``_pending``, a store may hold only lines whose write failed: while
        none did, :meth:`append_history` checks the caps against ``_pending`` alone.
        """
        raise NotImplementedError

    def _drop_oldest(self) -> None:
        """Forget the oldest line held for writing (the buffer is over its cap)."""
        raise NotImplementedError

    def _clear_held(self) -> None:
        """Forget every line held for writing (at stop, once the last write is done)."""
        raise NotImplementedError

    def _unflushed(self) -> Iterator[PendingRow]:
        """The lines not yet known to be stored, oldest first, as a read sees them."""
        raise NotImplementedError

    def _room_key(self, room: str) -> str:
        """The key under which the store keeps ``room``'s history."""
        raise NotImplementedError

    def _read_history(
        self, room: str, limit: int, before: float | None, cutoff: float | None
    ) -> Deferred[list[HistoryEntry]]:
        """The newest ``limit`` stored lines of ``room`` said before ``before`` and
        not before ``cutoff``, oldest first."""
        raise NotImplementedError

    def _read_history_by_room(
        self, per_room: int, max_rooms: int
    ) -> Deferred[dict[str, list[HistoryEntry]]]:
        """What :meth:`recent_history_by_room` answers: the stored lines of the rooms
        :meth:`_waiting_rooms` names and of the most recently active stored ones,
        merged by :meth:`_with_unflushed_by_room`."""
        raise NotImplementedError

    def _read_cutoff(self) -> float | None:
        """The age before which a read leaves lines out (None: reads leave none out)."""
        return None

    @staticmethod
    def _merge(stored: list[HistoryEntry], unflushed: list[HistoryEntry]) -> list[HistoryEntry]:
        """A room's stored lines and then its unflushed ones, as a read answers them."""
        return [*stored, *unflushed]
