"""Registered aliases, password logins, ghosts and operators, through the line protocol.

The store is real (a temporary SQLite file) but runs synchronously; hashing is a
transparent fake, so these tests are about the flow, not about argon2.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.logger import LogLevel, capturedLogs

from chatd import moderation
from chatd.accounts import (
    REGISTRATIONS_PER_ADDRESS,
    Accounts,
    PasswordRefused,
    SSHKeyRefused,
    check_new_password,
    parse_ssh_key,
)
from chatd.hub import Hub
from chatd.model import Account
from chatd.passwords import PasswordsBusy
from chatd.stores.sqlite import SQLiteStore, run_synchronously
from tests.storetesting import succeeded
from tests.test_protocol import Client, Server


class FakePasswords:
    """Hashing without the cost: enough to test who may log in.

    It counts what it is asked; with ``hold`` set, checks wait until ``release``;
    with ``busy`` set, everything fails as an overloaded thread pool would.
    """

    def __init__(self) -> None:
        self.hashed = 0
        self.verified = 0
        self.dummies = 0
        self.hold = False
        self.busy = False
        self.held: list[tuple[Deferred[bool], bool]] = []

    def hash_password(self, password: str) -> Deferred[str]:
        if self.busy:
            return fail(PasswordsBusy())
        self.hashed += 1
        return succeed(f"fake${password}")

    def verify_password(self, password_hash: str, password: str) -> Deferred[bool]:
        if self.busy:
            return fail(PasswordsBusy())
        self.verified += 1
        return self._answer(password_hash == f"fake${password}")

    def verify_dummy(self, password: str) -> Deferred[bool]:
        if self.busy:
            return fail(PasswordsBusy())
        self.dummies += 1
        return self._answer(False)

    def _answer(self, answer: bool) -> Deferred[bool]:
        if not self.hold:
            return succeed(answer)
        self.held.append((Deferred(), answer))
        return self.held[-1][0]

    def release(self) -> None:
        """Answer the checks held so far."""
        held, self.held = self.held, []
        for deferred, answer in held:
            deferred.callback(answer)


class AccountServer(Server):
    """A Server whose hub has accounts kept in a real, synchronous store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.passwords = FakePasswords()
        super().__init__()

    def make_hub(self, history_replay: int) -> Hub:
        self.store = SQLiteStore(self.path, clock=self.clock, run_in_thread=run_synchronously)
        self.store.start()
        accounts = Accounts(
            self.store, self.passwords, {"root": "fake$operpass"}, clock=self.clock
        )
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
    intruder.type("more typing while we wait\n")
    server.clock.advance(0.9)
    assert intruder.lines() == []
    server.clock.advance(0.1)
    lines = intruder.lines()
    assert lines[0] == "!!! Wrong password for alice."
    # Typed while the password was checked: dropped, never taken as the next alias.
    assert lines[1] == "!!! 1 line typed during the password check was discarded."
    assert lines[2].startswith("*** Choose an alias (")
    assert len(lines) == 3
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
    assert server.hub.member_named("alice") is new.session


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
    assert moderation.operator_name(server.hub, alice.session) == "root"


@pytest.mark.parametrize("password", ["short", "has space inside", " leading-space"])
def test_check_new_password_refuses(password: str) -> None:
    """Passwords under 8 characters or with spaces are refused."""
    with pytest.raises(PasswordRefused):
        check_new_password(password)


# Bans and the message of the day.


def operator(server: AccountServer, alias: str = "olivia") -> Client:
    (client,) = server.join(alias)
    moderation.make_operator(server.hub, client.session, "root")
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
    newcomer.session.log_in_verified("alice", account)
    assert newcomer.lines()[0] == "*** Welcome, alice! You are in #lobby (1): alice"
    assert server.hub.is_registered(newcomer.session)


# Password guessing, registration floods, and pasted junk.


def seconds_to_answer(server: AccountServer, deferred: Deferred[Any]) -> float:
    """Advance the clock in small steps until ``deferred`` fires; how long that took."""
    waited = 0.0
    while not deferred.called:
        assert waited < 120, "no answer within two minutes"
        server.clock.advance(0.25)
        waited += 0.25
    return waited


def accounts_of(server: AccountServer) -> Accounts:
    accounts = server.hub.accounts
    assert accounts is not None
    return accounts


def guess(server: AccountServer, alias: str, password: str, host: str | None) -> float:
    """Seconds until authenticate answers; the answer must be a refusal."""
    answer = ensureDeferred(accounts_of(server).authenticate(alias, password, host=host))
    waited = seconds_to_answer(server, answer)
    assert succeeded(answer) is None
    return waited


def test_wrong_passwords_from_one_address_wait_ever_longer(server: AccountServer) -> None:
    """After three wrong passwords from an address, each check waits twice as long, to a cap."""
    register(server, "alice", "correct-horse")
    register(server, "bob", "battery-staple")
    waits = [guess(server, ("alice", "bob")[n % 2], "guess", "198.51.100.7") for n in range(10)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60]


def test_a_guesser_cannot_lock_the_owner_out_of_their_alias(server: AccountServer) -> None:
    """Guesses at an alias slow down their own address, never its owner's elsewhere."""
    register(server, "alice", "correct-horse")
    assert [guess(server, "alice", "guess", "198.51.100.7") for _ in range(8)][-1] == 16
    owner = ensureDeferred(accounts_of(server).authenticate("alice", "correct-horse", "192.0.2.1"))
    assert seconds_to_answer(server, owner) == 0
    assert isinstance(succeeded(owner), Account)
    assert guess(server, "alice", "guess", "198.51.100.7") == 32


def test_checks_without_an_address_are_counted_by_the_alias(server: AccountServer) -> None:
    """Where no address is known (a UNIX socket), guesses at one alias back off by the alias."""
    register(server, "alice", "correct-horse")
    assert [guess(server, "alice", "guess", None) for _ in range(6)] == [0, 0, 0, 1, 2, 4]


def test_the_right_password_waits_its_turn_then_gives_its_count_back(
    server: AccountServer,
) -> None:
    """The owner at a guessed-from address waits the turn, gets in, and takes back its count."""
    register(server, "alice", "correct-horse")
    for _ in range(5):
        guess(server, "alice", "guess", "198.51.100.7")
    owner = ensureDeferred(
        accounts_of(server).authenticate("alice", "correct-horse", "198.51.100.7")
    )
    assert seconds_to_answer(server, owner) == 4
    assert isinstance(succeeded(owner), Account)
    assert guess(server, "alice", "guess", "198.51.100.7") == 0


def test_checks_sent_at_once_are_not_hashed_together(server: AccountServer) -> None:
    """Pipelined guesses queue behind each other; past the longest wait they are not checked."""
    register(server, "alice", "correct-horse")
    accounts = accounts_of(server)
    answers = [
        ensureDeferred(accounts.authenticate("alice", f"guess{n}", "198.51.100.7"))
        for n in range(12)
    ]
    assert server.passwords.verified == 3  # the free ones; the rest wait their turns
    refused = [answer for answer in answers if answer.called and not server.passwords.hold]
    assert len(refused) == 3 + 4  # three answered, four past the longest wait
    for answer in answers[8:]:
        with pytest.raises(PasswordsBusy, match="Too many wrong passwords"):
            succeeded(answer)
    server.clock.advance(31)
    assert server.passwords.verified == 8


def test_unknown_names_cost_a_dummy_check(server: AccountServer) -> None:
    """An alias without an account and a name that is no operator's are checked against a dummy."""
    accounts = accounts_of(server)
    assert succeeded(ensureDeferred(accounts.authenticate("nobody", "guess-one"))) is None
    assert succeeded(ensureDeferred(accounts.check_operator("nobody", "guess-two"))) is False
    assert (server.passwords.dummies, server.passwords.verified) == (2, 0)
    assert succeeded(ensureDeferred(accounts.check_operator("root", "guess-three"))) is False
    assert (server.passwords.dummies, server.passwords.verified) == (2, 1)


def test_oper_guesses_from_one_address_wait_ever_longer(server: AccountServer) -> None:
    """/oper answers a wrong password later and later after three, whatever the name tried."""
    (alice,) = server.join("alice")
    waits = []
    for name in ["root", "nobody", "root", "admin", "root", "root", "x"]:
        alice.type(f"/oper {name} guess\n")
        waited = 0.0
        while not (lines := alice.lines()):
            server.clock.advance(0.25)
            waited += 0.25
        assert lines == ["!!! Wrong operator name or password."]
        waits.append(waited)
    # Each answer waits WRONG_PASSWORD_DELAY_SECONDS, which absorbs the first turn.
    assert waits == [1, 1, 1, 1, 2, 4, 8]


def test_one_password_command_at_a_time_per_member(server: AccountServer) -> None:
    """While a member's password check runs, another password command is refused unhashed."""
    alice = register(server, "alice", "correct-horse")
    server.passwords.hold = True
    alice.type("/oper root guess\n/oper root operpass\n")
    alice.type("/password correct-horse new-password\n/register other-password\n")
    busy = "!!! Your last password command is still being checked; wait."
    assert alice.lines() == [busy, busy, busy]
    assert len(server.passwords.held) == 1
    server.passwords.release()
    server.clock.advance(1)
    assert alice.lines() == ["!!! Wrong operator name or password."]
    server.passwords.hold = False
    alice.type("/oper root operpass\n")
    assert alice.lines() == ["*** You are now an operator (root)."]


def test_a_busy_hashing_pool_is_an_error_line_not_a_traceback(server: AccountServer) -> None:
    """When no hashing thread is free, password commands say so; nothing is logged as a failure."""
    register(server, "alice", "correct-horse")
    (bob,) = server.join("bob")
    server.passwords.busy = True
    with capturedLogs() as events:
        bob.type("/oper root operpass\n")
        bob.type("/register bobs-password\n")
        server.clock.advance(1)
        assert bob.lines() == ["!!! The server is busy checking passwords; try again soon."] * 2
    assert [e for e in events if e["log_level"] in (LogLevel.error, LogLevel.critical)] == []
    server.passwords.busy = False
    bob.type("/register bobs-password\n")  # the refused attempt used up no registration
    assert bob.lines() == ["*** Registered bob: from now on it takes this password to use it."]


def test_registrations_per_address_are_capped(server: AccountServer) -> None:
    """An address registers a few aliases an hour; past that it is told when to come back."""
    clients = server.join(*[f"user{n}" for n in range(REGISTRATIONS_PER_ADDRESS + 2)])
    for client in clients[:REGISTRATIONS_PER_ADDRESS]:
        client.type("/register long-enough\n")
        assert client.lines()[0].startswith("*** Registered")
    clients[0].type("/register long-enough\n")  # registered already: not counted
    assert clients[0].lines() == ["!!! user0 is registered already."]
    late = clients[REGISTRATIONS_PER_ADDRESS]
    late.type("/register long-enough\n")
    assert late.lines() == [
        "!!! Too many aliases registered from your address; try again in 60 min."
    ]
    assert server.passwords.hashed == REGISTRATIONS_PER_ADDRESS
    server.clock.advance(3600)
    late.type("/register long-enough\n")
    assert late.lines()[0].startswith("*** Registered")


def test_registration_without_an_address_is_not_capped(server: AccountServer) -> None:
    """A caller that knows no address (a UNIX socket) registers without the per-address cap."""
    accounts = accounts_of(server)
    for n in range(REGISTRATIONS_PER_ADDRESS + 2):
        assert succeeded(ensureDeferred(accounts.register(f"user{n}", "long-enough", [])))


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + data


def ssh_key_line(kind: str, *fields: bytes) -> str:
    blob = ssh_string(kind.encode()) + b"".join(ssh_string(field) for field in fields)
    return f"{kind} {base64.b64encode(blob).decode()}"


def rsa_key_line(bits: int) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, bits).public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


NOT_A_KEY = "!!! That is not an SSH public key (paste a line of id_ed25519.pub)."
KEY_TYPES = "!!! chatd takes SSH keys of these types only: ssh-ed25519, ecdsa-sha2-nistp256, "


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("hello world", NOT_A_KEY),
        ("ssh-ed25519", NOT_A_KEY),
        ("ssh-ed25519 AAAA$$$$", NOT_A_KEY),
        ("ssh-ed25519 \x01\x02", NOT_A_KEY),
        ("ssh-ed25519 ÅÅÅÅ", NOT_A_KEY),
        (public_key_line()[:-5], NOT_A_KEY),  # truncated base64
        (ssh_key_line("ssh-ed25519"), NOT_A_KEY),  # no key in the blob
        (ssh_key_line("ssh-ed25519", b"abc"), NOT_A_KEY),  # a key of the wrong length
        ("ssh-rsa " + public_key_line().split()[1], NOT_A_KEY),  # type and blob disagree
        (ssh_key_line("ssh-rsa", b"", b""), NOT_A_KEY),
        (ssh_key_line("ssh-rsa", b"\x01", b"\x0f"), NOT_A_KEY),
        (ssh_key_line("ecdsa-sha2-nistp256", b"nistp999", b"\x04" + b"\x01" * 64), NOT_A_KEY),
        (ssh_key_line("ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x01" * 64), NOT_A_KEY),
        (ssh_key_line("ecdsa-sha2-nistp999", b"nistp999", b"\x04" + b"\x01" * 64), KEY_TYPES),
        (ssh_key_line("ssh-dss", b"\x01" * 129, b"\x01" * 21, b"\x02", b"\x03"), KEY_TYPES),
        (ssh_key_line("sk-ssh-ed25519@openssh.com", b"a" * 32, b"ssh:"), KEY_TYPES),
        (ssh_key_line("ssh-ed25519-cert-v01@openssh.com", b"x"), KEY_TYPES),
        ("{" + base64.b64encode(b"(public-key(dsa(p)(q)))").decode() + "}", NOT_A_KEY),
        ("{QUFB}", NOT_A_KEY),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "!!! That is a private key: keep it secret, "),
        ("-----BEGIN CERTIFICATE-----", NOT_A_KEY),
        ("ssh-ed25519 " + "A" * 1900, NOT_A_KEY),  # as long as a line may be
        (rsa_key_line(1024), "!!! An RSA key needs 2048 to 16384 bits; "),
    ],
)
def test_malformed_ssh_keys_get_an_error_line_never_a_traceback(
    server: AccountServer, text: str, error: str
) -> None:
    """Whatever text /sshkey add is given, the answer is one error line and nothing is logged."""
    alice = register(server, "alice", "correct-horse")
    with capturedLogs() as events:
        alice.type(f"/sshkey add {text}\n")
        (line,) = alice.lines()
    assert line.startswith(error)
    assert [e for e in events if e["log_level"] in (LogLevel.error, LogLevel.critical)] == []
    assert succeeded(ensureDeferred(accounts_of(server).key_login("alice", text))) is None


def test_a_huge_key_line_is_refused_unparsed() -> None:
    """Text far longer than any public key is refused before base64 or conch sees it."""
    with pytest.raises(SSHKeyRefused, match="at most 4096 characters"):
        parse_ssh_key("ssh-rsa " + "A" * 1_000_000)


def test_an_rsa_key_of_a_usual_size_is_taken(server: AccountServer) -> None:
    """A 2048-bit RSA key binds like an Ed25519 one."""
    alice = register(server, "alice", "correct-horse")
    alice.type(f"/sshkey add {rsa_key_line(2048)} me@host\n")
    assert alice.lines()[0].endswith("now logs you in as alice, no password asked.")


def test_a_guesser_at_the_alias_prompt_is_slowed_then_told_without_a_traceback(
    server: AccountServer,
) -> None:
    """The line protocol's login passes the peer's address, so its guesses back off too."""
    register(server, "alice", "correct-horse")
    register(server, "bob", "battery-staple")
    with capturedLogs() as events:
        # All at once, at two aliases: six each would not be refused, twelve from one address are.
        clients = [server.login(("alice", "bob")[n % 2], f"guess{n}") for n in range(12)]
        for _ in range(200):
            server.clock.advance(1)
        answers = [client.lines()[1] for client in clients]
    assert answers[:2] == ["!!! Wrong password for alice.", "!!! Wrong password for bob."]
    assert "!!! Too many wrong passwords lately; try again in a minute or two." in answers
    assert [e for e in events if e["log_level"] in (LogLevel.error, LogLevel.critical)] == []


def test_a_connection_lost_during_the_password_check_joins_no_ghost(
    server: AccountServer,
) -> None:
    """The right password answered after the client left starts no session."""
    owner = register(server, "alice", "correct-horse")
    owner.type("/quit\n")
    owner.finish_close()
    server.passwords.hold = True
    client = server.login("alice", "correct-horse")
    client.drop()
    server.passwords.release()
    server.clock.advance(1)
    assert server.hub.member_named("alice") is None
    assert client.session not in server.sessions.live
