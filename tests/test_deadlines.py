"""Tests for chatd.deadlines: deadlines of one length for many items, with one timer."""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd.deadlines import Deadlines


def make(seconds: float = 30.0) -> tuple[Clock, Deadlines[str], list[str]]:
    clock = Clock()
    expired: list[str] = []
    return clock, Deadlines(clock, seconds, expired.append), expired


def test_each_item_expires_its_seconds_after_it_was_added_not_before() -> None:
    """Every item expires at its own deadline, in order, to the timer's precision."""
    clock, deadlines, expired = make()
    deadlines.add("a")
    clock.advance(10)
    deadlines.add("b")
    clock.advance(19.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == ["a"]
    assert "a" not in deadlines and "b" in deadlines
    clock.advance(9.9)
    assert expired == ["a"]
    clock.advance(0.1)
    assert expired == ["a", "b"]
    assert clock.getDelayedCalls() == []


def test_a_discarded_item_never_expires_and_the_last_takes_the_timer() -> None:
    """Discarding stops an item's deadline; with none left, no timer is left behind."""
    clock, deadlines, expired = make()
    deadlines.add("a")
    deadlines.add("b")
    deadlines.discard("a")
    deadlines.discard("unknown")
    assert len(clock.getDelayedCalls()) == 1
    deadlines.discard("b")
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert expired == []


def test_one_timer_serves_every_item() -> None:
    """However many items wait, the clock holds one call."""
    clock, deadlines, expired = make()
    for n in range(100):
        deadlines.add(str(n))
        clock.advance(0.1)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(30)
    assert expired == [str(n) for n in range(100)]


def test_a_change_applies_to_the_deadlines_running() -> None:
    """New seconds count from each item's start, for those waiting too."""
    clock, deadlines, expired = make()
    deadlines.add("a")
    clock.advance(5)
    deadlines.add("b")
    deadlines.change(8)
    assert expired == []
    clock.advance(3)
    assert expired == ["a"]
    clock.advance(5)
    assert expired == ["a", "b"]
    deadlines.add("c")
    deadlines.change(60)
    clock.advance(59)
    assert expired == ["a", "b"]
    clock.advance(1)
    assert expired == ["a", "b", "c"]


def test_an_item_added_while_expiring_gets_its_full_time() -> None:
    """What an expiry adds (a session closing at its alias timeout) waits its own seconds."""
    clock = Clock()
    expired: list[str] = []
    deadlines: Deadlines[str] = Deadlines(clock, 10, lambda item: expire(item))

    def expire(item: str) -> None:
        expired.append(item)
        if item == "a":
            deadlines.add("again")

    deadlines.add("a")
    clock.advance(10)
    assert expired == ["a"]
    clock.advance(9.9)
    assert expired == ["a"]
    clock.advance(0.1)
    assert expired == ["a", "again"]
