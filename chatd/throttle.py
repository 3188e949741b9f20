"""Slowing down password guessing and registration floods, in tables that cannot grow forever.

:class:`PasswordThrottle` decides when a password check may run. It counts, per
client address (or, where no address is known, per name: a registered alias, an
operator name), the checks since the last success; after the first few, each
further check must wait its turn, and turns are spaced twice as far apart each
time, up to a cap. Names are not counted across addresses: anyone could then
keep an alias's owner waiting, or refused, by guessing at it now and then from
one address. Guessing from many addresses at once is bounded by the hashing
pool instead (:mod:`chatd.passwords`: two checks at a time, sixteen waiting). The
turn is taken before the check runs, so checks sent all at once (SSH clients can
pipeline password attempts) queue up one behind the other instead of being
hashed together; a check that would have to wait longer than the cap is not run
at all (:class:`~chatd.passwords.PasswordsBusy`).

:class:`Quota` allows a key (an address) a number of events per window, e.g.
three registrations an hour.

Both forget keys that have been quiet for a while and, when full, the key
touched longest ago, so a scan from many addresses costs a bounded table.
Addresses are keyed as connections are counted
(:func:`chatd.admission.admission_key`): IPv4 alone, IPv6 by its /64.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

from chatd.admission import admission_key
from chatd.passwords import PasswordsBusy

# Checks a key may make since its last success before the waiting starts.
FREE_CHECKS = 3
# The wait between turns after the free checks: the first, doubling, up to the cap.
FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 60.0
# A key without a check for this long is forgotten, with its count.
FORGET_AFTER_SECONDS = 15 * 60.0
# Keys kept per table; past it, the one touched longest ago is forgotten.
MAX_TRACKED_KEYS = 4096

V = TypeVar("V")


class _BoundedTable(Generic[V]):
    """Values by key, the least recently touched first, at most ``max_keys`` of them."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._values: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: str) -> V | None:
        return self._values.get(key)

    def touch(self, key: str, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently touched; evict if full."""
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self._max_keys:
            self._values.popitem(last=False)

    def discard(self, key: str) -> None:
        self._values.pop(key, None)

    def forget_oldest_while(self, quiet: Callable[[V], bool]) -> None:
        """Drop entries from the least recently touched on, while ``quiet(value)``."""
        while self._values:
            key, value = next(iter(self._values.items()))
            if not quiet(value):
                return
            del self._values[key]


@dataclass
class _Checks:
    """The checks of one key since its last success, and when the next may start."""

    count: int
    next_turn: float
    last_seen: float


class PasswordThrottle:
    """When the next password check from an address (or, with none, of a name) may run.

    ``turn(host, name)`` is called before each check and says how many seconds
    the check must wait first (0 for most); ``succeeded(host, name)`` after a
    right password. A check counts as a failure from the moment it starts (so
    that checks running together are counted together); a success takes back its
    own count and the wait it set.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        free_checks: int = FREE_CHECKS,
        first_wait_seconds: float = FIRST_WAIT_SECONDS,
        max_wait_seconds: float = MAX_WAIT_SECONDS,
        forget_after_seconds: float = FORGET_AFTER_SECONDS,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        self._clock = clock
        self._free = free_checks
        self._first_wait = first_wait_seconds
        self._max_wait = max_wait_seconds
        # Never forget a key before its queue of turns has drained (at most two
        # longest waits after its last check).
        self._forget_after = max(forget_after_seconds, 2 * max_wait_seconds)
        self._addresses: _BoundedTable[_Checks] = _BoundedTable(max_keys)
        self._names: _BoundedTable[_Checks] = _BoundedTable(max_keys)

    def tracked(self) -> tuple[int, int]:
        """How many addresses and names are being counted (for tests and metrics)."""
        return len(self._addresses), len(self._names)

    def turn(self, host: str | None, name: str | None) -> float:
        """Take a turn for a check by ``host`` of ``name``: the seconds to wait before it.

        Counted by the address, or by the name where there is no address. Raises
        PasswordsBusy, and counts nothing, if the turn is further away than the
        longest wait: the guesser gets no check at all.
        """
        now = self._clock.seconds()
        self._forget_quiet(self._addresses, now)
        self._forget_quiet(self._names, now)
        table, key = self._counted_by(host, name)
        if key is None:
            return 0.0
        entry = table.get(key) or _Checks(0, now, now)
        start = max(now, entry.next_turn)
        if start - now > self._max_wait:
            raise PasswordsBusy("Too many wrong passwords lately; try again in a minute or two.")
        entry.count += 1
        entry.next_turn = start + self._spacing(entry.count)
        entry.last_seen = now
        table.touch(key, entry)
        return start - now

    def succeeded(self, host: str | None, name: str | None) -> None:
        """A check by ``host`` of ``name`` found the right password: it takes back its
        own count and the wait it set."""
        table, key = self._counted_by(host, name)
        entry = None if key is None else table.get(key)
        if entry is not None:
            entry.count = max(0, entry.count - 1)
            entry.next_turn = min(entry.next_turn, self._clock.seconds())

    def _counted_by(
        self, host: str | None, name: str | None
    ) -> tuple[_BoundedTable[_Checks], str | None]:
        if host is not None:
            return self._addresses, admission_key(host)
        return self._names, name

    def _forget_quiet(self, table: _BoundedTable[_Checks], now: float) -> None:
        table.forget_oldest_while(lambda entry: now - entry.last_seen >= self._forget_after)

    def _spacing(self, count: int) -> float:
        """The wait between the turn of check number ``count`` and the next."""
        if count < self._free:
            return 0.0
        doublings = min(count - self._free, 32)  # 2**32 s is past any cap
        return min(self._max_wait, self._first_wait * 2**doublings)


class Quota:
    """At most ``limit`` events per key in any ``window_seconds``."""

    def __init__(
        self,
        clock: IReactorTime,
        limit: int,
        window_seconds: float,
        *,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window_seconds
        self._times: _BoundedTable[deque[float]] = _BoundedTable(max_keys)

    def tracked(self) -> int:
        """How many keys are being counted (for tests and metrics)."""
        return len(self._times)

    def take(self, key: str) -> float:
        """Count an event for ``key`` now: 0 if allowed, else the seconds until one is.

        An event refused is not counted.
        """
        now = self._clock.seconds()
        self._times.forget_oldest_while(lambda times: not times or now - times[-1] >= self._window)
        times = self._times.get(key) or deque()
        while times and now - times[0] >= self._window:
            times.popleft()
        if len(times) >= self._limit:
            return times[0] + self._window - now
        times.append(now)
        self._times.touch(key, times)
        return 0.0

    def give_back(self, key: str) -> None:
        """Uncount the latest event of ``key`` (it did not happen after all)."""
        times = self._times.get(key)
        if times:
            times.pop()
