"""Tests for chatd.throttle: turns for password checks, and quotas, in bounded tables."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from chatd.passwords import PasswordsBusy
from chatd.throttle import (
    FORGET_AFTER_SECONDS,
    MAX_WAIT_SECONDS,
    PasswordThrottle,
    Quota,
)


def test_checks_at_once_queue_behind_each_other_ever_further_apart() -> None:
    """Checks sent together get turns 1, 2, 4, ... s apart after three, then are refused."""
    throttle = PasswordThrottle(Clock())
    waits = [throttle.turn("192.0.2.1", None) for _ in range(8)]
    assert waits == [0, 0, 0, 1, 3, 7, 15, 31]
    with pytest.raises(PasswordsBusy):
        throttle.turn("192.0.2.1", None)


def test_a_guesser_waiting_for_each_answer_waits_twice_as_long_each_time() -> None:
    """One check after the other: the wait doubles per failure after three, up to the cap."""
    clock = Clock()
    throttle = PasswordThrottle(clock)
    waits = []
    for _ in range(11):
        wait = throttle.turn("192.0.2.1", None)
        waits.append(wait)
        clock.advance(wait)
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_guesses_at_a_name_hold_up_their_address_not_the_name() -> None:
    """A guesser at alice's alias waits ever longer; alice, from elsewhere, does not wait."""
    clock = Clock()
    throttle = PasswordThrottle(clock)
    for _ in range(8):
        throttle.turn("192.0.2.1", "alice")
    with pytest.raises(PasswordsBusy):
        throttle.turn("192.0.2.1", "alice")
    assert throttle.turn("198.51.100.1", "alice") == 0


def test_without_an_address_a_name_is_throttled() -> None:
    """Checks with no address known (a UNIX socket) wait their turns by the name."""
    clock = Clock()
    throttle = PasswordThrottle(clock)
    waits = []
    for _ in range(6):
        waits.append(throttle.turn(None, "alice"))
        clock.advance(waits[-1])
    assert waits == [0, 0, 0, 1, 2, 4]
    assert throttle.turn(None, "bob") == 0  # another name is not held up


def test_a_success_clears_the_name_and_takes_back_its_own_address_count() -> None:
    """After a right password the name starts afresh; the address keeps its other failures."""
    throttle = PasswordThrottle(Clock())
    for _ in range(3):
        throttle.turn("192.0.2.1", "alice")
    throttle.succeeded("192.0.2.1", "alice")
    assert throttle.turn("198.51.100.1", "alice") == 0
    assert throttle.turn("192.0.2.2", "alice") == 0
    # The address has had three checks, one of them right: two failures and this one.
    assert throttle.turn("192.0.2.1", None) == 0
    assert throttle.turn("192.0.2.1", None) == 1


def test_quiet_keys_are_forgotten() -> None:
    """An address or name without checks for FORGET_AFTER_SECONDS starts afresh."""
    clock = Clock()
    throttle = PasswordThrottle(clock)
    for _ in range(5):
        clock.advance(throttle.turn("192.0.2.1", "alice"))
    clock.advance(FORGET_AFTER_SECONDS)
    throttle.turn("198.51.100.7", None)  # any check forgets the quiet keys
    assert throttle.tracked() == (1, 0)
    assert throttle.turn("192.0.2.1", "alice") == 0


def test_a_scan_from_many_addresses_keeps_the_table_bounded() -> None:
    """Checks from more addresses than the table holds forget the oldest, never growing past."""
    throttle = PasswordThrottle(Clock(), max_keys=50)
    for n in range(5000):
        throttle.turn(f"10.{n // 256 % 256}.{n % 256}.1", f"name{n}")
        throttle.turn(None, f"name{n}")
    assert throttle.tracked() == (50, 50)


def test_no_key_no_count() -> None:
    """A check with neither address nor name is never held up (nothing to count it by)."""
    throttle = PasswordThrottle(Clock())
    assert [throttle.turn(None, None) for _ in range(20)] == [0] * 20
    assert throttle.tracked() == (0, 0)


def test_refused_checks_are_not_counted() -> None:
    """A check refused for waiting too long does not push the next turns further away."""
    clock = Clock()
    throttle = PasswordThrottle(clock)
    waits = [throttle.turn("192.0.2.1", None) for _ in range(8)]
    for _ in range(100):
        with pytest.raises(PasswordsBusy):
            throttle.turn("192.0.2.1", None)
    clock.advance(waits[-1] + 1)
    assert throttle.turn("192.0.2.1", None) <= MAX_WAIT_SECONDS


def test_quota_allows_so_many_per_window() -> None:
    """Three events an hour: the fourth is refused with the seconds until one is allowed."""
    clock = Clock()
    quota = Quota(clock, 3, 3600)
    assert [quota.take("a") for _ in range(3)] == [0, 0, 0]
    clock.advance(600)
    assert quota.take("a") == 3000
    assert quota.take("b") == 0
    clock.advance(3000)
    assert quota.take("a") == 0


def test_quota_give_back() -> None:
    """An event given back (it did not happen after all) frees its place."""
    quota = Quota(Clock(), 1, 3600)
    assert quota.take("a") == 0
    quota.give_back("a")
    assert quota.take("a") == 0
    assert quota.take("a") > 0


def test_quota_table_is_bounded() -> None:
    """Events from more keys than the table holds never grow it past its bound."""
    quota = Quota(Clock(), 3, 3600, max_keys=20)
    for n in range(1000):
        quota.take(f"k{n}")
    assert quota.tracked() == 20
