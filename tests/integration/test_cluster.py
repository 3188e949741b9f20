"""Integration tests: real ``twistd -n chatd --redis`` nodes and a real Redis, as one chat."""

from __future__ import annotations

import re
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, read_until, start_chatd
from tests.integration.test_daemon import join
from tests.redisserver import RedisServer, free_port


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def start_node(tmp_path: Path, redis: RedisServer) -> Iterator:
    """Start chatd nodes on the test's Redis, each in its own directory; stop them after."""
    nodes: list[Daemon] = []

    def start(*options: str) -> Daemon:
        directory = tmp_path / f"node{len(nodes)}"
        directory.mkdir()
        node = start_chatd(directory, "--redis", redis.url, *options)
        nodes.append(node)
        return node

    yield start
    for number, node in enumerate(nodes):
        node.stop()
        print(f"--- node {number} log ---\n{node.log_text()}")  # shown if the test fails
        assert "Traceback" not in node.log_text(), node.log_text()


def test_three_nodes_are_one_chat(start_node) -> None:
    """Lines, notices, private messages, /who and history cross nodes; each line once, in order."""
    metrics_port = free_port()
    a = start_node("--flood-rate", "0", "--metrics", f"tcp:{metrics_port}:interface=127.0.0.1")
    b, c = start_node("--flood-rate", "0"), start_node("--flood-rate", "0")
    alice = join(a, "alice")
    bob = join(b, "bob")
    read_until(alice, b"*** bob has joined #lobby (2 here)\r\n")
    carol = join(c, "carol")
    read_until(bob, b"*** carol has joined #lobby (3 here)\r\n")
    lines = [f"line {n}" for n in range(200)]
    alice.sendall("".join(f"{line}\n" for line in lines).encode())
    expected = "".join(f"<alice> {line}\r\n" for line in lines).encode()
    for listener in (bob, carol):
        received = read_until(listener, b"<alice> line 199\r\n")
        said = b"".join(ln + b"\r\n" for ln in received.split(b"\r\n") if ln.startswith(b"<"))
        assert said == expected
    bob.sendall(b"/msg Carol only for you\n")
    read_until(carol, b"*bob* only for you\r\n")
    carol.sendall(b"/who *\n")
    read_until(carol, b"alice, bob, carol")
    dave = join(b, "dave")  # history is shared: said on a, asked for on b
    dave.sendall(b"/history 3\n")
    assert b"line 197" in read_until(dave, b"<alice> line 199")
    bob.sendall(b"/quit see you\n")
    read_until(alice, b"*** bob has left (Quit: see you)\r\n")
    read_until(carol, b"*** bob has left (Quit: see you)\r\n")
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        metrics = response.read().decode()
    assert "chatd_cluster_link_up 1.0" in metrics
    assert "chatd_cluster_remote_users 2.0" in metrics  # carol and dave
    published = re.search(r"^chatd_cluster_items_published_total (\S+)$", metrics, re.M)
    assert published is not None and float(published.group(1)) >= 200


def test_an_alias_is_unique_across_nodes(start_node) -> None:
    """An alias online on one node is refused on another, in any case, and free once gone."""
    a, b = start_node(), start_node()
    alice = join(a, "alice")
    other = b.connect()
    read_until(other, b"Choose an alias")
    other.sendall(b"ALICE\n")
    read_until(other, b"!!! The alias ALICE is taken.")
    alice.sendall(b"/quit\n")
    time.sleep(0.5)
    other.sendall(b"ALICE\n")
    read_until(other, b"Type /help for commands.")


def test_a_killed_node_is_announced_gone_within_seconds(start_node) -> None:
    """SIGKILL one node: the others announce its users' departure and free their aliases."""
    a, b = start_node(), start_node()
    alice = join(a, "alice")
    bob = join(b, "bob")
    read_until(alice, b"*** bob has joined")
    killed_at = time.monotonic()
    b.signal(signal.SIGKILL)
    read_until(alice, b"*** bob has left (Their server stopped answering)\r\n", timeout=15)
    took = time.monotonic() - killed_at
    assert took < 8, took
    join(a, "bob")
    bob.close()


def test_an_orderly_stop_tells_the_other_nodes(start_node) -> None:
    """SIGTERM on one node: the other nodes hear its users leave at once."""
    a, b = start_node(), start_node()
    alice = join(a, "alice")
    bob = join(b, "bob")
    read_until(alice, b"*** bob has joined")
    b.signal(signal.SIGTERM)
    read_until(alice, b"*** bob has left (Their server shut down)\r\n", timeout=5)
    assert b.wait(15) == 0
    bob.close()


def test_a_redis_restart_is_survived(start_node, redis: RedisServer) -> None:
    """Redis goes away: nodes keep their local chat and say so; when it is back, one chat again."""
    a, b = start_node(), start_node()
    alice = join(a, "alice")
    dave = join(a, "dave")
    bob = join(b, "bob")
    read_until(alice, b"*** bob has joined")
    redis.stop()
    read_until(alice, b"The link to the other chatd servers is down")
    read_until(bob, b"The link to the other chatd servers is down")
    alice.sendall(b"still here\n")
    read_until(dave, b"<alice> still here\r\n")
    redis.start()
    read_until(alice, b"The link to the other chatd servers is back.", timeout=15)
    read_until(bob, b"The link to the other chatd servers is back.", timeout=15)
    # Each node learns the other's members again (from the roster or their sync).
    deadline = time.monotonic() + 10
    while True:
        bob.sendall(b"/who *\n")
        try:
            read_until(bob, b"alice, bob, dave", timeout=1)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    alice.sendall(b"after the outage\n")
    read_until(bob, b"<alice> after the outage\r\n")
    clash = b.connect()
    read_until(clash, b"Choose an alias")
    clash.sendall(b"dave\n")
    read_until(clash, b"!!! The alias dave is taken.")


def test_rooms_topics_and_kicks_across_nodes(start_node) -> None:
    """Room moves and topics are seen from other nodes; an operator kicks a user of another."""
    from chatd.passwords import hash_password_now

    oper = "root:" + hash_password_now("operator-password")
    a, b = start_node("--oper", oper), start_node("--oper", oper)
    alice = join(a, "alice")
    bob = join(b, "bob")
    read_until(alice, b"*** bob has joined")
    bob.sendall(b"/join #rust\n")
    read_until(alice, b"*** bob has gone to #rust\r\n")
    alice.sendall(b"/join #rust\n/topic borrow checker\n")
    read_until(bob, b"borrow checker")
    alice.sendall(b"/rooms\n")
    read_until(alice, b"***   #rust (2): borrow checker")
    alice.sendall(b"/oper root operator-password\n")
    read_until(alice, b"You are now an operator")
    alice.sendall(b"/kick bob flooding\n")
    read_until(bob, b"You were kicked by alice: flooding")
    read_until(alice, b"*** bob has left (Kicked by alice: flooding)\r\n")
    bob.settimeout(5)
    assert socket_closed(bob)


def socket_closed(client: socket.socket) -> bool:
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True
