"""Tests for chatd.metrics: what the Prometheus endpoint reports."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.task import Clock

from chatd.admission import ConnectionLimits
from chatd.hub import Hub
from chatd.metrics import ChatCollector
from chatd.protocol import ChatConfig, ChatFactory
from chatd.store import Store
from tests.test_protocol import Client
from tests.test_store import run_synchronously


def scrape(factory: ChatFactory, store: Store) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(ChatCollector(factory, store))  # type: ignore[arg-type]
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_users_lines_bytes_and_refusals(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "db", clock=clock, run_in_thread=run_synchronously)
    hub = Hub(clock=clock)
    limits = ConnectionLimits(max_conns=0, max_per_ip=2, max_rate_per_ip=0)
    factory = ChatFactory(hub, ChatConfig(connections=limits))
    alice, bob = Client(factory), Client(factory)
    alice.type("alice\n")
    bob.type("bob\n")
    alice.lines(), bob.lines()
    before = scrape(factory, store)
    alice.type("hello\n")
    clock.advance(0)
    Client(factory)  # a third from the same address: refused
    after = scrape(factory, store)
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
