"""Tests for chatd.flood: the token bucket that delays lines rather than dropping them."""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd.flood import FloodGate, FloodLimits


class Receiver:
    """Records what the gate hands on, warns about and cuts off."""

    def __init__(self, limits: FloodLimits) -> None:
        self.clock = Clock()
        self.handled: list[str] = []
        self.warnings: list[int] = []
        self.flooded = False
        self.ready = True
        self.gate = FloodGate(
            self.clock,
            limits,
            handle=self.handled.append,
            ready=lambda: self.ready,
            warn=self.warnings.append,
            flood=self.flood,
        )

    def flood(self) -> None:
        self.flooded = True


def test_burst_passes_at_once_and_the_rest_at_the_rate() -> None:
    """Up to ``burst`` lines go straight through; later ones at ``rate`` per second, in order."""
    receiver = Receiver(FloodLimits(burst=3, rate=2, queue_cap=50))
    for n in range(7):
        receiver.gate.feed(f"line {n}")
    assert receiver.handled == ["line 0", "line 1", "line 2"]
    assert receiver.gate.waiting == 4
    receiver.clock.advance(0.5)
    assert receiver.handled[-1] == "line 3"
    receiver.clock.pump([0.5] * 3)
    assert receiver.handled == [f"line {n}" for n in range(7)]
    assert receiver.gate.waiting == 0
    assert not receiver.clock.getDelayedCalls()


def test_bucket_refills_while_quiet() -> None:
    """After a pause long enough to refill, a full burst passes again."""
    receiver = Receiver(FloodLimits(burst=2, rate=1, queue_cap=50))
    for n in range(2):
        receiver.gate.feed(f"a{n}")
    receiver.clock.advance(10)
    for n in range(2):
        receiver.gate.feed(f"b{n}")
    assert receiver.handled == ["a0", "a1", "b0", "b1"]


def test_past_the_cap_warns_once_then_past_twice_cuts_off() -> None:
    """A flooder is warned when the queue passes the cap, and cut off past twice the cap."""
    receiver = Receiver(FloodLimits(burst=1, rate=1, queue_cap=5))
    for n in range(7):
        receiver.gate.feed(f"{n}")
    assert receiver.warnings == [6]
    assert not receiver.flooded
    for n in range(5):
        receiver.gate.feed(f"more {n}")
    assert receiver.warnings == [6]
    assert receiver.flooded
    assert receiver.gate.waiting == 0  # forgotten: the connection is going
    assert not receiver.clock.getDelayedCalls()


def test_waits_while_the_receiver_is_not_ready() -> None:
    """Nothing is handed on while the receiver is busy (a password check); drain resumes."""
    receiver = Receiver(FloodLimits(burst=5, rate=1, queue_cap=50))
    receiver.ready = False
    receiver.gate.feed("held")
    receiver.clock.advance(5)
    assert receiver.handled == []
    receiver.ready = True
    receiver.gate.drain()
    assert receiver.handled == ["held"]


def test_off_when_the_rate_is_zero() -> None:
    assert not FloodLimits(rate=0).enabled
    assert FloodLimits().enabled
