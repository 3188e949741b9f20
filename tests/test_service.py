"""Tests for chatd.service: ports bound early, accepting only once the store is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from chatd.hub import Hub
from chatd.protocol import ChatConfig, ChatFactory
from chatd.service import ChatService
from chatd.store import Store
from tests.test_store import run_synchronously


class RefusingReactor(MemoryReactorClock):
    """A reactor on which one port is taken by someone else."""

    def listenTCP(self, port, factory, backlog=50, interface=""):  # type: ignore[no-untyped-def]
        if port == 4001:
            raise CannotListenError(interface, port, OSError("Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def make_service(path: Path, reactor: MemoryReactorClock, *endpoints: str) -> ChatService:
    clock = Clock()
    store = Store(path, clock=clock, run_in_thread=run_synchronously)
    factory = ChatFactory(Hub(clock=clock, store=store), ChatConfig())
    return ChatService(factory, store, endpoints, reactor=reactor)


def test_ports_are_bound_at_privileged_start(tmp_path: Path) -> None:
    """Every --port is bound before twistd sheds privileges, each with the one factory."""
    reactor = MemoryReactorClock()
    service = make_service(
        tmp_path / "db", reactor, "tcp:4000:interface=127.0.0.1", "tcp:4002:interface=127.0.0.1"
    )
    service.privilegedStartService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (4000, "127.0.0.1"),
        (4002, "127.0.0.1"),
    ]
    assert {id(factory) for _, factory, _, _ in reactor.tcpServers} == {id(service.factory)}
    assert len(service.ports) == 2


def test_a_port_that_cannot_be_bound_stops_the_start(tmp_path: Path) -> None:
    """twistd gets the error (and exits non-zero) instead of running a daemon nobody reaches."""
    service = make_service(tmp_path / "db", RefusingReactor(), "tcp:4000", "tcp:4001")
    with pytest.raises(CannotListenError):
        service.privilegedStartService()


def test_start_loads_the_store_then_is_ready(tmp_path: Path) -> None:
    """startService binds (if not done yet), opens the store and fires ``ready``."""
    reactor = MemoryReactorClock()
    service = make_service(tmp_path / "db", reactor, "tcp:4000")
    service.startService()
    assert len(reactor.tcpServers) == 1
    assert service.ready.called
    assert (tmp_path / "db").exists()
    stopping = service.stopService()
    assert stopping.called
    assert not (tmp_path / "db-wal").exists()  # the store was closed cleanly
