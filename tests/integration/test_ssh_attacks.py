"""Attacks on a real ``twistd chatd --ssh``, made with conch's own client in this process."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest_twisted
from twisted.conch.ssh.session import packRequest_pty_req
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from tests.daemon import read_until, start_chatd
from tests.test_ssh import SIZE, Client, ClientChannel

HUGE_WINDOW_BYTES = 2**31 - 1
PAYLOAD = b"y" * 900


def rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class GreedyChannel(ClientChannel):
    """A session channel that says it can take 2 GiB, and fires ``welcomed`` once chatting."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(localWindow=HUGE_WINDOW_BYTES, **kwargs)
        self.welcomed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if b"Type /help" in self.received and not self.welcomed.called:
            self.welcomed.callback(None)


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_its_socket_cannot_grow_the_server(
    tmp_path: Path,
) -> None:
    """A client with a huge channel window that stops reading TCP and keeps asking for
    /history does not grow the server: the send queue and reading both stop."""
    options = ("--ssh", "tcp:0:interface=127.0.0.1", "--flood-rate", "0")
    daemon = start_chatd(tmp_path, *options, "--sendq-bytes", "262144")
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        poster = daemon.connect()
        read_until(poster, b"Choose an alias")
        poster.sendall(b"poster\n" + b"".join(b"%d %s\n" % (n, PAYLOAD) for n in range(100)))
        read_until(poster, b"Type /help for commands.\r\n")
        client = Client(b"greedy", b"anything")
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", ssh_port), client)
        while client.conn.transport is None:
            await deferLater(reactor, 0.05)
        channel = GreedyChannel(conn=client.conn)
        client.conn.openChannel(channel)
        while not channel.opened:
            await deferLater(reactor, 0.05)
        client.conn.sendRequest(channel, b"pty-req", packRequest_pty_req(b"xterm", SIZE, b""))
        client.conn.sendRequest(channel, b"shell", b"")
        await channel.welcomed
        client.transport.pauseProducing()  # from now on the socket is never read
        await deferLater(reactor, 1.0)
        before = rss_bytes(daemon.process.pid)
        for _ in range(150):
            client.conn.sendData(channel, b"/history 100\r")
            await deferLater(reactor, 0.1)
        grown = rss_bytes(daemon.process.pid) - before
        assert grown < 4 * 1024 * 1024, f"grew {grown} bytes"  # before the fix, 11 MB
        client.transport.abortConnection()
        poster.close()
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log_text()


def test_garbage_instead_of_ssh_is_closed_with_one_line(tmp_path: Path) -> None:
    """Bytes that are not SSH close the connection at once, with one log line and no
    traceback."""
    daemon = start_chatd(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1")
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        attacker = socket.create_connection(("127.0.0.1", ssh_port), timeout=10)
        attacker.recv(100)
        attacker.sendall(b"SSH-2.0-attacker\r\n" + b"\x00\x00\x00\x0c\x04" + b"\x07" * 600)
        while attacker.recv(65536):
            pass
        attacker.close()
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert log.count("SSH connection closed") == 1, log
    assert "Traceback" not in log
