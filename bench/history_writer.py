"""How fast the history writers go, and what a line waiting for one costs in memory.

    python bench/history_writer.py                       # both measurements
    python bench/history_writer.py --rate 200000 --seconds 3 --text-bytes 64
    python bench/history_writer.py --skip-memory --rate 0 --relay-us 20 [--no-history]

Throughput: a real :class:`chatd.stores.sqlite.SQLiteStore` (its own database thread, the real
reactor) in a temporary directory is fed lines at ``--rate`` lines per second,
``--chunk`` lines per reactor turn, as a flooding room would feed it through the
hub, for ``--seconds``; then it is flushed. Reported: the rate offered, the rate
the lines reached the disk (all of them, from the first append to the last
commit), lines dropped ("history buffer full"), the batches written, and the
process's CPU time per line stored (the appends on the reactor and the database
thread's work: what history takes from the chat on a one-core server; the loop
feeding the lines costs some 1 us of it). A ``--rate`` of 0 appends as fast as the
reactor can. Each room keeps ``--keep`` lines (the daemon's default), so that the
writes prune as the daemon's do; 0 keeps every line.

``--relay-us N`` has the reactor spin N us of CPU for each line besides
history, as it would relaying the line to a room (20: some 200 members on this
VM); with ``--rate 0`` the rate offered is then the most the "chat" sustains, and
the same run with ``--no-history`` (a stand-in store that keeps nothing) gives the
rate without history: the difference is what history costs the chat.

With ``--redis``, the same against a :class:`chatd.stores.redis.RedisStore` on a
throwaway ``redis-server`` (started by tests/redisserver.py).

Memory: 20,000 lines held by a store whose writes never end, measured with
tracemalloc and reported per line beyond the text's own UTF-8 length, for short
and long lines, ASCII and not.

Benchmark the working tree, or another checkout by putting it first on
``PYTHONPATH``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

# After PYTHONPATH, so that another checkout put there is the one measured.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from chatd.cluster.address import RedisAddress
from chatd.cluster.link import RedisLink
from chatd.interfaces import IChatStore
from chatd.model import HistoryEntry
from chatd.stores.base import HISTORY_PER_ROOM
from chatd.stores.redis import RedisStore
from chatd.stores.sqlite import SQLiteStore, run_synchronously
from tests.redisserver import RedisServer

T = TypeVar("T")

MEMORY_ENTRIES = 20_000


def text(n: int, size: int, non_ascii: bool = False) -> str:
    """Line ``n``, of ``size`` characters (the last one an emoji if asked)."""
    return f"{n:010d}".ljust(size - 1, "x") + ("\N{GRINNING FACE}" if non_ascii else "x")


@dataclass(frozen=True)
class Load:
    """The chat offered: ``total`` lines of ``size`` bytes at ``rate`` lines/s, ``chunk``
    a reactor turn, over ``rooms`` rooms; ``busy``: no idle time between turns;
    ``relay_us``: the reactor's own work per line (relaying it), spun after each turn."""

    rate: int
    total: int
    chunk: int
    size: int
    rooms: int
    busy: bool
    keep: int
    relay_us: float


async def feed(store: IChatStore, load: Load) -> str:
    """Append the lines of ``load`` and flush; a report line of what was stored."""
    rate, total, chunk, size, rooms = load.rate, load.total, load.chunk, load.size, load.rooms
    lines = [text(n, size) for n in range(min(total, 10_000))]
    sent = 0
    started = time.monotonic()
    cpu_started = time.process_time()
    with capturedLogs() as events:
        while sent < total:
            turn = min(chunk, total - sent)
            for _ in range(turn):
                room = f"#room{sent % rooms}"
                store.append_history(
                    HistoryEntry(room, "say", "alice", lines[sent % len(lines)], time.time())
                )
                sent += 1
            relay_until = time.thread_time() + load.relay_us * 1e-6 * turn
            while time.thread_time() < relay_until:
                pass
            delay = 0.0
            if rate:
                delay = max(0.0, started + sent / rate - time.monotonic())
            if load.busy and rate:
                # A reactor with no idle time (relaying the flood) holds the GIL.
                while time.monotonic() < started + sent / rate:
                    pass
                delay = 0.0
            await task.deferLater(reactor, delay, lambda: None)
        offered = time.monotonic() - started
        await store.flush()
        done = time.monotonic() - started
        cpu = time.process_time() - cpu_started
    lost = sum(e["lost"] for e in events if e.get("log_level") is LogLevel.error and "lost" in e)
    stored = sent - lost
    return (
        f"{type(store).__name__}, {size}-byte lines in {rooms} room(s):"
        f" offered {sent / offered:,.0f} lines/s, stored {stored:,} of {sent:,} in"
        f" {done:.2f}s = {stored / done:,.0f} lines/s; {lost:,} dropped;"
        f" {store.batches_written} batches; {cpu / max(stored, 1) * 1e6:.2f} us of CPU per line"
    )


async def sqlite_throughput(load: Load) -> None:
    with tempfile.TemporaryDirectory(prefix="chatd-bench-") as directory:
        path = Path(directory) / "chatd.sqlite3"
        store = SQLiteStore(path, history_per_room=load.keep or load.total)
        await store.start()
        report = await feed(store, load)
        await store.stop()
        with sqlite3.connect(path) as db:
            (stored,) = db.execute("SELECT COUNT(*) FROM history").fetchone()
    print(f"{report} (in the file: {stored:,})")


class NoHistory:
    """Takes every line and keeps none: what the chat costs without history."""

    batches_written = 0

    def append_history(self, entry: HistoryEntry) -> None:
        pass

    def flush(self) -> Deferred[None]:
        return succeed(None)


async def no_history(load: Load) -> None:
    print(await feed(cast(IChatStore, NoHistory()), load))


async def redis_throughput(load: Load) -> None:
    with RedisServer() as server:
        link = RedisLink(RedisAddress.from_url(server.url))
        up: Deferred[None] = Deferred()
        link.channels = ["chatd-bench"]  # the link is up once subscribed too
        link.on_up = lambda: up.called or up.callback(None)
        link.start()
        await up
        store = RedisStore(link, server.url, history_per_room=load.keep or load.total)
        await store.start()
        report = await feed(store, load)
        await store.stop()
        await link.stop()
    print(report)


def never_writing(function: Callable[..., T], /, *args: Any) -> Deferred[T]:
    """Opens the database, then takes writes that never end: every line stays held."""
    if function.__name__ == "open":
        return run_synchronously(function, *args)
    return Deferred()


def memory() -> None:
    for size, non_ascii in ((64, False), (2048, False), (2048, True)):
        with tempfile.TemporaryDirectory(prefix="chatd-bench-") as directory:
            store = SQLiteStore(
                Path(directory) / "chatd.sqlite3",
                clock=Clock(),
                run_in_thread=never_writing,
                max_pending_entries=10 * MEMORY_ENTRIES,
                max_pending_bytes=1 << 40,
            )
            store.start()
            # Each line and its entry are made here and let go, as the hub lets
            # go of a line once the room's own recent history has moved on:
            # what is counted is whatever the store keeps.
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for n in range(MEMORY_ENTRIES):
                store.append_history(
                    HistoryEntry("#lobby", "say", "alice", text(n, size, non_ascii), 1.7e9 + n)
                )
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            utf8 = size + (3 if non_ascii else 0)
            kind = "non-ASCII" if non_ascii else "ASCII"
            each = held / MEMORY_ENTRIES
            print(
                f"{MEMORY_ENTRIES:,} pending {size}-char {kind} lines: {each:,.0f} bytes each,"
                f" {each - utf8:,.0f} beyond the UTF-8 text"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--rate", type=int, default=100_000, help="lines/s offered (0: max)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--chunk", type=int, default=500, help="lines per reactor turn")
    parser.add_argument("--text-bytes", type=int, default=64)
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument(
        "--keep", type=int, default=HISTORY_PER_ROOM, help="lines kept per room (0: all)"
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--redis", action="store_true", help="a RedisStore, not SQLite")
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="no store: the same load without history, to compare --relay-us runs with",
    )
    parser.add_argument(
        "--relay-us",
        type=float,
        default=0.0,
        help="CPU the reactor spends on each line besides history (20: a room of 200 relaying)",
    )
    parser.add_argument(
        "--busy", action="store_true", help="spin between turns, as a saturated reactor"
    )
    options = parser.parse_args()
    if not options.skip_memory:
        memory()
    result: list[object] = []

    def run() -> Deferred[None]:
        measure = redis_throughput if options.redis else sqlite_throughput
        if options.no_history:
            measure = no_history
        total = int(options.rate * options.seconds) if options.rate else 200_000
        return ensureDeferred(
            measure(
                Load(
                    options.rate,
                    total,
                    options.chunk,
                    options.text_bytes,
                    options.rooms,
                    options.busy,
                    options.keep,
                    options.relay_us,
                )
            )
        )

    def finished(outcome: object) -> None:
        result.append(outcome)
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(lambda: run().addBoth(finished))  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if result and hasattr(result[0], "raiseException"):
        result[0].raiseException()  # type: ignore[union-attr]


if __name__ == "__main__":
    main()
