"""Tests for chatd.sendqueue: the bounded, producer-driven output of one connection."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from chatd.sendqueue import CHUNK_BYTES, BoundedSender


class FullAt64KiB(StringTransport):
    """Pauses its streaming producer, like Twisted's transports, past 64 KiB unsent."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(len(data))
        if len(self.value()) > 64 * 1024:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        sent = self.value()
        self.clear()
        self.producer.resumeProducing()
        return sent


def test_a_reader_far_behind_is_fed_in_chunks_in_order() -> None:
    """Megabytes queued are handed over a chunk at a time, never joined whole, and in order."""
    transport = FullAt64KiB()
    overflowed: list[bool] = []
    sender = BoundedSender(transport, 8 * 1024 * 1024, lambda: overflowed.append(True))
    lines = [b"%06d " % n + b"x" * 93 + b"\r\n" for n in range(30_000)]  # ~3 MB
    for line in lines:
        sender.write(line)
    assert sender.queued_bytes > 2_000_000
    received = b""
    while transport.value() or sender.queued_bytes:
        received += transport.drain()
    assert received == b"".join(lines)
    assert not overflowed
    assert max(transport.writes) <= CHUNK_BYTES


def test_past_the_limit_the_queue_is_dropped_and_overflow_reported_once() -> None:
    transport = FullAt64KiB()
    overflowed: list[bool] = []
    sender = BoundedSender(transport, 100_000, lambda: overflowed.append(True))
    for _ in range(3000):
        sender.write(b"y" * 100)
    assert overflowed == [True]
    assert sender.queued_bytes == 0
