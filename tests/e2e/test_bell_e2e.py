"""End-to-end: the bell and the mark of a mention through a real daemon, to nc,
chatd-client in a terminal and a WebSocket client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chatd.client import NOT_REVERSE, REVERSE
from tests.daemon import Daemon, read_until, start_chatd
from tests.e2e.test_client_e2e import Terminal, client_command
from tests.e2e.test_netcat import Netcat
from tests.wsclient import WebSocketClient


@pytest.mark.skipif(shutil.which("nc") is None, reason="netcat is not installed")
def test_an_nc_user_named_in_a_line_hears_the_bell_until_bell_off(chatd: Daemon) -> None:
    """Over real nc, a line naming bob ends in a BEL for him alone; /bell off stops it."""
    alice, bob = Netcat(chatd), Netcat(chatd)
    try:
        alice.expect("Choose an alias")
        alice.type("alice")
        alice.expect("*** Type /help for commands.")
        bob.expect("Choose an alias")
        bob.type("bob")
        alice.expect("*** bob has joined #lobby (2 here)")
        alice.type("Bob: ring\a ring")  # the BEL typed is stripped; the server's is added
        bob.expect("<alice> Bob: ring ring\a\r\n")
        bob.type("/bell off")
        bob.expect("*** The bell for lines that mention you is off.\r\n")
        alice.type("bob: quiet now")
        bob.expect("<alice> bob: quiet now\r\n")
        bob.type("/me waves at alice")
        alice.expect("* bob waves at alice\a\r\n")
        assert alice.output.count(b"\a") == 1
        assert bob.output.count(b"\a") == 1
    finally:
        alice.close()
        bob.close()


@pytest.mark.skipif(shutil.which("nc") is None, reason="netcat is not installed")
def test_an_nc_user_named_by_a_burst_of_lines_hears_one_bell(chatd: Daemon) -> None:
    """Hostile, over real nc: three senders' lines naming bob, one naming him 200 times,
    ring his terminal once; every line still reaches him."""
    users = [Netcat(chatd) for _ in range(4)]
    bob, *others = users
    try:
        for user, alias in zip(users, ["bob", "ann", "cid", "dee"], strict=True):
            user.expect("Choose an alias")
            user.type(alias)
            user.expect("*** Type /help for commands.")
        for user in others:
            user.type("bob " * 200)
            user.type("@bob!")
        for alias in ("ann", "cid", "dee"):
            bob.expect(f"<{alias}> @bob!")
        assert bob.output.count(b"\a") == 1
        assert bob.output.count(b"> bob bob") == 3
    finally:
        for user in users:
            user.close()


def test_chatd_client_highlights_and_rings_at_a_terminal(chatd: Daemon) -> None:
    """In a terminal, chatd-client shows a line naming its alias in reverse video and rings."""
    bob = chatd.connect(timeout=15)
    alice = Terminal(client_command(chatd, "--alias", "alice"))
    try:
        read_until(bob, b"Choose an alias")
        bob.sendall(b"bob\n")
        read_until(bob, b"*** Type /help for commands.\r\n")
        alice.expect(b"*** Type /help for commands.")
        read_until(bob, b"*** alice has joined #lobby (2 here)\r\n")
        bob.sendall(b"no mention\n")
        shown = alice.expect(b"<bob> no mention")
        bob.sendall(b"alice: ping\n")
        alice.expect(b"<bob> alice: ping", shown)
        alice.output.wait_for(
            lambda data: f"{REVERSE}<bob> alice: ping{NOT_REVERSE}\a".encode() in data,
            "the highlighted line and its bell",
        )
        assert alice.output.data.count(b"\a") == 1
        alice.type(b"\x04")  # Ctrl-D: quit
        assert alice.wait() == 0
    finally:
        alice.close()
        bob.close()


def test_a_websocket_user_gets_the_mark_whatever_the_bell(tmp_path: Path) -> None:
    """Over the real --web WebSocket, a line naming its user carries "mention": true, with
    the bell on or off, a line that does not name them nothing, and history marks it."""
    daemon = start_chatd(tmp_path, "--web", "tcp:0:interface=127.0.0.1")
    try:
        _, web_port = daemon.wait_for_ports(2)
        web = WebSocketClient(web_port, origin=f"http://127.0.0.1:{web_port}")
        web.send("webby")
        web.until(lambda e: e["type"] == "room")
        line = daemon.connect(timeout=15)
        read_until(line, b"Choose an alias")
        line.sendall(b"liner\n")
        web.until(lambda e: e["type"] == "join")
        line.sendall(b"hi all\n@Webby: look\n")
        assert web.until(lambda e: e["type"] == "message") == {
            "type": "message", "sender": "liner", "text": "hi all"
        }  # fmt: skip
        assert web.until(lambda e: e["type"] == "message") == {
            "type": "message", "sender": "liner", "text": "@Webby: look", "mention": True
        }  # fmt: skip
        web.send("/bell off")
        web.until(lambda e: e["type"] == "notice" and "bell" in e["text"])
        line.sendall(b"/me pings webby\n")
        assert web.until(lambda e: e["type"] == "action")["mention"] is True
        web.send("/history 3")
        entries = web.until(lambda e: e["type"] == "history")["entries"]
        assert [entry.get("mention", False) for entry in entries] == [False, True, True]
        web.close()
        line.close()
    finally:
        daemon.stop()
