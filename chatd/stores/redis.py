"""chatd's persistent state in Redis, shared by every chatd process that uses the same Redis.

:class:`RedisStore` is a drop-in for :class:`chatd.stores.sqlite.SQLiteStore`: both
implement :class:`chatd.interfaces.IChatStore`, with the same life cycle and the
same buffered history (:class:`chatd.stores.base.BufferedStore`). It talks to Redis
only through a :class:`RedisCommands` (one ``execute`` per command), so it never
opens a connection, never blocks and never imports a Redis client; the link that
owns the connection (and reconnects it) is someone else's job.

The layout, every key under ``prefix`` (``chatd:`` by default), so that several
installations can share one Redis by prefix:

``history:{room key}``
    A stream per room, keyed by :func:`chatd.text.room_key` so that ``#Lobby``
    and ``#lobby`` are one history, as in the hub. Fields ``room`` (the name as
    given), ``kind`` (``say`` or ``act``), ``alias``, ``text`` and ``at`` (epoch
    seconds, as ``repr`` of a float so it reads back exactly). Streams, because
    reading the newest N lines is one ``XREVRANGE ... COUNT N`` and capping a room
    is an ``XADD ... MAXLEN ~ N`` option; ``~`` lets Redis trim whole nodes, so a
    room may hold up to a node (about a hundred entries) more than the cap, as the
    SQLite store holds up to a tenth more between prunes. With a maximum age,
    every write also trims the stream by ``MINID ~`` (ids are Redis' own
    milliseconds) and sets the stream to expire that long after its last write,
    so an idle room's lines go away too; reads drop any line whose ``at`` is past
    the age, so no caller ever sees one.
``history-recent``
    A sorted set of the room keys that have a stream, scored by the time (Redis'
    milliseconds) of their last write, so that :meth:`recent_history_by_room`
    reads only the most recently active rooms, however many there are. With a
    maximum age, every write removes the rooms whose streams have expired by then;
    a room that a read finds empty is removed too. (chatd before this kept an
    unordered set, ``history-rooms``: the first such read ranks its rooms by
    their newest line into ``history-recent`` and deletes it.)
``history-writer:{writer id}``
    The sequence number of the last history batch this store wrote, see below.
``account:{alias key}``
    A hash per account: ``alias`` (as registered), ``password_hash``,
    ``created_at`` and ``ignores`` (a JSON list, to keep its order in one field).
``accounts``
    A set of every alias key registered, for :meth:`registered_keys`.
``sshkeys:{alias key}``
    A hash per account: fingerprint -> JSON ``{"key": line, "added_at": t}``. The
    time is kept because a big hash does not keep insertion order, and keys are
    listed oldest first.
``bans``
    A hash: lower-cased mask -> JSON of the :class:`~chatd.model.Ban` (its mask as
    given), so ``Alice`` and ``alice`` are one ban as with SQLite's NOCASE.
``settings``
    A hash: setting -> value.
``topics``
    A hash: room key -> JSON ``{"room", "topic", "set_by", "set_at"}``, keyed like
    the history so that two spellings of a room cannot hold two topics.
``waiting:{alias key}``
    A list per registered alias: the private messages kept for it while it is
    offline, oldest first, each JSON ``{"id", "from", "sender", "text", "at"}``
    (``id`` random, so that two equal messages are two entries; ``from`` who
    the sender's share of the box is counted against). Kept by one script that
    checks the bounds first and refuses when they are reached (the sender is
    told); it expires the list the maximum age after its newest message, and
    reads skip any older message.
``mentions:{alias key}``
    A list per registered alias: the lines that mentioned it while away, as JSON
    ``{"room", "kind", "alias", "text", "at"}``, trimmed to the newest N at each
    write and expiring like a box of messages.
``away-rooms``
    A hash: alias key of a registered alias offline -> JSON ``[room, since]``.

Every change that reads before it writes (creating an account only if the alias
is free, changing one only if it exists, deleting only the bans that have
expired) is one Lua script, which Redis runs atomically: two processes
registering the same alias at once cannot both win. The scripts name every key
they touch, but span several keys, so this is for one Redis, not Redis Cluster.

Chat lines are the hot path: :meth:`RedisStore.append_history` only appends to a
buffer (compact rows, capped in lines and bytes, as in the SQLite store), and a
timer writes it at most ``flush_interval_seconds`` after the first line in it,
or at once when a quarter of the buffer is full, as one script per batch (up to
``MAX_BATCH_ENTRIES`` lines) until the buffer is empty. Redis runs a script as
one step, so a lost connection cannot cut a batch in half and no reader sees
half of one. When the write fails (Redis down, the link reconnecting), the lines
are kept, up to ``max_pending_entries`` lines and ``max_pending_bytes`` past
which the oldest are dropped and counted, and retried with backoff: lines said
during an outage reach Redis when it is back.

A failed write may still have run (the connection died after Redis ran the
script but before its answer arrived), so retrying blindly could write a batch
twice. Each batch therefore carries this store's random writer id and a
sequence number; the script runs only if that number is above the one recorded
under ``history-writer:{id}``, which it updates in the same atomic step. A
failed batch is retried as it was (the same number, its oldest lines dropped if
the buffer overflows), before any newer line, so the check is exact. The record
expires a week after the writer's last batch: longer than any outage worth
retrying through.

Accounts, bans, settings and topics are sent at once and their Deferreds fire
with Redis' answer, or fail with the link's error (a ``ConnectionError``
at once when there is no connection): the callers log and report it, as they do
for a disk error of the SQLite store. Reading history needs Redis too: during
an outage reads fail, where the SQLite store would still answer from its file.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from twisted.internet.defer import (
    Deferred,
    FirstError,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.interfaces import TOPICS_AT_START, IChatStore
from chatd.model import Account, Ban, HistoryEntry, WaitingMessage
from chatd.stores.base import (
    FLUSH_INTERVAL_SECONDS,
    HISTORY_PER_ROOM,
    MAX_PENDING_BYTES,
    MAX_PENDING_ENTRIES,
    BufferedStore,
    NoSuchAccount,
    PendingRow,
    row_bytes,
)
from chatd.text import alias_key, room_key

T = TypeVar("T")

# Lines written by one script at most: a backlog after an outage goes in several
# scripts, so that no single one holds Redis (and every other chatd) for long.
MAX_BATCH_ENTRIES = 1_000
# Entries read per XREVRANGE when lines may be skipped (by ``before`` or age).
READ_CHUNK_ENTRIES = 100
# How long the record of a writer's last batch outlives the batch: see the module doc.
WRITER_TTL_SECONDS = 7 * 24 * 3600

# KEYS: the writer record, the rooms' sorted set, then the stream of each room.
# ARGV: batch number, writer record TTL, cap per room, max age in ms (0: none),
# the lines as a JSON list of [stream (0 for the first), room, kind, alias, text,
# at], then the key of each room, in the order of KEYS.
# Returns the number of entries written, 0 for a batch written before.
_WRITE_HISTORY_LUA = """
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('GET', KEYS[1]) or '0') then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local lines = cjson.decode(ARGV[5])
for _, line in ipairs(lines) do
  redis.call('XADD', KEYS[line[1] + 3], 'MAXLEN', '~', ARGV[3], '*', 'room', line[2],
             'kind', line[3], 'alias', line[4], 'text', line[5], 'at', line[6])
end
for i = 3, #KEYS do
  redis.call('ZADD', KEYS[2], now_ms, ARGV[i + 3])
end
local max_age_ms = tonumber(ARGV[4])
if max_age_ms > 0 then
  local min_id = string.format('%.0f', now_ms - max_age_ms)
  for i = 3, #KEYS do
    redis.call('XTRIM', KEYS[i], 'MINID', '~', min_id)
    redis.call('PEXPIRE', KEYS[i], max_age_ms)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. min_id)
end
return #lines
"""

# KEYS: the rooms' sorted set, a room's stream. ARGV: the room key. Forgets a room
# whose stream has expired; atomic, so a room written meanwhile is never forgotten.
_FORGET_EMPTY_ROOM_LUA = """
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS: the account hash, the accounts set. ARGV: alias key, alias, hash, created_at.
_CREATE_ACCOUNT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'alias', ARGV[2], 'password_hash', ARGV[3],
           'created_at', ARGV[4], 'ignores', '[]')
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the account hash. ARGV: field, value. 0 if there is no such account
# (a plain HSET would create half an account).
_UPDATE_ACCOUNT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the account hash, its SSH keys hash. ARGV: fingerprint, JSON.
# -1 if there is no such account, else 1 if added, 0 if bound already.
_ADD_SSH_KEY_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""

# KEYS: the bans hash. ARGV: now. Deletes the bans expired at ``now`` and returns
# the JSON of the others; atomic, so a ban renewed meanwhile is never deleted.
_ACTIVE_BANS_LUA = """
local now, kept = tonumber(ARGV[1]), {}
local bans = redis.call('HGETALL', KEYS[1])
for i = 1, #bans, 2 do
  local expires_at = cjson.decode(bans[i + 1]).expires_at
  if type(expires_at) == 'number' and expires_at <= now then
    redis.call('HDEL', KEYS[1], bans[i])
  else
    kept[#kept + 1] = bans[i + 1]
  end
end
return kept
"""


# KEYS: the recipient's box. ARGV: the oldest time kept, messages per box, messages
# per sender in a box, who the sender is counted as, the message (JSON), the box's expiry
# in ms. Drops what is too old from the head (the oldest first), then keeps the
# message unless a bound is reached; answers what model.KEPT and the others say.
_KEEP_MESSAGE_LUA = """
local not_before = tonumber(ARGV[1])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or cjson.decode(head).at >= not_before then break end
  redis.call('LPOP', KEYS[1])
end
local held = redis.call('LRANGE', KEYS[1], 0, -1)
if #held >= tonumber(ARGV[2]) then return 'box-full' end
local mine = 0
for i = 1, #held do
  if cjson.decode(held[i])['from'] == ARGV[4] then mine = mine + 1 end
end
if mine >= tonumber(ARGV[3]) then return 'sender-full' end
redis.call('RPUSH', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 'kept'
"""

# KEYS: a box. ARGV: the messages (their JSON, as read) to remove.
_DROP_MESSAGES_LUA = """
for i = 1, #ARGV do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
return 0
"""

# KEYS: an alias's mentions. ARGV: the line (JSON), how many to keep, expiry in ms.
_ADD_MENTION_LUA = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
"""


class RedisCommands(Protocol):
    """Runs Redis commands on a connection somebody else keeps (and reconnects).

    Replies come as txredisapi gives them with charset utf-8 and
    ``convertNumbers=False``: bulk strings as str, integers as int, arrays as
    lists, nil as None.
    """

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        """Run one Redis command.

        Fails at once with a ConnectionError (RedisUnreachable) when there is no connection.
        """


@dataclass(slots=True)
class _Batch:
    """History lines written by one script, under one sequence number, and their bytes."""

    seq: int
    entries: list[PendingRow]
    size: int


def _redacted(url: str) -> str:
    """``url`` without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _pairs(reply: Sequence[str]) -> dict[str, str]:
    """A dict from the flat field, value, field, value ... list of HGETALL."""
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _float(value: float) -> str:
    """``value`` as Redis keeps it: ``repr`` reads back as the same float."""
    return repr(float(value))


@implementer(IChatStore)
class RedisStore(BufferedStore):
    """chatd's persistent state in Redis, used from the reactor thread.

    The interface, life cycle and errors are those of every store (see
    :class:`chatd.stores.base.BufferedStore`): call :meth:`start` once; using the
    store before raises :class:`~chatd.stores.base.StoreNotStarted`, after
    :meth:`stop` its Deferreds fail with :class:`~chatd.stores.base.StoreClosed`.

    ``redis`` runs the commands; ``url`` only names the Redis in log lines
    (:attr:`location`, its password removed). ``clock`` (default: the reactor)
    times flushes and dates accounts, keys and topics. Nodes that share a Redis
    should share ``history_per_room`` and ``history_max_age_seconds``: each write
    applies the writer's.
    """

    log = Logger()

    def __init__(
        self,
        redis: RedisCommands,
        url: str,
        *,
        clock: IReactorTime | None = None,
        history_per_room: int = HISTORY_PER_ROOM,
        history_max_age_seconds: float | None = None,
        flush_interval_seconds: float = FLUSH_INTERVAL_SECONDS,
        max_pending_entries: int = MAX_PENDING_ENTRIES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        prefix: str = "chatd:",
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        super().__init__(
            clock,
            flush_interval_seconds=flush_interval_seconds,
            history_per_room=history_per_room,
            history_max_age_seconds=history_max_age_seconds,
            max_pending_entries=max_pending_entries,
            max_pending_bytes=max_pending_bytes,
        )
        self._redis = redis
        self.location = _redacted(url)
        self._max_age_ms = (
            0 if history_max_age_seconds is None else max(1, round(history_max_age_seconds * 1000))
        )
        self._prefix = prefix
        self._rooms_key = f"{prefix}history-recent"
        self._legacy_rooms_key = f"{prefix}history-rooms"
        self._accounts_key = f"{prefix}accounts"
        self._bans_key = f"{prefix}bans"
        self._settings_key = f"{prefix}settings"
        self._topics_key = f"{prefix}topics"
        self._away_rooms_key = f"{prefix}away-rooms"
        self._writer_key = f"{prefix}history-writer:{secrets.token_hex(8)}"
        # History not yet in Redis, oldest first: a batch being written, or one
        # whose write failed (retried first, as it was), then _pending, not yet sent.
        self._in_flight: _Batch | None = None
        self._unconfirmed: _Batch | None = None
        self._seq = 0

    # Life cycle.

    def _open(self) -> Deferred[None]:
        """Nothing to open (the link connects itself)."""
        self.log.info("store open: {location}", location=self.location)
        return succeed(None)

    def _close(self) -> Deferred[None]:
        """Nothing to close (the link is someone else's)."""
        return succeed(None)

    # History.

    def _held(self) -> tuple[int, int]:
        """Lines waiting for Redis and their bytes, not counting a batch on its way."""
        if (batch := self._unconfirmed) is None:
            return len(self._pending), self._pending.size
        return len(batch.entries) + len(self._pending), batch.size + self._pending.size

    def _drop_oldest(self) -> None:
        """Drop the oldest line held, a failed batch's first if there is one.

        A failed batch loses lines from its front and keeps its number: Redis has
        taken the whole batch or none of it, so the rest is right either way.
        """
        if (batch := self._unconfirmed) is not None:
            batch.size -= row_bytes(batch.entries.pop(0))
            if not batch.entries:
                self._unconfirmed = None
        else:
            self._pending.take(1)

    def _clear_held(self) -> None:
        self._pending.clear()
        self._unconfirmed = None

    async def _write_pending(self) -> None:
        """Write batches until nothing is held; one at a time (the lock), in order.

        A batch holds at most ``MAX_BATCH_ENTRIES`` lines, so that a backlog goes
        in as few scripts as that cap allows, none holding Redis for long.
        """
        self._cancel_flush_timer()
        self._report_lost()
        while (batch := self._next_batch()) is not None:
            await self._write_batch(batch)

    def _next_batch(self) -> _Batch | None:
        """The failed batch again if there is one, else the oldest pending lines."""
        batch, self._unconfirmed = self._unconfirmed, None
        if batch is None and self._pending:
            self._seq += 1
            rows = self._pending.take(MAX_BATCH_ENTRIES)
            batch = _Batch(self._seq, rows, sum(map(row_bytes, rows)))
        return batch

    def _write_batch(self, batch: _Batch) -> Deferred[None]:
        # The lines go as one JSON argument, not six each: the client library
        # frames every argument in Python, and that, not Redis, was the bottleneck.
        streams: dict[str, int] = {}
        lines = []
        for room, kind, alias, text, at in batch.entries:
            stream = streams.setdefault(room_key(room), len(streams))
            lines.append((stream, room, kind, alias, text.decode("utf-8"), _float(at)))
        keys = [self._writer_key, self._rooms_key, *map(self._history_key, streams)]
        args: list[str | int] = [
            batch.seq,
            WRITER_TTL_SECONDS,
            self.history_per_room,
            self._max_age_ms,
            json.dumps(lines, ensure_ascii=False, separators=(",", ":")),
            *streams,
        ]
        self._in_flight = batch
        started = time.monotonic()
        d = self._eval(_WRITE_HISTORY_LUA, keys, args)
        d.addCallbacks(
            self._written, self._write_failed, callbackArgs=(started,), errbackArgs=(batch,)
        )
        return d

    def _written(self, _: int, started: float) -> None:
        self._in_flight = None
        self._batch_written(started)

    def _write_failed(self, failure: Failure, batch: _Batch) -> Failure:
        # Retried first, as it was (same number), before any newer line.
        self._in_flight = None
        self._unconfirmed = batch
        return self._batch_failed(failure, len(batch.entries))

    def _unflushed(self) -> Iterator[PendingRow]:
        """History not known to be in Redis, oldest first.

        Read when a query's answer arrives: the link answers in the order it was
        asked, so a batch sent before the query has been settled by then. What
        is both here and in the answer (a failed batch Redis took after all) is
        dropped by :meth:`_merge`.
        """
        for batch in (self._in_flight, self._unconfirmed):
            if batch is not None:
                yield from batch.entries
        yield from self._pending

    def _room_key(self, room: str) -> str:
        # #Lobby and #lobby are one history, as in the hub.
        return room_key(room)

    def _read_cutoff(self) -> float | None:
        # Streams are trimmed by Redis' time of writing, not by when a line was
        # said, so reads leave out what is past the age themselves.
        return self._age_cutoff()

    def _read_history(
        self, room: str, limit: int, before: float | None, cutoff: float | None
    ) -> Deferred[list[HistoryEntry]]:
        return Deferred.fromCoroutine(self._read_room(self._room_key(room), limit, before, cutoff))

    @staticmethod
    def _merge(stored: list[HistoryEntry], unflushed: list[HistoryEntry]) -> list[HistoryEntry]:
        """Stored lines, then the unflushed ones Redis did not already answer with.

        A batch whose write failed may have reached Redis all the same, and a batch
        being written may be in a read's answer or not; a line is the same line if
        every field is equal.
        """
        seen = set(stored)
        return [*stored, *(entry for entry in unflushed if entry not in seen)]

    def _read_history_by_room(
        self, per_room: int, max_rooms: int
    ) -> Deferred[dict[str, list[HistoryEntry]]]:
        """Rooms rank by their last write; they are named as in their newest line."""
        return Deferred.fromCoroutine(self._recent_history_by_room(per_room, max_rooms))

    async def _recent_history_by_room(
        self, per_room: int, max_rooms: int
    ) -> dict[str, list[HistoryEntry]]:
        cutoff = self._age_cutoff()
        await self._adopt_legacy_rooms()
        recent: list[str] = await self._execute("ZREVRANGE", self._rooms_key, 0, max_rooms - 1)
        keys = list(dict.fromkeys([*self._waiting_rooms(max_rooms), *recent]))
        # Every room's read is sent before any answer is awaited: one round trip.
        reads = [
            Deferred.fromCoroutine(self._read_room(key, per_room, None, cutoff)) for key in keys
        ]
        stored: list[list[HistoryEntry]] = await _gather(reads)
        by_key = dict(zip(keys, stored, strict=True))
        await _gather(
            [
                self._eval(
                    _FORGET_EMPTY_ROOM_LUA, [self._rooms_key, self._history_key(key)], [key]
                )
                for key, entries in by_key.items()
                if not entries
            ]
        )
        newest = self._with_unflushed_by_room(
            {key: entries for key, entries in by_key.items() if entries},
            per_room,
            max_rooms,
            cutoff,
        )
        return {entries[-1].room: entries for entries in newest.values() if entries}

    async def _adopt_legacy_rooms(self) -> None:
        """Rank the rooms of a chatd from before ``history-recent`` into it, once.

        Each is scored by its newest stream entry (ids are Redis' milliseconds).
        ``NX`` leaves a room written since by a newer chatd as it is; two nodes
        adopting at once do the same thing twice.
        """
        keys: list[str] = await self._execute("SMEMBERS", self._legacy_rooms_key)
        if not keys:
            return
        newest = await _gather(
            [
                self._execute("XREVRANGE", self._history_key(key), "+", "-", "COUNT", 1)
                for key in keys
            ]
        )
        scored: list[str | int] = []
        for key, reply in zip(keys, newest, strict=True):
            if reply:
                scored += [int(reply[0][0].partition("-")[0]), key]
        if scored:
            await self._execute("ZADD", self._rooms_key, "NX", *scored)
        await self._execute("DEL", self._legacy_rooms_key)

    async def _read_room(
        self, key: str, limit: int, before: float | None, cutoff: float | None
    ) -> list[HistoryEntry]:
        """The newest ``limit`` wanted lines of the stream of room ``key``, oldest first.

        Stream ids are the times lines were written, not said, so lines to skip
        are found by their ``at``, reading back a chunk at a time.
        """
        filtered = before is not None or cutoff is not None
        chunk = max(limit, READ_CHUNK_ENTRIES) if filtered else limit
        newest_first: list[HistoryEntry] = []
        end = "+"
        while len(newest_first) < limit:
            reply = await self._execute(
                "XREVRANGE", self._history_key(key), end, "-", "COUNT", chunk
            )
            for _, fields in reply:
                entry = _history_entry(fields)
                if _wanted(entry, before, cutoff):
                    newest_first.append(entry)
            if len(reply) < chunk:
                break
            end = "(" + reply[-1][0]
        return newest_first[:limit][::-1]

    def _history_key(self, key: str) -> str:
        return f"{self._prefix}history:{key}"

    # Accounts.

    def get_account(self, alias: str) -> Deferred[Account | None]:
        """The account registered under ``alias`` in any case, or None."""
        return self._run("get_account", self._get_account, alias_key(alias))

    async def _get_account(self, key: str) -> Account | None:
        fields = _pairs(await self._execute("HGETALL", self._account_key(key)))
        if not fields:
            return None
        return Account(
            fields["alias"],
            fields["password_hash"],
            float(fields["created_at"]),
            tuple(json.loads(fields["ignores"])),
        )

    def registered_keys(self) -> Deferred[set[str]]:
        """The alias keys of every account, so the hub can tell registered aliases at once."""
        return self._run("registered_keys", self._registered_keys)

    async def _registered_keys(self) -> set[str]:
        return set(await self._execute("SMEMBERS", self._accounts_key))

    def create_account(self, alias: str, password_hash: str) -> Deferred[bool]:
        """Register ``alias``; False if it (in any case) is registered already, by any node."""
        return self._run("create_account", self._create_account, alias, password_hash)

    async def _create_account(self, alias: str, password_hash: str) -> bool:
        key = alias_key(alias)
        created = await self._eval(
            _CREATE_ACCOUNT_LUA,
            [self._account_key(key), self._accounts_key],
            [key, alias, password_hash, _float(self._clock.seconds())],
        )
        return bool(created)

    def set_password_hash(self, alias: str, new_hash: str) -> Deferred[bool]:
        """Replace the password hash; False if ``alias`` is not registered."""
        return self._run(
            "set_password_hash", self._update_account, alias_key(alias), "password_hash", new_hash
        )

    def set_ignores(self, alias: str, ignores: Iterable[str]) -> Deferred[None]:
        """Replace the ignore list of ``alias``; fails with NoSuchAccount if unregistered."""
        return self._run("set_ignores", self._set_ignores, alias_key(alias), list(ignores))

    async def _set_ignores(self, key: str, ignores: list[str]) -> None:
        if not await self._update_account(key, "ignores", json.dumps(ignores)):
            raise NoSuchAccount(f"no account is registered as {key}")

    async def _update_account(self, key: str, field: str, value: str) -> bool:
        """Set one field of an existing account; False if there is none."""
        return bool(
            await self._eval(_UPDATE_ACCOUNT_LUA, [self._account_key(key)], [field, value])
        )

    def add_ssh_key(self, alias: str, fingerprint: str, public_key: str) -> Deferred[bool]:
        """Bind an SSH key to registered ``alias``; False if bound already.

        Fails with NoSuchAccount if ``alias`` is not registered.
        """
        return self._run(
            "add_ssh_key", self._add_ssh_key, alias_key(alias), fingerprint, public_key
        )

    async def _add_ssh_key(self, key: str, fingerprint: str, public_key: str) -> bool:
        bound = json.dumps({"key": public_key, "added_at": self._clock.seconds()})
        added = await self._eval(
            _ADD_SSH_KEY_LUA,
            [self._account_key(key), self._ssh_keys_key(key)],
            [fingerprint, bound],
        )
        if added < 0:
            raise NoSuchAccount(f"no account is registered as {key}")
        return bool(added)

    def remove_ssh_key(self, alias: str, fingerprint: str) -> Deferred[bool]:
        """Unbind the SSH key with ``fingerprint`` from ``alias``; False if it was not bound."""
        return self._run("remove_ssh_key", self._remove_ssh_key, alias_key(alias), fingerprint)

    async def _remove_ssh_key(self, key: str, fingerprint: str) -> bool:
        return bool(await self._execute("HDEL", self._ssh_keys_key(key), fingerprint))

    def ssh_keys(self, alias: str) -> Deferred[list[tuple[str, str]]]:
        """The (fingerprint, public key) pairs bound to ``alias``, oldest first."""
        return self._run("ssh_keys", self._ssh_keys, alias_key(alias))

    async def _ssh_keys(self, key: str) -> list[tuple[str, str]]:
        stored = _pairs(await self._execute("HGETALL", self._ssh_keys_key(key)))
        bound = sorted(
            (json.loads(value)["added_at"], fingerprint, json.loads(value)["key"])
            for fingerprint, value in stored.items()
        )
        return [(fingerprint, line) for _, fingerprint, line in bound]

    def _account_key(self, key: str) -> str:
        return f"{self._prefix}account:{key}"

    def _ssh_keys_key(self, key: str) -> str:
        return f"{self._prefix}sshkeys:{key}"

    # Bans.

    def add_ban(self, ban: Ban) -> Deferred[None]:
        """Record ``ban``, replacing any ban on the same mask (compared case-insensitively)."""
        return self._run("add_ban", self._add_ban, ban)

    async def _add_ban(self, ban: Ban) -> None:
        value = json.dumps(
            {
                "mask": ban.mask,
                "kind": ban.kind,
                "reason": ban.reason,
                "set_by": ban.set_by,
                "created_at": float(ban.created_at),
                "expires_at": None if ban.expires_at is None else float(ban.expires_at),
            }
        )
        await self._execute("HSET", self._bans_key, ban.mask.lower(), value)

    def remove_ban(self, mask: str) -> Deferred[bool]:
        """Lift the ban on ``mask``; False if there was none."""
        return self._run("remove_ban", self._remove_ban, mask)

    async def _remove_ban(self, mask: str) -> bool:
        return bool(await self._execute("HDEL", self._bans_key, mask.lower()))

    def active_bans(self, now: float) -> Deferred[list[Ban]]:
        """The bans in force at ``now``, oldest first; expired ones are deleted on the way."""
        return self._run("active_bans", self._active_bans, now)

    async def _active_bans(self, now: float) -> list[Ban]:
        kept: list[str] = await self._eval(_ACTIVE_BANS_LUA, [self._bans_key], [_float(now)])
        bans = [Ban(**json.loads(value)) for value in kept]
        return sorted(bans, key=lambda ban: (ban.created_at, ban.mask))

    # Settings (the MOTD, ...) and room topics.

    def get_setting(self, key: str) -> Deferred[str | None]:
        """The value of setting ``key``, or None if it is not set."""
        return self._run("get_setting", self._get_setting, key)

    async def _get_setting(self, key: str) -> str | None:
        value: str | None = await self._execute("HGET", self._settings_key, key)
        return value

    def set_setting(self, key: str, value: str | None) -> Deferred[None]:
        """Set ``key`` to ``value``; None deletes it."""
        return self._run("set_setting", self._set_setting, key, value)

    async def _set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            await self._execute("HDEL", self._settings_key, key)
        else:
            await self._execute("HSET", self._settings_key, key, value)

    def set_topic(self, room: str, topic: str | None, set_by: str) -> Deferred[None]:
        """Set the topic of ``room`` (in any case); None clears it."""
        return self._run("set_topic", self._set_topic, room, topic, set_by)

    async def _set_topic(self, room: str, topic: str | None, set_by: str) -> None:
        if topic is None:
            await self._execute("HDEL", self._topics_key, room_key(room))
            return
        value = json.dumps(
            {"room": room, "topic": topic, "set_by": set_by, "set_at": self._clock.seconds()}
        )
        await self._execute("HSET", self._topics_key, room_key(room), value)

    def topics(self, max_rooms: int = TOPICS_AT_START) -> Deferred[dict[str, str]]:
        """The topics of the ``max_rooms`` rooms whose topic was set last, newest first,
        under the room's name as last set."""
        return self._run("topics", self._topics, max_rooms)

    async def _topics(self, max_rooms: int) -> dict[str, str]:
        stored = _pairs(await self._execute("HGETALL", self._topics_key))
        topics = sorted(
            (json.loads(value) for value in stored.values()),
            key=lambda topic: topic["set_at"],
            reverse=True,
        )
        return {topic["room"]: topic["topic"] for topic in topics[:max_rooms]}

    def topic(self, room: str) -> Deferred[str | None]:
        """The topic of ``room`` (in any case), or None if it has none."""
        return self._run("topic", self._topic, room)

    async def _topic(self, room: str) -> str | None:
        stored = await self._execute("HGET", self._topics_key, room_key(room))
        return None if stored is None else str(json.loads(stored)["topic"])

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
        SENDER_FULL, checked and kept by one script; ``sender_key`` (by default the
        sender's alias key) is who the sender's share is counted against."""
        return self._run(
            "keep_message",
            self._keep_message,
            alias_key(recipient),
            message,
            per_recipient,
            per_sender,
            not_before,
            alias_key(message.sender) if sender_key is None else sender_key,
        )

    async def _keep_message(
        self,
        key: str,
        message: WaitingMessage,
        per_recipient: int,
        per_sender: int,
        not_before: float,
        sender_key: str,
    ) -> str:
        value = json.dumps(
            {
                "id": secrets.token_hex(8),
                "from": sender_key,
                "sender": message.sender,
                "text": message.text,
                "at": float(message.at),
            }
        )
        answer: str = await self._eval(
            _KEEP_MESSAGE_LUA,
            [self._waiting_key(key)],
            [
                _float(not_before),
                per_recipient,
                per_sender,
                sender_key,
                value,
                _expiry_ms(message.at, not_before),
            ],
        )
        return answer

    def waiting_messages(
        self, recipient: str, not_before: float
    ) -> Deferred[list[WaitingMessage]]:
        """The messages kept for ``recipient``, oldest first; each handle is its JSON."""
        return self._run(
            "waiting_messages", self._waiting_messages, alias_key(recipient), not_before
        )

    async def _waiting_messages(self, key: str, not_before: float) -> list[WaitingMessage]:
        held: list[str] = await self._execute("LRANGE", self._waiting_key(key), 0, -1)
        messages = []
        for value in held:
            fields = json.loads(value)
            if fields["at"] >= not_before:
                messages.append(
                    WaitingMessage(fields["sender"], fields["text"], float(fields["at"]), value)
                )
        return messages

    def drop_messages(self, recipient: str, handles: Iterable[str]) -> Deferred[None]:
        """Delete the messages of ``recipient`` with these handles; others stay."""
        return self._run("drop_messages", self._drop_messages, alias_key(recipient), list(handles))

    async def _drop_messages(self, key: str, handles: list[str]) -> None:
        if handles:
            await self._eval(_DROP_MESSAGES_LUA, [self._waiting_key(key)], handles)

    def add_mention(
        self, account: str, entry: HistoryEntry, limit: int, not_before: float
    ) -> Deferred[None]:
        """Keep ``entry`` as mentioning ``account``; the newest ``limit`` are kept."""
        return self._run(
            "add_mention", self._add_mention, alias_key(account), entry, limit, not_before
        )

    async def _add_mention(
        self, key: str, entry: HistoryEntry, limit: int, not_before: float
    ) -> None:
        value = json.dumps(entry._asdict())
        await self._eval(
            _ADD_MENTION_LUA,
            [self._mentions_key(key)],
            [value, limit, _expiry_ms(entry.at, not_before)],
        )

    def mentions_of(self, account: str, not_before: float) -> Deferred[list[HistoryEntry]]:
        """The lines kept as mentioning ``account``, oldest first."""
        return self._run("mentions_of", self._mentions_of, alias_key(account), not_before)

    async def _mentions_of(self, key: str, not_before: float) -> list[HistoryEntry]:
        held: list[str] = await self._execute("LRANGE", self._mentions_key(key), 0, -1)
        entries = [HistoryEntry(**json.loads(value)) for value in held]
        return [entry for entry in entries if entry.at >= not_before]

    def clear_mentions(self, account: str) -> Deferred[None]:
        """Forget the lines kept as mentioning ``account``."""
        return self._run("clear_mentions", self._clear_mentions, alias_key(account))

    async def _clear_mentions(self, key: str) -> None:
        await self._execute("DEL", self._mentions_key(key))

    def set_away_room(self, account: str, room: str | None, since: float) -> Deferred[None]:
        """Note the room ``account`` went offline from, at ``since``; None: it is back."""
        return self._run("set_away_room", self._set_away_room, alias_key(account), room, since)

    async def _set_away_room(self, key: str, room: str | None, since: float) -> None:
        if room is None:
            await self._execute("HDEL", self._away_rooms_key, key)
        else:
            await self._execute("HSET", self._away_rooms_key, key, json.dumps([room, since]))

    def away_rooms(self) -> Deferred[dict[str, tuple[str, float]]]:
        """Every account offline: account key -> (room, since)."""
        return self._run("away_rooms", self._away_rooms)

    async def _away_rooms(self) -> dict[str, tuple[str, float]]:
        stored = _pairs(await self._execute("HGETALL", self._away_rooms_key))
        away = {}
        for key, value in stored.items():
            room, since = json.loads(value)
            away[key] = (str(room), float(since))
        return away

    def _waiting_key(self, key: str) -> str:
        return f"{self._prefix}waiting:{key}"

    def _mentions_key(self, key: str) -> str:
        return f"{self._prefix}mentions:{key}"

    # Plumbing.

    def _run(
        self, name: str, function: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> Deferred[T]:
        """Run ``function(*args)`` if the store may be used now, else refuse (see _refusal)."""
        if (refused := self._refusal(name)) is not None:
            return refused
        return Deferred.fromCoroutine(function(*args))

    def _execute(self, *args: str | int) -> Deferred[Any]:
        """Send one command; a link that raises instead of failing still gives a Deferred."""
        return maybeDeferred(self._redis.execute, *args)

    def _eval(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Deferred[Any]:
        return self._execute("EVAL", script, len(keys), *keys, *args)

    def _log_failure(self, failure: Failure, message: str, **fields: Any) -> None:
        """Log a failed write: a lost link in one line (it is expected, and said
        elsewhere), anything else with its traceback."""
        if failure.check(ConnectionError):
            self.log.warn(message + ": {problem}", problem=failure.getErrorMessage(), **fields)
        else:
            self.log.failure(message, failure, LogLevel.error, **fields)


def _expiry_ms(at: float, not_before: float) -> int:
    """How long a list whose newest item is of ``at`` stays, when items older than
    ``not_before`` are no longer wanted: as long as that item is."""
    return max(1, round((at - not_before) * 1000))


def _history_entry(fields: Sequence[str]) -> HistoryEntry:
    """A line from the field, value ... list of a stream entry."""
    values = _pairs(fields)
    return HistoryEntry(
        values["room"], values["kind"], values["alias"], values["text"], float(values["at"])
    )


def _wanted(entry: HistoryEntry, before: float | None, cutoff: float | None) -> bool:
    """Whether ``entry`` was said before ``before`` and not before the age ``cutoff``."""
    return (before is None or entry.at < before) and (cutoff is None or entry.at >= cutoff)


async def _gather(reads: list[Deferred[T]]) -> list[T]:
    """The results of ``reads``, or the first failure itself (not wrapped in FirstError)."""
    try:
        return await gatherResults(reads, consumeErrors=True)
    except FirstError as error:
        error.subFailure.raiseException()
