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
