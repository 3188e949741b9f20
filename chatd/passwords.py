"""Password hashing for registered aliases and operators, with argon2 off the reactor thread.

Hashes are argon2id in the standard encoded form (``$argon2id$v=19$m=...``),
made with :class:`argon2.PasswordHasher` and its default parameters, which
cost about a tenth of a second and 64 MiB each on purpose. That is why
:meth:`Passwords.hash_password` and :meth:`Passwords.verify_password` run in a
thread and answer with a Deferred: a burst of logins must not freeze the chat.
The thread runner is injectable; the default is
:func:`twisted.internet.threads.deferToThread` (the reactor's thread pool). To
bound the memory and CPU that a flood of login attempts can take, pass
``functools.partial(deferToThreadPool, reactor, pool)`` with a small
:class:`~twisted.python.threadpool.ThreadPool` of your own.

:func:`hash_password_now` hashes on the calling thread, for ``chatd-passwd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

# One hasher, with argon2-cffi's default parameters; it holds no state and is
# safe to share between threads.
_HASHER = argon2.PasswordHasher()

RunInThread = Callable[..., Deferred[Any]]


class Passwords:
    """Hash and verify passwords in a thread; answers come back on the reactor thread.

    ``run_in_thread(function, *args)`` must run ``function(*args)`` away from the
    reactor thread and return a Deferred of its result (as ``deferToThread`` does).
    Unit tests pass a runner that calls at once and returns ``succeed``/``fail``.
    """

    log = Logger()

    def __init__(self, run_in_thread: RunInThread | None = None) -> None:
        # deferToThread imports the reactor only when called.
        self._run_in_thread = run_in_thread or deferToThread

    def hash_password(self, password: str) -> Deferred[str]:
        """An argon2id hash of ``password``, made in a thread."""
        return self._run_in_thread(_HASHER.hash, password)

    def verify_password(self, password_hash: str, password: str) -> Deferred[bool]:
        """Whether ``password`` matches ``password_hash``, checked in a thread.

        Fires with False, never an error, for a wrong password and for a hash
        that is malformed or not argon2 (that one is logged, without the hash or
        the password).
        """
        if not password_hash.isascii():
            # argon2 would raise UnicodeEncodeError, indistinguishable from a
            # password it cannot encode; a hash is ASCII, so say so here.
            self._log_unusable_hash("it is not ASCII")
            return succeed(False)
        verified = self._run_in_thread(_HASHER.verify, password_hash, password)
        return verified.addErrback(self._not_verified)

    def _not_verified(self, failure: Failure) -> bool:
        # Anything else (a bug, a broken thread pool) goes on to the caller.
        kind = failure.trap(
            VerifyMismatchError, UnicodeEncodeError, InvalidHashError, VerificationError
        )
        if kind is InvalidHashError:
            self._log_unusable_hash("it is not an argon2 hash")
        elif kind is VerificationError:
            self._log_unusable_hash(str(failure.value) or "verification failed")
        # Otherwise a wrong password, or one that cannot be UTF-8 (lone
        # surrogates), which no hash can match: not worth a log line here.
        return False

    def _log_unusable_hash(self, problem: str) -> None:
        self.log.error(
            "A password could not be checked: its hash is unusable ({problem})", problem=problem
        )

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether ``password_hash`` was made with other parameters than today's defaults.

        Fast (it only parses the hash), so it runs on the calling thread. After a
        successful :meth:`verify_password`, a True here means: hash the password
        again and store the new hash. A malformed hash needs replacing too: True.
        """
        try:
            return _HASHER.check_needs_rehash(password_hash)
        except ValueError:  # InvalidHashError is one
            return True


def hash_password_now(password: str) -> str:
    """An argon2id hash of ``password``, on the calling thread: for command-line tools only."""
    return _HASHER.hash(password)
