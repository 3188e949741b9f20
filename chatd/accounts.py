"""Registered aliases and operators: who may use a name, checked against argon2 hashes.

Passwords are hashed and verified off the reactor thread (see
:mod:`chatd.passwords`) and accounts live in the store; the set of registered
alias keys is kept in memory so the hub can refuse a registered alias at once.

Guessing is slowed here, for every front end alike: password checks by one
address (of one name, where no address is known) wait ever longer turns after a
few failures
(:class:`chatd.throttle.PasswordThrottle`), and a name that has no password
costs one argon2 run like a name that has one, so the time of the answer does
not tell which names exist. One address may register only a few aliases an hour.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from chatd.admission import admission_key
from chatd.interfaces import IChatStore
from chatd.model import Account
from chatd.text import alias_key
from chatd.throttle import PasswordThrottle, Quota

MIN_PASSWORD_CHARS = 8
# A wrong password is answered only after this long, to slow down guessing. The
# callers wait it; repeated failures wait longer, inside Accounts.authenticate.
WRONG_PASSWORD_DELAY_SECONDS = 1.0
# Aliases one address may register per window.
REGISTRATIONS_PER_ADDRESS = 3
REGISTRATION_WINDOW_SECONDS = 3600.0
# The longest an SSH public key line may be: a 16384-bit RSA key takes about 2,800.
MAX_SSH_KEY_CHARS = 4096


class PasswordHashing(Protocol):
    """Slow hashing that runs off the reactor thread (chatd.passwords)."""

    def hash_password(self, password: str) -> Deferred[str]:
        """An argon2 hash of ``password``."""

    def verify_password(self, password_hash: str, password: str) -> Deferred[bool]:
        """Whether ``password`` matches ``password_hash``; False for a malformed hash."""

    def verify_dummy(self, password: str) -> Deferred[bool]:
        """False, after as long as :meth:`verify_password` takes (for unknown names)."""


class PasswordRefused(ValueError):
    """A password that may not be used; the message says why, for the user."""


class RegistrationRefused(ValueError):
    """A registration not allowed now (too many from one address); the message says why."""


def check_new_password(password: str) -> str:
    """Return ``password`` if it is acceptable for a registration, else raise."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordRefused(f"A password needs at least {MIN_PASSWORD_CHARS} characters.")
    if password.strip() != password or " " in password:
        raise PasswordRefused("A password cannot contain spaces.")
    return password


class Accounts:
    """Registrations of aliases, and the operators defined in the configuration."""

    log = Logger()

    def __init__(
        self,
        store: IChatStore,
        passwords: PasswordHashing,
        operators: Mapping[str, str] | None = None,
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self._clock = clock
        self._store = store
        self._passwords = passwords
        self._registered: set[str] = set()
        # Operator name -> argon2 hash, from --oper NAME:HASH.
        self._operators = dict(operators or {})
        self._logins = PasswordThrottle(clock)
        self._operator_checks = PasswordThrottle(clock)
        self._registrations = Quota(clock, REGISTRATIONS_PER_ADDRESS, REGISTRATION_WINDOW_SECONDS)

    def set_operators(self, operators: Mapping[str, str]) -> None:
        """Replace the operator definitions (a reload); who is operator now stays so."""
        self._operators = dict(operators)

    async def load(self) -> None:
        """Learn which aliases are registered (at start-up)."""
        self._registered = await self._store.registered_keys()

    def is_registered(self, alias: str) -> bool:
        """Whether ``alias`` (in any case) belongs to a registered account."""
        return alias_key(alias) in self._registered

    def note_registered(self, alias: str) -> None:
        """Learn that ``alias`` was registered elsewhere (another node of a cluster)."""
        self._registered.add(alias_key(alias))

    async def authenticate(
        self, alias: str, password: str, host: str | None = None
    ) -> Account | None:
        """The account of ``alias`` if ``password`` is its password, else None.

        ``host`` is the client's address. After a few failures by that address
        (for that alias, where there is no address) the check waits its turn
        first (up to a minute; see :class:`~chatd.throttle.PasswordThrottle`); a
        right password takes back its own count. Raises PasswordsBusy, without
        checking, when the turn would be further away than that, or when too
        many checks are waiting for a hashing thread. The caller still waits
        WRONG_PASSWORD_DELAY_SECONDS before answering a None.
        """
        name = alias_key(alias) if self.is_registered(alias) else None
        await self._wait(self._logins.turn(host, name))
        account = await self._store.get_account(alias)
        if account is None:
            await self._passwords.verify_dummy(password)
            return None
        if await self._passwords.verify_password(account.password_hash, password):
            self._logins.succeeded(host, name)
            return account
        self.log.warn("wrong password for registered alias {alias}", alias=alias)
        return None

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await deferLater(self._clock, seconds)

    async def register(
        self, alias: str, password: str, ignores: Iterable[str], host: str | None = None
    ) -> bool:
        """Bind ``alias`` to ``password``; False if it is registered already.

        Raises PasswordRefused for an unacceptable password, RegistrationRefused
        when ``host`` (the client's address) has registered too many aliases
        lately, and PasswordsBusy when the password cannot be hashed now.
        """
        check_new_password(password)
        if self.is_registered(alias):
            return False
        quota_key = None if host is None else admission_key(host)
        if quota_key is not None and (wait := self._registrations.take(quota_key)):
            minutes = max(1, round(wait / 60))
            raise RegistrationRefused(
                f"Too many aliases registered from your address; try again in {minutes} min."
            )
        try:
            created = await self._create_account(alias, password, ignores)
        except Exception:
            if quota_key is not None:
                self._registrations.give_back(quota_key)
            raise
        if not created and quota_key is not None:
            self._registrations.give_back(quota_key)
        return created

    async def _create_account(self, alias: str, password: str, ignores: Iterable[str]) -> bool:
        password_hash = await self._passwords.hash_password(password)
        if not await self._store.create_account(alias, password_hash):
            return False
        self._registered.add(alias_key(alias))
        await self._store.set_ignores(alias, ignores)
        self.log.info("{alias} registered", alias=alias)
        return True

    async def change_password(
        self, alias: str, old: str, new: str, host: str | None = None
    ) -> bool:
        """Replace the password of ``alias`` if ``old`` is right; False if it is not.

        ``old`` is checked as :meth:`authenticate` checks a login from ``host``.
        Raises PasswordRefused for an unacceptable new password, PasswordsBusy
        when the passwords cannot be checked or hashed now.
        """
        check_new_password(new)
        if await self.authenticate(alias, old, host=host) is None:
            return False
        await self._store.set_password_hash(alias, await self._passwords.hash_password(new))
        self.log.info("{alias} changed their password", alias=alias)
        return True

    async def add_ssh_key(self, alias: str, public_key: str) -> tuple[str, bool]:
        """Bind an OpenSSH public key line to registered ``alias``.

        Returns the key's fingerprint and whether it was new. Raises
        SSHKeyRefused for text that is not a public key.
        """
        fingerprint, line = parse_ssh_key(public_key)
        added = await self._store.add_ssh_key(alias, fingerprint, line)
        if added:
            self.log.info(
                "{alias} bound SSH key {fingerprint}", alias=alias, fingerprint=fingerprint
            )
        return fingerprint, added

    async def remove_ssh_key(self, alias: str, fingerprint: str) -> bool:
        """Unbind the key with ``fingerprint``; False if it was not bound to ``alias``."""
        return await self._store.remove_ssh_key(alias, fingerprint)

    async def ssh_keys(self, alias: str) -> list[tuple[str, str]]:
        """The (fingerprint, key line) pairs bound to ``alias``."""
        return await self._store.ssh_keys(alias)

    async def key_login(self, alias: str, public_key: str) -> Account | None:
        """The account of ``alias`` if ``public_key`` (already proven held) is bound to it."""
        if not self.is_registered(alias):
            return None
        try:
            fingerprint, _ = parse_ssh_key(public_key)
        except SSHKeyRefused:
            return None  # of a kind /sshkey add refuses, so bound to nobody
        if fingerprint not in {bound for bound, _ in await self._store.ssh_keys(alias)}:
            return None
        return await self._store.get_account(alias)

    async def save_ignores(self, alias: str, ignores: Iterable[str]) -> None:
        """Keep the ignore list of a registered alias for its next session."""
        if self.is_registered(alias):
            await self._store.set_ignores(alias, ignores)

    async def check_operator(self, name: str, password: str, host: str | None = None) -> bool:
        """Whether ``name`` is an operator and ``password`` is theirs.

        Throttled like :meth:`authenticate` (by ``host`` and by operator name,
        apart from logins), and as slow for a name that is no operator's.
        Raises PasswordsBusy when the password cannot be checked now.
        """
        password_hash = self._operators.get(name)
        known = name if password_hash is not None else None
        await self._wait(self._operator_checks.turn(host, known))
        if password_hash is None:
            await self._passwords.verify_dummy(password)
            return False
        if await self._passwords.verify_password(password_hash, password):
            self._operator_checks.succeeded(host, known)
            return True
        return False


class SSHKeyRefused(ValueError):
    """Text given as an SSH public key is not one (or not of a kind chatd takes)."""


# The key types chatd's SSH server verifies; DSA is refused as OpenSSH refuses it.
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
MIN_RSA_KEY_BITS = 2048
MAX_RSA_KEY_BITS = 16384


def parse_ssh_key(text: str) -> tuple[str, str]:
    """The SHA256 fingerprint (as OpenSSH shows it) and the canonical line of a public key.

    Only the one-line OpenSSH form (``TYPE BASE64 [COMMENT]``) of the types in
    SSH_KEY_TYPES is taken; any other text raises SSHKeyRefused, never another
    error, so that what a user pastes cannot reach conch's other parsers.
    """
    from twisted.conch.ssh.keys import FingerprintFormats, Key

    text = text.strip()
    if "PRIVATE KEY" in text:
        raise SSHKeyRefused("That is a private key: keep it secret, and give the .pub line.")
    if len(text) > MAX_SSH_KEY_CHARS:
        raise SSHKeyRefused(f"An SSH public key line is at most {MAX_SSH_KEY_CHARS} characters.")
    not_a_key = SSHKeyRefused("That is not an SSH public key (paste a line of id_ed25519.pub).")
    kind, *rest = text.split(maxsplit=2) or [""]
    if kind not in SSH_KEY_TYPES:
        if not kind.startswith(("ssh-", "ecdsa-", "sk-")):
            raise not_a_key
        raise SSHKeyRefused(
            f"chatd takes SSH keys of these types only: {', '.join(SSH_KEY_TYPES)} "
            "(make one with ssh-keygen -t ed25519)."
        )
    try:
        blob = base64.b64decode(rest[0] if rest else "", validate=True)
        # Conch's parser raises what it meets (struct.error, AssertionError,
        # UnsupportedAlgorithm, ValueError, ...) on crafted blobs: all mean "no".
        key = Key.fromString(blob, type="blob")
        key_type = key.sshType().decode()
        bits = key.size()
        fingerprint = key.fingerprint(FingerprintFormats.SHA256_BASE64)
        line = key.toString("openssh").decode()
    except Exception as problem:
        raise not_a_key from problem
    if key_type != kind:
        raise not_a_key
    if kind == "ssh-rsa" and not MIN_RSA_KEY_BITS <= bits <= MAX_RSA_KEY_BITS:
        raise SSHKeyRefused(
            f"An RSA key needs {MIN_RSA_KEY_BITS} to {MAX_RSA_KEY_BITS} bits; "
            "better, make an Ed25519 key (ssh-keygen -t ed25519)."
        )
    return f"SHA256:{fingerprint.rstrip('=')}", line
