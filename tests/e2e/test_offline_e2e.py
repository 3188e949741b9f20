"""End-to-end: a private message to a registered user offline survives a restart of the
real daemon and reaches them, with its time, at their next login over netcat."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.daemon import start_chatd
from tests.e2e.test_netcat import Netcat

pytestmark = pytest.mark.skipif(shutil.which("nc") is None, reason="netcat is not installed")


def test_a_waiting_message_survives_a_restart(tmp_path: Path) -> None:
    """bob registers and quits; alice's /msg waits through a daemon restart; bob, back,
    gets it stamped with the time it was sent."""
    first = start_chatd(tmp_path)
    bob = alice = None
    try:
        bob = Netcat(first)
        bob.type("bob")
        bob.expect("*** Welcome, bob!")
        bob.type("/register correct-horse")
        bob.expect("*** Registered bob")
        bob.type("/quit")
        bob.expect("*** Goodbye.")
        alice = Netcat(first)
        alice.type("alice")
        alice.expect("*** Welcome, alice!")
        alice.type("/msg bob \x1b[31mwaiting through a restart")
        alice.expect("*** bob is offline: your message will wait for their next login")
    finally:
        for client in (bob, alice):
            if client is not None:
                client.close()
        first.stop()
    assert "Traceback" not in first.log_text()
    second = start_chatd(tmp_path)
    try:
        bob = Netcat(second)
        bob.type("bob")
        bob.expect("*** bob is registered. Password:")
        bob.type("correct-horse")
        bob.expect("*** 1 message waited for you:\r\n")
        bob.expect("*alice* waiting through a restart\r\n")
        stamp = rb"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\] \*alice\* waiting through a restart\r\n"
        assert re.search(stamp, bob.output)
    finally:
        bob.close()
        second.stop()
    assert "Traceback" not in second.log_text()
