"""Registered aliases, password logins, ghosts and operators, through the line protocol.

The store is real (a temporary SQLite file) but runs synchronously; hashing is a
transparent fake, so these tests are about the flow, not about argon2.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, succeed

from chatd.accounts import Accounts, PasswordRefused, check_new_password
from chatd.store import Store, run_synchronously
from tests.test_protocol import Client, Server


class FakePasswords:
    """Hashing without the cost: enough to test who may log in."""

    def hash_password(self, password: str) -> Deferred[str]:
        return succeed(f"fake${password}")

    def verify_password(self, password_hash: str, password: str) -> Deferred[bool]:
        return succeed(password_hash == f"fake${password}")


class AccountServer(Server):
    """A Server whose hub has accounts kept in a real, synchronous store."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.store = Store(path, clock=self.clock, run_in_thread=run_synchronously)
        self.store.start()
        self.hub.accounts = Accounts(self.store, FakePasswords(), {"root": "fake$operpass"})
        ensureDeferred(self.hub.accounts.load())

    def login(self, alias: str, password: str) -> Client:
        client = self.connect()
        client.lines()
        client.type(f"{alias}\n{password}\n")
        return client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AccountServer]:
    server = AccountServer(tmp_path / "chatd.sqlite3")
    yield server
    server.store.stop()


def register(server: AccountServer, alias: str, password: str) -> Client:
    (client,) = server.join(alias)
    client.type(f"/register {password}\n")
    assert client.lines() == [
        f"*** Registered {alias}: from now on it takes this password to use it."
    ]
    return client


def test_register_then_alias_needs_the_password(server: AccountServer) -> None:
    """After /register, taking the alias asks for its password and the right one gets in."""
    alice = register(server, "alice", "correct-horse")
    alice.type("/quit\n")
    alice.finish_close()
    newcomer = server.connect()
    newcomer.lines()
    newcomer.type("ALICE\n")
    assert newcomer.lines() == ["*** ALICE is registered. Password:"]
    newcomer.type("correct-horse\n")
    assert newcomer.lines()[0] == "*** Welcome, ALICE! You are in #lobby (1): ALICE"


def test_wrong_password_never_gets_in(server: AccountServer) -> None:
    """A wrong password is refused after a delay, with the prompt again, and gets nowhere."""
    register(server, "alice", "correct-horse")
    owner = server.hub.member_named("alice")
    assert owner is not None
    owner.disconnect("test")
    server.hub.leave(owner, "gone")
    intruder = server.login("alice", "wrong guess")
    assert intruder.lines() == ["*** alice is registered. Password:"]
    intruder.type("more typing while we wait\n")  # not read until the answer
    server.clock.advance(0.9)
    assert intruder.lines() == []
    server.clock.advance(0.1)
    lines = intruder.lines()
    assert lines[0] == "!!! Wrong password for alice."
    assert lines[1].startswith("*** Choose an alias (")
    assert lines[2] == "!!! An alias is at most 24 characters."  # read only now, as an alias
    assert server.hub.online() == ()


def test_registered_alias_cannot_be_taken_by_nick(server: AccountServer) -> None:
    """/nick to someone else's registered alias is refused."""
    alice = register(server, "alice", "correct-horse")
    alice.type("/nick ally\n")
    (bob,) = server.join("bob")
    alice.lines()
    bob.type("/nick alice\n")
    assert bob.lines() == ["!!! The alias alice is registered; connect with it and its password."]
    alice.type("/nick alice\n")  # the owner may take it back
    assert alice.lines()[-1] == "*** ally is now known as alice"


def test_ghost_session_is_replaced(server: AccountServer) -> None:
    """The owner logging in again closes their hanging old session and takes the name."""
    old = register(server, "alice", "correct-horse")
    (bob,) = server.join("bob")
    new = server.login("alice", "correct-horse")
    assert new.lines()[1].startswith("*** Welcome, alice!")
    assert old.transport.disconnecting
    assert bob.lines() == [
        "*** alice has left (Replaced by a new login)",
        "*** alice has joined #lobby (2 here)",
    ]
    old.finish_close()
    assert bob.lines() == []
    assert server.hub.member_named("alice") is new.protocol


def test_password_change(server: AccountServer) -> None:
    """/password replaces the password only when the old one is right."""
    alice = register(server, "alice", "correct-horse")
    alice.type("/password wrong-old new-password\n")
    server.clock.advance(1)
    assert alice.lines() == ["!!! Wrong password."]
    alice.type("/password correct-horse\n")
    assert alice.lines() == ["!!! Usage: /password OLD NEW"]
    alice.type("/password correct-horse x\n")
    assert alice.lines() == ["!!! A password needs at least 8 characters."]


def test_password_change_takes_effect(server: AccountServer) -> None:
    """After /password, the new password logs in and the old one does not."""
    alice = register(server, "alice", "first-pass")
    alice.type("/password first-pass second-pass\n")
    assert alice.lines() == ["*** Password changed."]
    alice.type("/quit\n")
    alice.finish_close()
    assert server.login("alice", "second-pass").lines()[1].startswith("*** Welcome, alice!")


def test_register_refusals(server: AccountServer) -> None:
    """Short passwords, registering twice and /password unregistered are refused."""
    (alice,) = server.join("alice")
    alice.type("/register short\n/password a b\n/register\n")
    assert alice.lines() == [
        "!!! A password needs at least 8 characters.",
        "!!! Your alias is not registered (see /register).",
        "!!! Usage: /register PASSWORD",
    ]
    alice.type("/register long-enough\n/register long-enough\n")
    assert alice.lines()[-1] == "!!! alice is registered already."


def test_ignores_persist_for_registered_aliases(server: AccountServer) -> None:
    """A registered user's ignore list comes back at their next login."""
    alice = register(server, "alice", "correct-horse")
    server.join("bob")
    alice.type("/ignore bob\n/quit\n")
    alice.finish_close()
    again = server.login("alice", "correct-horse")
    again.lines()
    bob = server.hub.member_named("bob")
    assert bob is not None
    server.hub.say(bob, "you cannot see me")
    assert again.lines() == []


def test_whois_shows_registration(server: AccountServer) -> None:
    """/whois says whether the alias is registered and its password was given."""
    alice = register(server, "alice", "correct-horse")
    alice.type("/whois alice\n")
    assert alice.lines()[0].endswith(", registered")
    alice.type("/nick other\n/whois other\n")
    assert alice.lines()[-1].endswith(", not registered")


def test_oper_with_right_and_wrong_password(server: AccountServer) -> None:
    """/oper grants operator rights for the configured password and refuses others slowly."""
    (alice,) = server.join("alice")
    alice.type("/oper root guess\n")
    assert alice.lines() == []
    server.clock.advance(1)
    assert alice.lines() == ["!!! Wrong operator name or password."]
    alice.type("/oper nobody operpass\n")
    server.clock.advance(1)
    assert alice.lines() == ["!!! Wrong operator name or password."]
    alice.type("/oper root operpass\n")
    assert alice.lines() == ["*** You are now an operator (root)."]
    assert server.hub.operator_name(alice.protocol) == "root"


@pytest.mark.parametrize("password", ["short", "has space inside", " leading-space"])
def test_check_new_password_refuses(password: str) -> None:
    """Passwords under 8 characters or with spaces are refused."""
    with pytest.raises(PasswordRefused):
        check_new_password(password)
