"""Tests for chatd.sendqueue: the bounded, producer-driven output of one connection."""

from __future__ import annotations

import socket

import pytest
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactorClock, StringTransport

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


def _tcp_pair() -> tuple[Connection, socket.socket, MemoryReactorClock]:
    """A Twisted TCP transport over one end of a socket pair, the other end, its reactor."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    reactor = MemoryReactorClock()
    transport = Connection(ours, Protocol(), reactor)
    transport.connected = True
    return transport, peer, reactor


def test_a_turns_writes_to_an_idle_tcp_transport_are_sent_together_at_its_end() -> None:
    """No wait for the socket to be reported writable (and the epoll calls that costs)."""
    transport, peer, reactor = _tcp_pair()
    try:
        sender = BoundedSender(transport, 1024 * 1024, lambda: None)
        sender.write(b"hello\r\n")
        sender.write(b"again\r\n")
        with pytest.raises(BlockingIOError):
            peer.recv(100)
        reactor.advance(0)  # the turn ends
        assert peer.recv(100) == b"hello\r\nagain\r\n"
        assert not transport.dataBuffer and not transport._tempDataBuffer
        assert transport not in reactor.getWriters()
    finally:
        transport.socket.close()
        peer.close()


def test_a_close_sends_what_the_turn_wrote_first() -> None:
    transport, peer, reactor = _tcp_pair()
    try:
        sender = BoundedSender(transport, 1024 * 1024, lambda: None)
        sender.write(b"Goodbye.\r\n")
        sender.close()
        sender.write(b"too late\r\n")
        reactor.advance(0)
        transport.doWrite()
        assert peer.recv(100) == b"Goodbye.\r\n"
    finally:
        transport.socket.close()
        peer.close()


def test_an_abort_before_the_turn_ends_sends_nothing_more() -> None:
    transport, peer, reactor = _tcp_pair()
    try:
        sender = BoundedSender(transport, 1024 * 1024, lambda: None)
        sender.write(b"never sent\r\n")
        transport.abortConnection()
        reactor.advance(0)
        assert peer.recv(100) == b""
    finally:
        peer.close()  # the abort closed ours


def test_what_the_kernel_does_not_take_is_left_to_the_transport_in_order() -> None:
    transport, peer, reactor = _tcp_pair()
    try:
        sender = BoundedSender(transport, 64 * 1024 * 1024, lambda: None)
        blocks = [bytes([65 + n % 26]) * 10_000 for n in range(1000)]  # more than the kernel takes
        for n, block in enumerate(blocks):
            sender.write(block)
            if n % 3 == 0:
                reactor.advance(0)
        assert transport._tempDataBuffer and sender.queued_bytes  # the socket is full
        received = b""
        while True:
            try:
                received += peer.recv(1 << 20)
            except BlockingIOError:
                reactor.advance(0)
                if not (transport.dataBuffer or transport._tempDataBuffer):
                    break
                transport.doWrite()  # resumes the sender once drained
        assert received == b"".join(blocks)
    finally:
        transport.socket.close()
        peer.close()


def test_a_failed_send_at_the_turns_end_is_left_to_the_transport_to_report() -> None:
    """A peer gone before the turn ends costs no exception: the transport finds the loss."""
    transport, peer, reactor = _tcp_pair()
    try:
        sender = BoundedSender(transport, 1024 * 1024, lambda: None)
        sender.write(b"to nobody\r\n")
        peer.close()
        reactor.advance(0)  # the send fails (EPIPE); the bytes go to the transport
        assert transport.dataBuffer or transport._tempDataBuffer
        assert isinstance(transport.doWrite(), ConnectionLost)
    finally:
        transport.socket.close()
