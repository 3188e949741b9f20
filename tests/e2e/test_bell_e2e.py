"""End-to-end: the bell of a mention through a real daemon, to nc and to chatd-client."""

from __future__ import annotations

import shutil

import pytest

from chatd.client import NOT_REVERSE, REVERSE
from tests.daemon import Daemon, read_until
from tests.e2e.test_client_e2e import Terminal, client_command
from tests.e2e.test_netcat import Netcat


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
