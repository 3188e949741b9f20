"""Tests for chatd.web's session: lines from WebSocket messages, events out as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.testing import StringTransport

from chatd.web import WebSession
from tests.test_accounts import AccountServer, register


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AccountServer]:
    server = AccountServer(tmp_path / "chatd.sqlite3")
    yield server
    server.store.stop()


def web_session(server: AccountServer) -> tuple[WebSession, StringTransport]:
    transport = StringTransport()
    session = server.factory.admit(transport.getPeer(), WebSession)
    assert isinstance(session, WebSession)
    session.makeConnection(transport)
    return session, transport


def events(transport: StringTransport) -> list[dict[str, object]]:
    found = [json.loads(line) for line in transport.value().decode().splitlines()]
    transport.clear()
    return found


def test_one_message_carries_alias_password_and_chat_in_order(server: AccountServer) -> None:
    """Lines after a password wait for its check, then go on in order."""
    register(server, "alice", "correct-horse").type("/quit\n")
    (bob,) = server.join("bob")
    session, transport = web_session(server)
    assert events(transport)[0]["type"] == "notice"
    session.feed(b"alice\ncorrect-horse\nhello from the web\n")
    server.clock.advance(0)
    kinds = [(e["type"], e.get("text", e.get("welcome"))) for e in events(transport)]
    assert kinds[:2] == [("notice", "alice is registered. Password:"), ("room", "alice")]
    assert "<alice> hello from the web" in bob.lines()


def test_an_empty_message_is_one_empty_line(server: AccountServer) -> None:
    session, transport = web_session(server)
    events(transport)
    session.feed(b"")
    assert events(transport)[0]["type"] == "error"  # no alias in it
