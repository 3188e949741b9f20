"""Registered aliases and operators: who may use a name, checked against argon2 hashes.

Passwords are hashed and verified off the reactor thread (see
:mod:`chatd.passwords`) and accounts live in the store; the set of registered
alias keys is kept in memory so the hub can refuse a registered alias at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd.store import Account
from chatd.text import alias_key

MIN_PASSWORD_CHARS = 8
# A wrong password is answered only after this long, to slow down guessing.
WRONG_PASSWORD_DELAY_SECONDS = 1.0


class PasswordHashing(Protocol):
    """Slow hashing that runs off the reactor thread (chatd.passwords)."""

    def hash_password(self, password: str) -> Deferred[str]:
        """An argon2 hash of ``password``."""

    def verify_password(self, password_hash: str, password: str) -> Deferred[bool]:
        """Whether ``password`` matches ``password_hash``; False for a malformed hash."""


class AccountStore(Protocol):
    """The part of :class:`chatd.store.Store` that keeps accounts."""

    def registered_keys(self) -> Deferred[set[str]]: ...
    def get_account(self, alias: str) -> Deferred[Account | None]: ...
    def create_account(self, alias: str, password_hash: str) -> Deferred[bool]: ...
    def set_password_hash(self, alias: str, new_hash: str) -> Deferred[bool]: ...
    def set_ignores(self, alias: str, ignores: Iterable[str]) -> Deferred[None]: ...


class PasswordRefused(ValueError):
    """A password that may not be used; the message says why, for the user."""


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
        store: AccountStore,
        passwords: PasswordHashing,
        operators: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._passwords = passwords
        self._registered: set[str] = set()
        # Operator name -> argon2 hash, from --oper NAME:HASH.
        self._operators = dict(operators or {})

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

    async def authenticate(self, alias: str, password: str) -> Account | None:
        """The account of ``alias`` if ``password`` is its password, else None."""
        account = await self._store.get_account(alias)
        if account is None:
            return None
        if await self._passwords.verify_password(account.password_hash, password):
            return account
        self.log.warn("wrong password for registered alias {alias}", alias=alias)
        return None

    async def register(self, alias: str, password: str, ignores: Iterable[str]) -> bool:
        """Bind ``alias`` to ``password``; False if it is registered already.

        Raises PasswordRefused for an unacceptable password.
        """
        check_new_password(password)
        if self.is_registered(alias):
            return False
        password_hash = await self._passwords.hash_password(password)
        if not await self._store.create_account(alias, password_hash):
            return False
        self._registered.add(alias_key(alias))
        await self._store.set_ignores(alias, ignores)
        self.log.info("{alias} registered", alias=alias)
        return True

    async def change_password(self, alias: str, old: str, new: str) -> bool:
        """Replace the password of ``alias`` if ``old`` is right; False if it is not.

        Raises PasswordRefused for an unacceptable new password.
        """
        check_new_password(new)
        if await self.authenticate(alias, old) is None:
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
        fingerprint, _ = parse_ssh_key(public_key)
        if fingerprint not in {bound for bound, _ in await self._store.ssh_keys(alias)}:
            return None
        return await self._store.get_account(alias)

    async def save_ignores(self, alias: str, ignores: Iterable[str]) -> None:
        """Keep the ignore list of a registered alias for its next session."""
        if self.is_registered(alias):
            await self._store.set_ignores(alias, ignores)

    async def check_operator(self, name: str, password: str) -> bool:
        """Whether ``name`` is an operator and ``password`` is theirs."""
        password_hash = self._operators.get(name)
        if password_hash is None:
            return False
        return await self._passwords.verify_password(password_hash, password)


class SSHKeyRefused(ValueError):
    """Text given as an SSH public key is not one."""


def parse_ssh_key(text: str) -> tuple[str, str]:
    """The SHA256 fingerprint (as OpenSSH shows it) and the canonical line of a public key."""
    from twisted.conch.ssh.keys import BadKeyError, FingerprintFormats, Key

    try:
        key = Key.fromString(text.strip().encode())
    except (BadKeyError, ValueError, IndexError) as problem:
        raise SSHKeyRefused(
            "That is not an SSH public key (paste a line of id_ed25519.pub)."
        ) from problem
    if not key.isPublic():
        raise SSHKeyRefused("That is a private key: keep it secret, and give the .pub line.")
    fingerprint = key.fingerprint(FingerprintFormats.SHA256_BASE64)
    return f"SHA256:{fingerprint.rstrip('=')}", key.toString("openssh").decode()
