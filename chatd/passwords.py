"""Password hashing for registered aliases and operators, with argon2 off the reactor thread.

Hashes are argon2id in the standard encoded form (``$argon2id$v=19$m=...``),
made with :class:`argon2.PasswordHasher` and its default parameters, which
cost about a tenth of a second and 64 MiB each on purpose. That is why
:meth:`Passwords.hash_password` and :meth:`Passwords.verify_password` run in a
thread and answer with a Deferred: a burst of logins must not freeze the chat.

The threads are a small pool of chatd's own (:data:`PASSWORD_THREADS`), so at
most that many hashes take their 64 MiB at once, and only
:data:`MAX_WAITING_PASSWORD_JOBS` more may wait for a thread: past that, the
answer is :class:`PasswordsBusy` at once, instead of a queue (and a delay)
without end. The pool starts at the first hash and stops at reactor shutdown.
The thread runner is injectable for unit tests; the bound applies to it too.

:func:`hash_password_now` hashes on the calling thread, for ``chatd-passwd``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

# One hasher, with argon2-cffi's default parameters; it holds no state and is
# safe to share between threads.
_HASHER = argon2.PasswordHasher()

# Threads hashing at once: each argon2 run takes 64 MiB while it lasts.
PASSWORD_THREADS = 2
# Hashes and checks that may wait for a thread before more are refused; at a
# tenth of a second each, the last one waits about a second.
MAX_WAITING_PASSWORD_JOBS = 16

RunInThread = Callable[..., Deferred[Any]]


class PasswordsBusy(Exception):
    """A password cannot be checked now (too many waiting); the message says so, for the user."""

    def __init__(
        self, message: str = "The server is busy checking passwords; try again soon."
    ) -> None:
        super().__init__(message)


class Passwords:
    """Hash and verify passwords in a thread; answers come back on the reactor thread.

    ``run_in_thread(function, *args)`` must run ``function(*args)`` away from the
    reactor thread and return a Deferred of its result (as ``deferToThread`` does).
    Unit tests pass a runner that calls at once and returns ``succeed``/``fail``.
    Without one, a pool of ``threads`` threads is started on first use, answering
    through ``reactor`` (default: the global one, imported then).
    """

    log = Logger()

    def __init__(
        self,
        run_in_thread: RunInThread | None = None,
        *,
        reactor: IReactorFromThreads | None = None,
        threads: int = PASSWORD_THREADS,
        max_waiting: int = MAX_WAITING_PASSWORD_JOBS,
    ) -> None:
        self._run_in_thread = run_in_thread
        self._reactor = reactor
        self._threads = threads
        self._max_jobs = threads + max_waiting
        self._jobs = 0  # running or waiting for a thread
        self._pool: ThreadPool | None = None
        self._shutdown_trigger: Any = None
        self._stopped = False
        self._refusing = False
        # A hash of a secret nobody knows, made at the first check of an unknown name.
        self._dummy_hash: str | None = None

    def hash_password(self, password: str) -> Deferred[str]:
        """An argon2id hash of ``password``, made in a thread."""
        return self._run(_HASHER.hash, password)

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
        verified = self._run(_HASHER.verify, password_hash, password)
        return verified.addErrback(self._not_verified)

    def verify_dummy(self, password: str) -> Deferred[bool]:
        """Take as long as :meth:`verify_password` takes, and fire with False.

        For a name that has no password (an unknown alias or operator), so that
        the answer does not come sooner than for a known one. The first call
        makes the dummy hash (hashing costs what verifying does); later ones
        verify ``password`` against it.
        """
        if self._dummy_hash is None:
            made = self._run(_HASHER.hash, secrets.token_urlsafe(32))
            return made.addCallback(self._keep_dummy_hash)
        return self.verify_password(self._dummy_hash, password).addCallback(lambda _: False)

    def _keep_dummy_hash(self, dummy_hash: str) -> bool:
        if self._dummy_hash is None:  # several first calls may have made one each
            self._dummy_hash = dummy_hash
        return False

    def _run(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run ``function(*args)`` in a thread, unless too many are running or waiting."""
        if self._stopped:
            return fail(PasswordsBusy("The server is shutting down."))
        if self._jobs >= self._max_jobs:
            if not self._refusing:  # once per busy spell, not once per refusal
                self._refusing = True
                self.log.warn(
                    "{jobs} password checks running or waiting: refusing more",
                    jobs=self._jobs,
                )
            return fail(PasswordsBusy())
        run_in_thread = self._run_in_thread or self._start_pool()
        self._jobs += 1
        return run_in_thread(function, *args).addBoth(self._job_done)

    def _job_done(self, result: Any) -> Any:
        self._jobs -= 1
        if self._jobs == 0:
            self._refusing = False
        return result

    def _start_pool(self) -> RunInThread:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = cast(IReactorFromThreads, reactor)
        self._pool = ThreadPool(0, self._threads, name="chatd-passwords")
        self._pool.start()
        # Pool threads are not daemons: without a stop the process would never exit.
        self._shutdown_trigger = cast(IReactorCore, self._reactor).addSystemEventTrigger(
            "during", "shutdown", self._stop_at_shutdown
        )
        self._run_in_thread = cast(
            RunInThread, partial(deferToThreadPool, self._reactor, self._pool)
        )
        return self._run_in_thread

    def _stop_at_shutdown(self) -> None:
        self._shutdown_trigger = None  # firing: nothing to remove
        self.stop()

    def stop(self) -> None:
        """Refuse further work and stop the thread pool (after the hashes it is running).

        Done at reactor shutdown by itself; tests that use the real pool call it.
        """
        self._stopped = True
        if self._shutdown_trigger is not None:
            cast(IReactorCore, self._reactor).removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

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
