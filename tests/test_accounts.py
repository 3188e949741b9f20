"""Registered aliases, password logins, ghosts and operators, through the line protocol.

The store is real (a temporary SQLite file) but runs synchronously; hashing is a
transparent fake, so these tests are about the flow, not about argon2.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, succeed

from chatd.accounts import Accounts, PasswordRefused, check_new_password, parse_ssh_key
from chatd.hub import Hub
from chatd.store import Store, run_synchronously
from tests.test_protocol import Client, Server
from tests.test_store import succeeded


class FakePasswords:
    """Hashing without the cost: enough to test who may log in."""

    def hash_password(self, password: str) -> Deferred[str]:
        return succeed(f"fake${password}")

    def verify_password(self, password_hash: str, password: str) -> Deferred[bool]:
        return succeed(password_hash == f"fake${password}")


class AccountServer(Server):
    """A Server whose hub has accounts kept in a real, synchronous store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__()

    def make_hub(self, history_replay: int) -> Hub:
        self.store = Store(self.path, clock=self.clock, run_in_thread=run_synchronously)
        self.store.start()
        accounts = Accounts(self.store, FakePasswords(), {"root": "fake$operpass"})
        ensureDeferred(accounts.load())
        return Hub(self.clock, store=self.store, accounts=accounts)

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


# Bans and the message of the day.


def operator(server: AccountServer, alias: str = "olivia") -> Client:
    (client,) = server.join(alias)
    server.hub.make_operator(client.protocol, "root")
    client.lines()
    return client


def test_ban_alias_kicks_and_refuses_at_alias_time(server: AccountServer) -> None:
    """An alias ban disconnects its holder and refuses that alias from then on."""
    oper = operator(server)
    (troll,) = server.join("troll")
    oper.lines()
    oper.type("/ban Troll 1h spamming links\n")
    assert oper.lines() == [
        "*** Banned alias troll until 1970-01-01 01:00:00Z.",
        "*** troll has left (Banned by olivia: spamming links)",
    ]
    assert troll.lines() == ["!!! You are banned: spamming links"]
    assert troll.transport.disconnecting
    again = server.connect()
    again.lines()
    again.type("TROLL\n")
    assert again.lines() == [
        "!!! You are banned from this server until 1970-01-01 01:00:00Z: spamming links"
    ]
    assert again.transport.disconnecting


def test_ip_and_cidr_bans_refuse_at_connect(server: AccountServer) -> None:
    """An IP or CIDR ban turns away connections from it before the greeting."""
    oper = operator(server)
    oper.type("/ban 192.168.0.0/16 flood\n")  # StringTransport peers are 192.168.1.1
    assert oper.lines() == ["*** Banned cidr 192.168.0.0/16 for good."]
    refused = server.connect()
    assert refused.lines() == ["!!! You are banned from this server: flood"]
    assert refused.transport.disconnecting
    oper.type("/bans\n/unban 192.168.0.0/16\n")
    assert oper.lines() == [
        "*** Bans (1):",
        "***   192.168.0.0/16 (cidr) by root for good: flood",
        "*** Lifted the ban on 192.168.0.0/16.",
    ]
    assert server.connect().lines()[0].startswith("*** Welcome to chatd")


def test_ban_expires(server: AccountServer) -> None:
    """A ban with a duration stops applying when it runs out."""
    oper = operator(server)
    oper.type("/ban 192.168.1.1 10m\n")
    assert server.connect().lines()[0].startswith("!!! You are banned")
    server.clock.advance(600)
    assert server.connect().lines()[0].startswith("*** Welcome to chatd")


def test_bans_persist_in_the_store(server: AccountServer) -> None:
    """A ban is in the store once the operator is told it is done."""
    oper = operator(server)
    oper.type("/ban troll\n")
    bans = []
    server.store.active_bans(0).addCallback(bans.extend)
    assert [(ban.mask, ban.kind, ban.set_by) for ban in bans] == [("troll", "alias", "root")]


def test_a_ban_the_store_refuses_is_reported_and_not_enforced(server: AccountServer) -> None:
    """If the ban cannot be saved (disk full, Redis down), the operator is told; nobody is cut."""
    oper = operator(server)
    (troll,) = server.join("troll")
    oper.lines()
    server.store.stop()
    oper.type("/ban troll\n")
    assert oper.lines() == ["!!! The ban on troll could not be saved; try again later."]
    assert server.hub.banned(alias="troll") is None
    assert not troll.transport.disconnecting


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/ban", "!!! Usage: /ban ALIAS|IP|CIDR [DURATION] [REASON]"),
        ("/ban no/such/thing", "!!! Not an alias, IP address or CIDR block: no/such/thing"),
        ("/unban troll", "!!! No ban on troll."),
        ("/unban", "!!! Usage: /unban ALIAS|IP|CIDR"),
    ],
)
def test_ban_errors(server: AccountServer, line: str, error: str) -> None:
    """Malformed bans and unknown unbans are refused."""
    oper = operator(server)
    oper.type(line + "\n")
    assert oper.lines() == [error]


def test_motd_shown_at_login_and_set_by_operators(server: AccountServer) -> None:
    """The MOTD follows the welcome; operators change it and it is kept in the store."""
    server.hub.motd_file_text = "From the file"
    (alice,) = server.join_keeping_lines("alice")
    assert alice.lines()[2:4] == ["*** Message of the day:", "*** From the file"]
    alice.type("/motd new text\n")
    assert alice.lines() == ["!!! Not permitted: operators only."]
    oper = operator(server)
    oper.type("/motd Be nice \x1b[5m\n")
    assert oper.lines() == ["*** Message of the day:", "*** Be nice"]
    settings = []
    server.store.get_setting("motd").addCallback(settings.append)
    assert settings == ["Be nice"]
    alice.lines()
    alice.type("/motd\n")
    assert alice.lines() == ["*** Message of the day:", "*** Be nice"]
    oper.type("/motd -\n")
    assert oper.lines() == ["*** Message of the day:", "*** From the file"]


def public_key_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_sshkey_add_list_remove(server: AccountServer) -> None:
    """A registered alias binds, lists and unbinds SSH keys; others may not; junk is refused."""
    alice = register(server, "alice", "correct-horse")
    line = public_key_line()
    fingerprint, _ = parse_ssh_key(line)
    alice.type(f"/sshkey add {line} alice@laptop\n")
    assert alice.lines() == [
        f"*** SSH key {fingerprint} now logs you in as alice, no password asked."
    ]
    alice.type("/sshkey list\n")
    assert alice.lines() == ["*** SSH keys of alice: 1", f"*** {fingerprint} ssh-ed25519"]
    alice.type("/sshkey add not a key\n/sshkey\n")
    assert alice.lines() == [
        "!!! That is not an SSH public key (paste a line of id_ed25519.pub).",
        "!!! Usage: /sshkey add KEY | list | remove FINGERPRINT",
    ]
    alice.type(f"/sshkey remove {fingerprint}\n/sshkey remove {fingerprint}\n")
    assert alice.lines() == [
        f"*** SSH key {fingerprint} no longer logs you in.",
        f"!!! No SSH key {fingerprint} is bound to alice.",
    ]
    (bob,) = server.join("bob")
    bob.type(f"/sshkey add {line}\n")
    assert bob.lines() == ["!!! Your alias is not registered (see /register)."]


def test_a_bound_key_logs_in_without_the_password(server: AccountServer) -> None:
    """key_login finds the account for a bound key only; log_in_verified then joins registered."""
    alice = register(server, "alice", "correct-horse")
    line = public_key_line()
    alice.type(f"/sshkey add {line}\n/quit\n")
    alice.finish_close()
    accounts = server.hub.accounts
    assert accounts is not None
    assert succeeded(ensureDeferred(accounts.key_login("alice", public_key_line()))) is None
    account = succeeded(ensureDeferred(accounts.key_login("ALICE", line)))
    assert account is not None and account.alias == "alice"
    newcomer = server.connect()
    newcomer.lines()
    newcomer.protocol.log_in_verified("alice", account)
    assert newcomer.lines()[0] == "*** Welcome, alice! You are in #lobby (1): alice"
    assert server.hub.is_registered(newcomer.protocol)
