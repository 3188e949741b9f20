"""End-to-end: real netcat clients talk to each other through a real daemon (or two)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.daemon import Daemon, start_chatd
from tests.redisserver import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("nc") is None, reason="netcat is not installed")


class Netcat:
    """A real ``nc`` process whose output is collected by a reader thread."""

    def __init__(self, daemon: Daemon) -> None:
        self.process = subprocess.Popen(
            ["nc", daemon.host, str(daemon.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.output = b""
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(65536):
            with self._changed:
                self.output += chunk
                self._changed.notify_all()

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, text: str, timeout: float = 10) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: text.encode() in self.output, timeout):
                raise AssertionError(f"{text!r} not in {self.output!r}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def test_two_netcat_clients_chat(chatd: Daemon) -> None:
    """nc users pick aliases, exchange lines both ways, and see each other leave."""
    alice, bob = Netcat(chatd), Netcat(chatd)
    try:
        alice.expect("Choose an alias")
        alice.type("alice")
        alice.expect("*** Welcome, alice!")
        bob.type("bob")
        bob.expect("*** Welcome, bob! You are in #lobby (2): alice, bob\r\n")
        alice.expect("*** bob has joined #lobby (2 here)\r\n")
        alice.type("hi bob")
        bob.expect("<alice> hi bob\a\r\n")  # it mentions bob: his terminal's bell
        bob.type("/me waves back")
        alice.expect("* bob waves back\r\n")
        bob.type("/quit bye")
        bob.expect("*** Goodbye.\r\n")
        assert bob.process.stdin is not None
        bob.process.stdin.close()
        assert bob.process.wait(10) == 0  # the server closed; nc ends with its input
        alice.expect("*** bob has left (Quit: bye)\r\n")
    finally:
        alice.close()
        bob.close()


def test_netcat_clients_on_two_cluster_nodes_chat(tmp_path: Path) -> None:
    """nc users on two chatd nodes sharing a Redis talk as if on one server."""
    with RedisServer() as redis:
        nodes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            nodes.append(start_chatd(tmp_path / name, "--redis", redis.url))
        # carol, on node b, shows when node b has heard of alice's arrival on node
        # a: only then is bob's welcome there sure to name her (the news goes
        # through Redis, and a busy machine can take its time).
        alice, bob, carol = Netcat(nodes[0]), Netcat(nodes[1]), Netcat(nodes[1])
        try:
            carol.type("carol")
            carol.expect("*** Welcome, carol!")
            alice.type("alice")
            alice.expect("*** Welcome, alice!")
            carol.expect("*** alice has joined #lobby (2 here)\r\n")
            bob.type("bob")
            bob.expect("*** Welcome, bob! You are in #lobby (3): alice, bob, carol\r\n")
            alice.expect("*** bob has joined #lobby (3 here)\r\n")
            alice.type("hi bob, from the other server")
            # It mentions bob: his bell rings, whichever node the line was said on.
            bob.expect("<alice> hi bob, from the other server\a\r\n")
            bob.type("/msg alice psst")
            alice.expect("*bob* psst\r\n")
            bob.type("/quit bye")
            bob.expect("*** Goodbye.\r\n")
            alice.expect("*** bob has left (Quit: bye)\r\n")
        finally:
            alice.close()
            bob.close()
            carol.close()
            for node in nodes:
                node.stop()
