"""Bounded output for one connection, so a reader that stalls cannot eat the server's memory.

``transport.write`` never refuses data: it buffers without limit. What it does do,
once its own buffer passes 64 KiB, is call ``pauseProducing`` on a registered
streaming producer, and ``resumeProducing`` when the buffer has drained. This
producer uses those calls to keep its own queue while the transport is full, and
reports an overflow once that queue passes its limit, so the caller can cut the
reader off instead of buffering for it forever.

When the transport drains, what was queued is handed over in chunks of about
``CHUNK_BYTES``, each joined on its own, until the transport is full again: a
reader who fell megabytes behind would otherwise cost a join of megabytes per
resume, each a fresh allocation whose pages the kernel must fault in (under
overload that was half the server's CPU and most of its memory).

On a plain TCP (or UNIX) transport with nothing buffered, what is written in
one reactor turn is joined and sent at the turn's end (one timer for every
connection), and only what the kernel does not take is left to the transport.
A Twisted transport buffers every write until its socket is reported writable,
which costs two ``epoll_ctl`` calls (watch for writability, stop watching) and a
turn per reply: most of what a short session (greeting, welcome, goodbye) cost
besides its own work. Joining the turn's writes keeps them one ``send``, as the
transport's own buffer did.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.tcp import Connection
from zope.interface import implementer

# Below glibc's mmap threshold (128 KiB), so chunks reuse heap memory.
CHUNK_BYTES = 64 * 1024


class TurnEnd:
    """Calls each sender that held writes back, once, at the end of the reactor's turn."""

    __slots__ = ("_call", "_reactor", "_senders")

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._senders: list[BoundedSender] = []
        self._call: IDelayedCall | None = None

    def add(self, sender: BoundedSender) -> None:
        self._senders.append(sender)
        if self._call is None:
            # Run before the reactor next waits for its sockets.
            self._call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        senders, self._senders = self._senders, []
        for sender in senders:
            sender.flush_held()


_turn_ends: WeakKeyDictionary[IReactorTime, TurnEnd] = WeakKeyDictionary()


def _turn_end(reactor: IReactorTime) -> TurnEnd:
    turn_end = _turn_ends.get(reactor)
    if turn_end is None:
        turn_end = _turn_ends[reactor] = TurnEnd(reactor)
    return turn_end


@implementer(IPushProducer)
class BoundedSender:
    """Writes to a consumer (a transport), holding at most ``limit_bytes`` while it is paused."""

    __slots__ = (
        "_closed",
        "_direct",
        "_held",
        "_held_bytes",
        "_limit_bytes",
        "_on_overflow",
        "_paused",
        "_queue",
        "_queued_bytes",
        "_transport",
        "_turn_end",
    )

    def __init__(
        self, transport: IConsumer, limit_bytes: int, on_overflow: Callable[[], None]
    ) -> None:
        self._transport = transport
        self._limit_bytes = limit_bytes
        self._on_overflow = on_overflow
        self._paused = False
        self._closed = False
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        # A socket of Twisted's own (TLS over it is another transport): its
        # pending output is known, so a write can skip the buffer when it is empty.
        self._direct: Connection | None = (
            transport if isinstance(transport, Connection) and not transport.TLS else None
        )
        # Who sends what was written this turn at its end, and what was (flush_held).
        self._turn_end: TurnEnd | None = (
            None if self._direct is None else _turn_end(cast(IReactorTime, self._direct.reactor))
        )
        # This turn's writes: the one write most turns have as it is (a broadcast
        # to 10,000 then makes no list per recipient for the collector to count),
        # a list from the second.
        self._held: bytes | list[bytes] | None = None
        self._held_bytes = 0
        transport.registerProducer(self, True)

    @property
    def queued_bytes(self) -> int:
        """Bytes held back here (not counting the transport's own buffer)."""
        return self._queued_bytes

    def write(self, data: bytes) -> None:
        """Send ``data`` now, or queue it while the transport is full.

        Past the limit the queue is dropped and ``on_overflow`` called once; from
        then on writes are ignored, since the connection is being cut off.
        """
        if self._closed:
            return
        if not self._paused:
            held = self._held
            if held is not None:
                if isinstance(held, bytes):
                    held = self._held = [held]
                held.append(data)
                self._held_bytes += len(data)
                if self._held_bytes > CHUNK_BYTES:  # a big turn: the transport's way
                    self._hand_held_to_transport()
                return
            direct, turn_end = self._direct, self._turn_end
            if direct is not None and turn_end is not None and self._idle(direct):
                self._held = data
                self._held_bytes = len(data)
                turn_end.add(self)
                return
            self._transport.write(data)
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes > self._limit_bytes:
            self._discard()
            self._on_overflow()

    @staticmethod
    def _idle(transport: Connection) -> bool:
        """Whether ``transport`` is open and has nothing waiting to be sent."""
        return (
            not transport.dataBuffer
            and not transport._tempDataBuffer
            and bool(transport.connected)
            and not transport.disconnecting
            and not transport._writeDisconnected
            and not transport._aborting
        )

    def flush_held(self) -> None:
        """The turn is over: send what it wrote, leaving the transport what the kernel
        does not take (or a failed send, which the transport finds again and reports
        as the connection's loss)."""
        held = self._held
        if held is None:
            return
        self._held = None
        data = held if isinstance(held, bytes) else b"".join(held)
        direct = self._direct
        assert direct is not None
        if self._idle(direct):
            # The socket's own send, not the transport's writeSomeData: that one
            # slices a memoryview and loops on EINTR (which Python's send already
            # retries) around the same call, a tenth of a broadcast's CPU per
            # recipient. Whatever the send does not take, an error included, goes
            # to the transport, which sends it or reports the connection lost.
            try:
                sent = direct.socket.send(data)
            except OSError:
                sent = 0
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
        self._transport.write(data)

    def _hand_held_to_transport(self) -> None:
        held, self._held = self._held, None
        if held:
            self._transport.write(held if isinstance(held, bytes) else b"".join(held))

    def close(self) -> None:
        """Hand everything queued to the transport and stop producing.

        Unregistering matters: a transport that is asked to close while a paused
        streaming producer is registered waits for that producer forever.
        """
        if self._closed:
            return
        held = self._held
        pending = b"".join([*([held] if isinstance(held, bytes) else held or ()), *self._queue])
        self._discard()
        self._transport.unregisterProducer()
        if pending:
            self._transport.write(pending)

    def pauseProducing(self) -> None:
        """The transport's buffer is full: queue from now on."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport drained: pass on what was queued, a chunk at a time, until it is full."""
        self._paused = False
        queue = self._queue
        while queue and not self._paused and not self._closed:
            chunk = [queue.popleft()]
            size = len(chunk[0])
            while queue and size + len(queue[0]) <= CHUNK_BYTES:
                data = queue.popleft()
                chunk.append(data)
                size += len(data)
            self._queued_bytes -= size
            # Pauses us again (synchronously) once the transport holds over 64 KiB.
            self._transport.write(chunk[0] if len(chunk) == 1 else b"".join(chunk))

    def stopProducing(self) -> None:
        """The connection is gone: nothing queued can be delivered any more."""
        self._discard()

    def _discard(self) -> None:
        self._closed = True
        self._held = None
        self._queue.clear()
        self._queued_bytes = 0
