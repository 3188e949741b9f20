"""Tests for chatd.passwords: argon2 hashing and verifying, off the reactor thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import argon2
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from chatd import passwords
from chatd.passwords import Passwords, PasswordsBusy, hash_password_now

T = TypeVar("T")
# Cheap parameters, only to make a hash that today's defaults would replace.
WEAK = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def run_now(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """A runner that does the work at once, on this thread, for unit tests."""
    try:
        return succeed(function(*args))
    except Exception:
        return fail()


def result_of(deferred: Deferred[T]) -> T:
    """The result of a Deferred that must have fired already, re-raising a failure."""
    results: list[T | Failure] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


def messages(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    return [formatEvent(event) for event in events if event.get("log_level") is level]


@pytest.fixture
def sync() -> Passwords:
    return Passwords(run_in_thread=run_now)


def test_hash_is_argon2id_with_default_parameters(sync: Passwords) -> None:
    """hash_password gives an argon2id hash that argon2 itself accepts, made with its defaults."""
    password_hash = result_of(sync.hash_password("correct horse"))
    assert password_hash.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(password_hash, "correct horse")
    assert argon2.extract_parameters(password_hash) == argon2.extract_parameters(
        argon2.PasswordHasher().hash("x")
    )


def test_each_hash_has_its_own_salt(sync: Passwords) -> None:
    """The same password hashed twice gives two different hashes, both of which verify."""
    first = result_of(sync.hash_password("same"))
    second = result_of(sync.hash_password("same"))
    assert first != second
    assert result_of(sync.verify_password(first, "same"))
    assert result_of(sync.verify_password(second, "same"))


def test_work_goes_to_the_runner_not_the_calling_thread() -> None:
    """Hashing and verifying are handed to the runner, and their Deferreds wait for it."""
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    pending: list[Deferred[Any]] = []

    def record(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        calls.append((function, args))
        pending.append(Deferred())
        return pending[-1]

    deferred = Passwords(run_in_thread=record)
    hashed = deferred.hash_password("pw")
    verified = deferred.verify_password(WEAK.hash("pw"), "pw")
    assert [args[-1] for _function, args in calls] == ["pw", "pw"]
    assert not hashed.called and not verified.called
    pending[0].callback("$argon2id$made-elsewhere")
    pending[1].callback(True)
    assert result_of(hashed) == "$argon2id$made-elsewhere"
    assert result_of(verified) is True


def test_right_password_verifies(sync: Passwords) -> None:
    """verify_password fires with True for the password the hash was made from."""
    password_hash = result_of(sync.hash_password("s3cret-Ω"))
    assert result_of(sync.verify_password(password_hash, "s3cret-Ω")) is True


def test_wrong_password_is_false_and_not_logged(sync: Passwords) -> None:
    """A wrong password fires with False, not an error, and logs nothing (the caller decides)."""
    password_hash = hash_password_now("right")
    with capturedLogs() as events:
        assert result_of(sync.verify_password(password_hash, "wrong")) is False
        assert result_of(sync.verify_password(password_hash, "")) is False
        assert result_of(sync.verify_password(password_hash, "Right")) is False
    assert events == []


def test_old_parameters_still_verify(sync: Passwords) -> None:
    """A hash made with other argon2 parameters (an older default) still verifies."""
    assert result_of(sync.verify_password(WEAK.hash("old"), "old")) is True
    assert result_of(sync.verify_password(WEAK.hash("old"), "new")) is False


@pytest.mark.parametrize(
    "bad_hash",
    [
        "",
        "hunter2",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "$argon2x$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        # Truncated to 41 base64 characters: a length no base64 can have. (Cut by 5,
        # to 38, it was valid base64 whenever the last character's low bits were 0,
        # one run in 16, and argon2 then took it as a shorter hash: a flaky test.)
        hash_password_now("pw")[:-2],
        hash_password_now("pw")[:-1] + "é",  # not ASCII
    ],
)
def test_malformed_hash_is_false_and_logged_without_secrets(
    sync: Passwords, bad_hash: str
) -> None:
    """A malformed or non-argon2 hash fires with False and logs an error naming neither secret."""
    with capturedLogs() as events:
        assert result_of(sync.verify_password(bad_hash, "pw-XYZZY")) is False
    (error,) = messages(events, LogLevel.error)
    assert "hash is unusable" in error
    for event in events:
        shown = formatEvent(event) + repr(event)
        assert "XYZZY" not in shown
        assert not bad_hash or bad_hash not in shown


def test_password_that_is_not_unicode_text_is_false(sync: Passwords) -> None:
    """A password that cannot be UTF-8 (a lone surrogate) matches nothing: False, no error."""
    password_hash = hash_password_now("pw")
    with capturedLogs() as events:
        assert result_of(sync.verify_password(password_hash, "pw\udcff")) is False
    assert events == []


def test_unexpected_errors_are_not_swallowed() -> None:
    """A failure not about the password or the hash (a broken runner) reaches the caller."""

    def broken(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return fail(RuntimeError("thread pool gone"))

    with pytest.raises(RuntimeError, match="thread pool gone"):
        result_of(Passwords(run_in_thread=broken).verify_password(hash_password_now("p"), "p"))


def test_needs_rehash(sync: Passwords) -> None:
    """needs_rehash is False for a hash made today, True for old parameters or a malformed hash."""
    assert sync.needs_rehash(result_of(sync.hash_password("pw"))) is False
    assert sync.needs_rehash(WEAK.hash("pw")) is True
    assert sync.needs_rehash("not a hash") is True
    assert sync.needs_rehash("é") is True


def test_hash_password_now_is_verifiable(sync: Passwords) -> None:
    """hash_password_now gives, synchronously, a hash that verify_password accepts."""
    password_hash = hash_password_now("for the command line")
    assert password_hash.startswith("$argon2id$")
    assert result_of(sync.verify_password(password_hash, "for the command line")) is True


class ThreadRecordingHasher(argon2.PasswordHasher):
    """argon2's hasher, noting the thread that each hash and verification runs on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.threads.append(threading.get_ident())
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.threads.append(threading.get_ident())
        return super().verify(hash, password)


@pytest_twisted.ensureDeferred
async def test_real_thread_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default runner, hashing and verifying run in a thread, not the reactor's."""
    hasher = ThreadRecordingHasher()
    monkeypatch.setattr(passwords, "_HASHER", hasher)
    real = Passwords()
    try:
        password_hash = await real.hash_password("threaded")
        assert await real.verify_password(password_hash, "threaded") is True
        assert await real.verify_password(password_hash, "wrong") is False
        assert await real.verify_password("garbage", "threaded") is False
    finally:
        real.stop()
    assert len(hasher.threads) == 4
    assert threading.get_ident() not in hasher.threads


class Held:
    """A thread runner that answers only when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.pending: list[Deferred[Any]] = []
        self.results: list[Any] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.calls.append((function, args))
        self.pending.append(Deferred())
        return self.pending[-1]

    def answer(self) -> None:
        """Run the oldest pending call now and fire its Deferred."""
        function, args = self.calls[len(self.calls) - len(self.pending)]
        try:
            self.results.append(function(*args))
        except Exception:
            self.results.append(None)
            self.pending.pop(0).errback()
            return
        self.pending.pop(0).callback(self.results[-1])


def test_past_the_waiting_limit_checks_are_refused_not_queued() -> None:
    """With every thread busy and the queue full, a check fails at once with PasswordsBusy."""
    held = Held()
    bounded = Passwords(run_in_thread=held, threads=2, max_waiting=3)
    password_hash = WEAK.hash("pw")
    accepted = [bounded.verify_password(password_hash, "pw") for _ in range(5)]
    with capturedLogs() as events:
        refused: list[Deferred[Any]] = [
            bounded.hash_password("pw"),
            bounded.verify_password(password_hash, "pw"),
        ]
    assert len(held.calls) == 5  # the refused ones never reached a thread
    for deferred in refused:
        with pytest.raises(PasswordsBusy, match="busy checking passwords"):
            result_of(deferred)
    (warning,) = messages(events, LogLevel.warn)  # one line per busy spell, not per refusal
    assert "refusing more" in warning
    held.answer()
    assert result_of(accepted[0]) is True
    bounded.verify_password(password_hash, "pw")
    assert len(held.calls) == 6  # a place was free again


def test_unknown_names_cost_one_argon2_run_against_a_dummy_hash() -> None:
    """verify_dummy hashes a dummy once, then verifies against it; it always says False."""
    held = Held()
    dummy = Passwords(run_in_thread=held)
    answers: list[bool] = []
    for password in ["first", "second", "third"]:
        dummy.verify_dummy(password).addCallback(answers.append)
        held.answer()
    assert answers == [False, False, False]
    (made_with, _), *checks = held.calls
    assert made_with == passwords._HASHER.hash
    assert [function for function, _ in checks] == [passwords._HASHER.verify] * 2
    assert [args for _, args in checks] == [
        (held.results[0], "second"),
        (held.results[0], "third"),
    ]


def test_dummy_checks_are_bounded_too() -> None:
    """The dummy check waits for a thread like any other, and is refused like any other."""
    dummy = Passwords(run_in_thread=Held(), threads=1, max_waiting=0)
    dummy.verify_dummy("first")
    with pytest.raises(PasswordsBusy):
        result_of(dummy.verify_dummy("second"))


class ThreadedMemoryReactor(MemoryReactorClock):
    """A fake reactor that hands what threads call from to the test, through a queue."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, function: Callable[..., Any], *args: Any) -> None:
        self.from_threads.put((function, args))

    def run_one_call_from_a_thread(self) -> None:
        function, args = self.from_threads.get(timeout=60)
        function(*args)


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "chatd-passwords" in t.name and t.is_alive()]


def test_pool_starts_at_first_use_and_stops_at_shutdown() -> None:
    """Hashing threads start at the first hash, at most PASSWORD_THREADS, and end at shutdown."""
    reactor = ThreadedMemoryReactor()
    pooled = Passwords(reactor=reactor)
    assert pool_threads() == [] and reactor.triggers == {}
    hashes = [pooled.hash_password("pw") for _ in range(3)]
    for _ in hashes:
        reactor.run_one_call_from_a_thread()
    assert all(result_of(h).startswith("$argon2id$") for h in hashes)
    assert 1 <= len(pool_threads()) <= passwords.PASSWORD_THREADS
    ((stop, args, kwargs),) = reactor.triggers["during"]["shutdown"]
    stop(*args, **kwargs)
    assert pool_threads() == []
    with pytest.raises(PasswordsBusy, match="shutting down"):
        result_of(pooled.hash_password("pw"))
