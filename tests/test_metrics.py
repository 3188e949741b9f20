"""Tests for chatd.metrics: what the Prometheus endpoint reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web.server import Site
from twisted.web.static import Data

from chatd.admission import AdmittingFactory, ConnectionLimits, RefusedConnection, refusal_line
from chatd.fronts.httpsite import HEAD_DEADLINE_SECONDS
from chatd.fronts.line import LineFactory
from chatd.hub import Hub
from chatd.metrics import ChatCollector, metrics_site
from chatd.session import ChatConfig, Sessions
from chatd.stores.sqlite import SQLiteStore, run_synchronously
from tests.test_protocol import Client
from tests.test_web import HttpConnection, fuzz_site, logged

__all__ = ["logged"]  # a fixture, shared with test_web


def scrape(sessions: Sessions, store: SQLiteStore) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(ChatCollector(sessions, store))  # type: ignore[arg-type]
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_users_lines_bytes_and_refusals(tmp_path: Path) -> None:
    """Users, connections, rooms, lines, bytes and refusals are read at scrape time."""
    clock = Clock()
    store = SQLiteStore(tmp_path / "db", clock=clock, run_in_thread=run_synchronously)
    hub = Hub(clock=clock)
    limits = ConnectionLimits(max_conns=0, max_per_ip=2, max_rate_per_ip=0)
    sessions = Sessions(hub, ChatConfig(connections=limits))
    factory = LineFactory(sessions)
    alice, bob = Client(factory), Client(factory)
    alice.type("alice\n")
    bob.type("bob\n")
    alice.lines(), bob.lines()
    before = scrape(sessions, store)
    alice.type("hello\n")
    clock.advance(0)
    # Connections are counted (and refused) at accept time, by the listener's wrapper.
    admitting = AdmittingFactory(factory, sessions.admission, refusal_line)
    address = IPv4Address("TCP", "192.0.2.1", 4000)
    connections = [admitting.buildProtocol(address) for _ in range(3)]
    assert isinstance(connections[2], RefusedConnection)  # a third from one address
    after = scrape(sessions, store)
    assert after["chatd_users"] == 2
    assert after["chatd_connections"] == 2
    assert after["chatd_rooms"] == 1
    assert after["chatd_lines_received_total"] == before["chatd_lines_received_total"] + 1
    assert after["chatd_lines_delivered_total"] == before["chatd_lines_delivered_total"] + 1
    assert after["chatd_bytes_sent_total"] == before["chatd_bytes_sent_total"] + len(
        b"<alice> hello\r\n"
    )
    assert after['chatd_refused_connections_total{limit="max_per_ip"}'] == 1
    assert after['chatd_disconnects_total{reason="sendq"}'] == 0
    assert after["chatd_history_write_seconds_count"] == 0


def metrics_site_in_memory(tmp_path: Path) -> tuple[Site, Clock]:
    """The metrics site, with a fixed page where the scrape would be (it runs in a thread)."""
    clock = Clock()
    store = SQLiteStore(tmp_path / "db", clock=clock, run_in_thread=run_synchronously)
    site = metrics_site(Sessions(Hub(clock=clock), ChatConfig()), store)
    for name in (b"", b"metrics"):
        site.resource.putChild(name, Data(b"chatd_users 0\n", "text/plain"))
    return site, clock


def test_the_metrics_port_refuses_request_bodies(tmp_path: Path) -> None:
    """A POST announcing a body is answered 405 and closed before any of the body is read."""
    site, _ = metrics_site_in_memory(tmp_path)
    connection = HttpConnection(site)
    connection.send(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n")
    assert connection.answer().startswith(b"HTTP/1.1 405 ")
    assert connection.closed


def test_the_metrics_port_gives_a_request_head_a_deadline(tmp_path: Path) -> None:
    """A slowloris on the metrics port is answered 408 and closed at the deadline."""
    site, clock = metrics_site_in_memory(tmp_path)
    connection = HttpConnection(site)
    connection.send(b"GET /metrics HTTP/1.1\r\n")
    for n in range(int(HEAD_DEADLINE_SECONDS) - 1):
        clock.advance(1)
        connection.send(f"X-Slow-{n}: 1\r\n".encode())
    assert not connection.closed
    clock.advance(1)
    assert connection.answer().startswith(b"HTTP/1.1 408 ")


def test_odd_requests_to_the_metrics_port_log_no_traceback(
    tmp_path: Path, logged: list[dict[str, Any]]
) -> None:
    """A few hundred odd paths, methods and headers: each answered, none logs a traceback."""
    site, clock = metrics_site_in_memory(tmp_path)
    fuzz_site(site, clock, logged)
