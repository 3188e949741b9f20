"""Tests for chatd.service: ports bound early, accepting only once the store is loaded."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.usage import UsageError

from chatd.admission import ConnectionLimits
from chatd.flood import FloodLimits
from chatd.hub import Hub
from chatd.service import GC_THRESHOLDS, ChatService, LiveSettings
from chatd.session import ChatConfig, Sessions
from chatd.stores.sqlite import SQLiteStore, run_synchronously


class RefusingReactor(MemoryReactorClock):
    """A reactor on which one port is taken by someone else."""

    def listenTCP(self, port, factory, backlog=50, interface=""):  # type: ignore[no-untyped-def]
        if port == 4001:
            raise CannotListenError(interface, port, OSError("Address already in use"))
        return super().listenTCP(port, factory, backlog, interface)


def make_service(
    path: Path, reactor: MemoryReactorClock, *endpoints: str, **options: Any
) -> ChatService:
    clock = Clock()
    store = SQLiteStore(path, clock=clock, run_in_thread=run_synchronously)
    sessions = Sessions(Hub(clock=clock, store=store), ChatConfig())
    return ChatService(sessions, store, endpoints, reactor=reactor, **options)


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
    # Each port's factory admits connections, then hands them to the one line factory.
    assert {id(factory.wrapped) for _, factory, _, _ in reactor.tcpServers} == {
        id(service.line_factory)
    }
    assert {id(factory.admission) for _, factory, _, _ in reactor.tcpServers} == {
        id(service.sessions.admission)
    }
    assert len(service.ports) == 2


def test_a_port_that_cannot_be_bound_stops_the_start(tmp_path: Path) -> None:
    """twistd in the foreground exits 1 after one critical line, instead of running unreachable."""
    service = make_service(tmp_path / "db", RefusingReactor(), "tcp:4000", "tcp:4001")
    with capturedLogs() as events, pytest.raises(SystemExit) as exit:
        service.privilegedStartService()
    assert exit.value.code == 1
    assert [(event["log_level"], formatEvent(event)) for event in events] == [
        (
            LogLevel.critical,
            "cannot listen on tcp:4001: Couldn't listen on any:4001: Address already in use.",
        )
    ]


def test_twistds_pidfile_goes_when_a_port_cannot_be_bound(tmp_path: Path) -> None:
    """The pidfile twistd wrote is removed as chatd ends the start, as twistd would remove it."""
    pidfile = tmp_path / "twistd.pid"
    pidfile.write_text("4242", encoding="utf-8")
    service = make_service(tmp_path / "db", RefusingReactor(), "tcp:4001", pidfile=str(pidfile))
    with pytest.raises(SystemExit):
        service.privilegedStartService()
    assert not pidfile.exists()


def test_a_daemonizing_twistd_is_given_the_error_its_parent_reports(tmp_path: Path) -> None:
    """Without --nodaemon the error itself reaches twistd, whose parent process prints it."""
    service = make_service(
        tmp_path / "db", RefusingReactor(), "tcp:4000", "tcp:4001", daemonizing=True
    )
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


def test_a_store_that_cannot_be_created_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """An unusable --data-dir (permissions, a file in the way) is one critical line."""
    reactor = MemoryReactorClock()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    service = make_service(blocker / "db", reactor, "tcp:4000")
    with capturedLogs() as events:
        service.startService()
    assert reactor.hasStopped
    [event] = [e for e in events if e["log_level"] >= LogLevel.error]
    assert event["log_level"] == LogLevel.critical
    assert "cannot open the store at" in formatEvent(event)
    assert "log_failure" not in event


def test_reload_applies_what_can_change_live(tmp_path: Path) -> None:
    """A reload replaces limits, timeouts, the MOTD, history replay and the operators."""
    reactor = MemoryReactorClock()
    service = make_service(tmp_path / "db", reactor, "tcp:4000")
    new_config = ChatConfig(
        alias_timeout_seconds=5,
        flood=FloodLimits(burst=3, rate=1),
        connections=ConnectionLimits(max_conns=7, max_per_ip=1, max_rate_per_ip=2),
    )
    service._reread = lambda: LiveSettings(new_config, "Be nice.", 5, {"root": "$argon2id$x"})
    service.reload()
    assert service.sessions.config == new_config
    assert service.sessions.admission.limits == new_config.connections
    hub = service.sessions.hub
    assert hub.motd == "Be nice."
    assert hub.history_replay == 5


def test_a_refused_reload_changes_nothing(tmp_path: Path) -> None:
    """A config file that now says something wrong is logged, and the running settings stay."""
    reactor = MemoryReactorClock()
    service = make_service(tmp_path / "db", reactor, "tcp:4000")
    before = service.sessions.config

    def broken() -> LiveSettings:
        raise UsageError("chatd.toml: max-per-ip: must be 0 or more, not -1")

    service._reread = broken
    service.reload()
    assert service.sessions.config is before


def test_the_collector_is_tuned_while_serving_and_restored_after(tmp_path: Path) -> None:
    """While the service runs, the garbage collector has chatd's thresholds and what
    start-up made is frozen out of its scans; stopping restores both."""
    before = gc.get_threshold()
    service = make_service(tmp_path / "db", MemoryReactorClock(), "tcp:4000")
    service.startService()
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        service.stopService()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
