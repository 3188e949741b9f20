"""Tests for chatd.admission: the global cap, the per-address cap and the per-address rate."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ILoggingContext, IProtocolFactory, ISSLTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import directlyProvides

from chatd import admission
from chatd.admission import (
    Admission,
    AdmittedConnection,
    AdmittingFactory,
    ConnectionLimits,
    admission_key,
    canonical_host,
    refusal_http,
    refusal_line,
)


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


# Accept-time admission on every listener (issue 12, item 5), and addresses (item 10).


class Recorder(Protocol):
    """A wrapped protocol that notes what happened to it."""

    def __init__(self) -> None:
        self.data = b""
        self.lost = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost += 1


def admitting(limits: ConnectionLimits, refusal=refusal_line):  # type: ignore[no-untyped-def]
    gate = Admission(Clock(), limits)
    return gate, AdmittingFactory(Factory.forProtocol(Recorder), gate, refusal)


def connect(
    factory: AdmittingFactory, host: str = "192.0.2.1"
) -> tuple[Protocol, StringTransport]:
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_refused_connection_is_told_why_and_closed_before_any_protocol_is_built() -> None:
    """Past a limit the listener writes one refusal and closes; nothing else is built."""
    gate, factory = admitting(ConnectionLimits(max_conns=0, max_per_ip=1, max_rate_per_ip=0))
    connect(factory)
    refused, transport = connect(factory)
    assert not isinstance(refused, AdmittedConnection)
    assert transport.value() == b"!!! Too many connections from 192.0.2.1 (at most 1).\r\n"
    assert transport.disconnecting
    assert gate.connected == 1


def test_web_and_metrics_ports_refuse_with_an_http_503() -> None:
    """An HTTP listener refuses with a response a browser or scraper understands."""
    _, factory = admitting(
        ConnectionLimits(max_conns=1, max_per_ip=0, max_rate_per_ip=0), refusal_http
    )
    connect(factory)
    _, transport = connect(factory, "192.0.2.2")
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close" in head
    assert body == b"Server full: too many connections; try again later.\n"


def test_an_admitted_connection_writes_straight_to_its_transport_and_frees_its_slot_once() -> None:
    """The wrapped protocol gets the real transport; the slot comes back on close, once."""
    gate, factory = admitting(ConnectionLimits(max_conns=0, max_per_ip=1, max_rate_per_ip=0))
    protocol, transport = connect(factory)
    assert isinstance(protocol, AdmittedConnection)
    wrapped = protocol.wrapped
    assert wrapped.transport is transport
    protocol.dataReceived(b"hello")
    assert wrapped.data == b"hello"
    protocol.connectionLost(Failure(ConnectionDone()))
    protocol.connectionLost(Failure(ConnectionDone()))
    assert wrapped.lost == 2  # passed on as it came; the slot is released once
    assert gate.connected == 0
    connect(factory)
    assert gate.connected == 1


def test_a_wrapped_factory_that_builds_nothing_gives_the_slot_back() -> None:
    """A factory may decline a connection (None): its slot is not held forever."""
    gate = Admission(Clock(), ConnectionLimits(max_conns=1, max_per_ip=0, max_rate_per_ip=0))
    declining = Factory()
    declining.buildProtocol = lambda addr: None  # type: ignore[method-assign]
    factory = AdmittingFactory(declining, gate, refusal_line)
    assert factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)) is None
    assert gate.connected == 0


@pytest.mark.parametrize(
    ("host", "canonical", "key"),
    [
        ("192.0.2.1", "192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::FFFF", "2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::1", "fe80::/64"),
        (None, None, None),
    ],
)
def test_addresses_are_counted_as_a_person_holds_them(
    host: str | None, canonical: str | None, key: str | None
) -> None:
    """IPv4-mapped IPv6 is the IPv4 address; IPv6 is counted by its /64."""
    assert canonical_host(host) == canonical
    assert admission_key(host) == key


def test_one_ipv6_subscriber_cannot_dodge_the_per_address_cap() -> None:
    """Addresses of one /64 share the per-address cap; a dual-stack IPv4 client shares its own."""
    _, factory = admitting(ConnectionLimits(max_conns=0, max_per_ip=2, max_rate_per_ip=0))
    connect(factory, "2001:db8::1")
    connect(factory, "2001:db8::2")
    _, transport = connect(factory, "2001:db8::3")
    assert transport.value().startswith(b"!!! Too many connections from 2001:db8::/64")
    connect(factory, "192.0.2.9")
    connect(factory, "::ffff:192.0.2.9")
    _, transport = connect(factory, "192.0.2.9")
    assert transport.value().startswith(b"!!! Too many connections from 192.0.2.9")


def test_a_refused_tls_connection_is_aborted_not_left_waiting_for_a_handshake() -> None:
    """A close over TLS waits for a handshake a flood never makes: refusals abort at once."""
    _, factory = admitting(ConnectionLimits(max_conns=1, max_per_ip=0, max_rate_per_ip=0))
    connect(factory)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 40000))
    directlyProvides(transport, ISSLTransport)
    factory.buildProtocol(transport.getPeer()).makeConnection(transport)
    assert transport.disconnected  # StringTransport's abortConnection
    assert transport.value() == b""


def test_an_address_at_its_cap_spends_its_rate_on_every_attempt() -> None:
    """Attempts refused for the per-address cap still count against the connection rate."""
    gate, factory = admitting(ConnectionLimits(max_conns=0, max_per_ip=1, max_rate_per_ip=3))
    first, _ = connect(factory)
    for _ in range(2):
        connect(factory)  # refused: the cap
    first.connectionLost(Failure(ConnectionDone()))
    _, transport = connect(factory)
    assert transport.value() == b"!!! Too many new connections from 192.0.2.1; wait a minute.\r\n"
    assert gate.refused == {"max_per_ip": 2, "max_conn_rate": 1}


def test_a_listener_logs_under_the_name_of_the_factory_it_admits_for() -> None:
    """The port's "starting on" line names the chat, web, SSH or metrics factory, not ours."""
    _, factory = admitting(ConnectionLimits())
    assert ILoggingContext.providedBy(factory)
    assert IProtocolFactory.providedBy(factory)
    assert factory.logPrefix() == "Factory"
