"""Flood control for one connection: a token bucket that delays lines instead of dropping them.

Each line (commands included) takes a token; the bucket holds ``burst`` tokens
and refills at ``rate`` per second. A line that finds the bucket empty waits in a
queue ("fakelag", as IRC servers call it) and is handled when a token comes, so
an honest paste arrives whole, only slower. The queue is what a flooder fills:
past ``queue_cap`` lines the sender is warned once, and past twice that it is cut
off, so a flood costs the server a bounded number of lines per connection.

It knows nothing of sockets: the chat session feeds it lines and says what
handling one means, so every front end is held to it alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime


@dataclass(frozen=True)
class FloodLimits:
    """The bucket's size and refill rate, and how many lines may wait."""

    burst: int = 10
    rate: float = 2.0
    queue_cap: int = 50

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class FloodGate:
    """Passes lines on at most at the limits' rate, queueing the excess."""

    __slots__ = (
        "_clock",
        "_flood",
        "_handle",
        "_limits",
        "_queue",
        "_ready",
        "_timer",
        "_tokens",
        "_updated",
        "_warn",
        "_warned",
    )

    def __init__(
        self,
        clock: IReactorTime,
        limits: FloodLimits,
        handle: Callable[[str], None],
        ready: Callable[[], bool],
        warn: Callable[[int], None],
        flood: Callable[[], None],
    ) -> None:
        """``handle`` a line when it may pass and ``ready()`` says the receiver can take it.

        ``warn(waiting)`` is called once when the queue passes the cap, ``flood()``
        when it passes twice the cap (the gate stops then).
        """
        self._clock = clock
        self._limits = limits
        self._handle = handle
        self._ready = ready
        self._warn = warn
        self._flood = flood
        self._tokens = float(limits.burst)
        self._updated = clock.seconds()
        # Made on first use: most connections never fill the bucket, and an empty
        # deque is 600 bytes, a lot beside an idle connection's ~3 KiB.
        self._queue: deque[str] | None = None
        self._timer: IDelayedCall | None = None
        self._warned = False

    @property
    def waiting(self) -> int:
        """Lines held back."""
        return len(self._queue) if self._queue is not None else 0

    def feed(self, line: str) -> None:
        """Handle ``line`` now if a token is free, or queue it for later."""
        if not self._queue and self._ready() and self._take():
            self._handle(line)
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(line)
        waiting = len(self._queue)
        if waiting > 2 * self._limits.queue_cap:
            self.stop()
            self._flood()
            return
        if waiting > self._limits.queue_cap and not self._warned:
            self._warned = True
            self._warn(waiting)
        self._schedule()

    def drain(self) -> None:
        """Handle what waits, as far as tokens allow; call again when the receiver is ready."""
        self._timer = None
        queue = self._queue
        if queue is None:
            return
        while queue and self._ready() and self._take():
            self._handle(queue.popleft())
        if len(queue) <= self._limits.queue_cap:
            self._warned = False
        self._schedule()

    def stop(self) -> None:
        """Forget what waits and stop the timer: the connection is going."""
        self._queue = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _take(self) -> bool:
        now = self._clock.seconds()
        limits = self._limits
        self._tokens = min(limits.burst, self._tokens + (now - self._updated) * limits.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def _schedule(self) -> None:
        if not self._queue or self._timer is not None or not self._ready():
            return
        delay = max(0.0, (1 - self._tokens) / self._limits.rate)
        self._timer = self._clock.callLater(delay, self.drain)
