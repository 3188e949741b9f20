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

On a plain TCP (or UNIX) transport with nothing buffered, a write goes to the
socket at once, and only what the kernel does not take is left to the transport.
A Twisted transport buffers every write until the reactor's next turn, which
costs two ``epoll_ctl`` calls (watch for writability, stop watching) and a turn
per reply: most of what a short session (greeting, welcome, goodbye) cost
besides its own work.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.tcp import Connection
from zope.interface import implementer

# Below glibc's mmap threshold (128 KiB), so chunks reuse heap memory.
CHUNK_BYTES = 64 * 1024


@implementer(IPushProducer)
class BoundedSender:
    """Writes to a consumer (a transport), holding at most ``limit_bytes`` while it is paused."""

    __slots__ = (
        "_closed",
        "_direct",
        "_limit_bytes",
        "_on_overflow",
        "_paused",
        "_queue",
        "_queued_bytes",
        "_transport",
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
            direct = self._direct
            if (
                direct is not None
                and not direct.dataBuffer
                and not direct._tempDataBuffer
                and direct.connected
                and not direct.disconnecting
                and not direct._writeDisconnected
            ):
                sent = direct.writeSomeData(data)
                if isinstance(sent, int) and sent > 0:
                    if sent == len(data):
                        return
                    data = data[sent:]
                # The rest (or a failed send, which the transport finds again and
                # reports as the connection's loss) goes the usual way.
            self._transport.write(data)
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes > self._limit_bytes:
            self._discard()
            self._on_overflow()

    def close(self) -> None:
        """Hand everything queued to the transport and stop producing.

        Unregistering matters: a transport that is asked to close while a paused
        streaming producer is registered waits for that producer forever.
        """
        if self._closed:
            return
        pending = b"".join(self._queue)
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
        self._queue.clear()
        self._queued_bytes = 0
