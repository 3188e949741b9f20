"""Tests for chatd.admission: the global cap, the per-address cap and the per-address rate."""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd import admission
from chatd.admission import Admission, ConnectionLimits


def test_global_cap_counts_everyone_and_frees_on_release() -> None:
    gate = Admission(Clock(), ConnectionLimits(max_conns=2, max_per_ip=0, max_rate_per_ip=0))
    assert gate.admit("192.0.2.1") is None
    assert gate.admit(None) is None  # a UNIX socket counts towards the global cap only
    assert gate.admit("192.0.2.2") == "Server full: too many connections; try again later."
    gate.release(None)
    assert gate.admit("192.0.2.2") is None
    assert gate.connected == 2


def test_per_address_cap() -> None:
    gate = Admission(Clock(), ConnectionLimits(max_conns=0, max_per_ip=2, max_rate_per_ip=0))
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.1") == "Too many connections from 192.0.2.1 (at most 2)."
    assert gate.admit("192.0.2.2") is None  # others are not affected
    gate.release("192.0.2.1")
    assert gate.admit("192.0.2.1") is None


def test_per_address_rate_refills_over_a_minute() -> None:
    clock = Clock()
    gate = Admission(clock, ConnectionLimits(max_conns=0, max_per_ip=0, max_rate_per_ip=3))
    for _ in range(3):
        assert gate.admit("192.0.2.1") is None
        gate.release("192.0.2.1")
    assert gate.admit("192.0.2.1") == "Too many new connections from 192.0.2.1; wait a minute."
    clock.advance(20)  # a third of a minute: one connection's worth
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.1") is not None


def test_all_limits_off_at_zero() -> None:
    gate = Admission(Clock(), ConnectionLimits(max_conns=0, max_per_ip=0, max_rate_per_ip=0))
    assert all(gate.admit("192.0.2.1") is None for _ in range(1000))


def test_rate_table_forgets_quiet_addresses(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A scan from many addresses cannot grow the rate table without bound."""
    monkeypatch.setattr(admission, "MAX_TRACKED_ADDRESSES", 10)
    clock = Clock()
    gate = Admission(clock, ConnectionLimits(max_conns=0, max_per_ip=0, max_rate_per_ip=5))
    for n in range(10):
        gate.admit(f"198.51.100.{n}")
        gate.release(f"198.51.100.{n}")
    clock.advance(60)
    gate.admit("203.0.113.1")
    assert len(gate._buckets) == 1
