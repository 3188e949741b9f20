"""Every front end on one Sessions at once: what the session does for all of them alike."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from chatd.fronts.line import LineFactory
from chatd.fronts.web import web_site
from tests.test_protocol import Client as LineClient
from tests.test_ssh import SSHHarness
from tests.test_web import CLOSE, TEXT, WebUser


def test_a_shutdown_tells_and_closes_sessions_on_every_front_end(tmp_path: Path) -> None:
    """A shutdown tells a line, a web and an SSH user why, closes each the way its wire
    closes, and completes once all three are gone, before its grace period ends."""
    harness = SSHHarness(tmp_path)
    sessions = harness.chat
    line = LineClient(LineFactory(sessions))
    line.type("liner\n")
    _, ssh_client, pump = harness.connect(user=b"sshed")
    channel = harness.shell(ssh_client, pump)
    site = web_site(sessions, [])
    site.resource.factory.setProtocolOptions(
        openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0
    )
    web = WebUser(site, clock=harness.clock)
    web.say("webby")
    web.frames()
    line.lines()
    channel.received = b""
    assert len(sessions.live) == 3
    done = sessions.shut_down("Server shutting down.")
    finished: list[object] = []
    done.addBoth(finished.append)
    harness.clock.advance(0)
    pump.flush()
    assert line.lines() == ["*** Server shutting down."]
    assert line.transport.disconnecting
    assert b"*** Server shutting down." in channel.received
    assert channel.is_closed
    assert web.frames() == [
        (TEXT, b'{"type":"notice","text":"Server shutting down."}\n'),
        (CLOSE, b"\x03\xe8"),
    ]
    assert finished == []  # the line and web users have not closed yet
    line.finish_close()
    web.channel.connectionLost(Failure(ConnectionDone()))
    assert finished == [None]
    assert sessions.live == set()
