"""Deadlines of one length for many items, kept with a single timer.

A timer per session (the alias handshake's, the close's grace period), set when it
starts and cancelled when it ends, is a ``callLater`` and a ``cancel`` on the
reactor's heap per session: about 5 % of a short session's CPU. All those
deadlines have the same length, so they fall due in the order they were set: one
timer, for the oldest, is enough, and ending one is a dict deletion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

T = TypeVar("T")


class Deadlines(Generic[T]):
    """Calls ``expire(item)`` once ``seconds`` have passed since ``item`` was added,
    unless it was discarded first; to the same precision as a timer per item."""

    __slots__ = ("_call", "_clock", "_expire", "_since", "seconds")

    def __init__(self, clock: IReactorTime, seconds: float, expire: Callable[[T], None]) -> None:
        self._clock = clock
        self.seconds = seconds
        self._expire = expire
        # When each item was added: in that order, so the first is due first.
        self._since: dict[T, float] = {}
        self._call: IDelayedCall | None = None

    def __contains__(self, item: object) -> bool:
        return item in self._since

    def add(self, item: T) -> None:
        """Start ``item``'s deadline (it must not have one running)."""
        self._since[item] = self._clock.seconds()
        self._schedule()

    def discard(self, item: T) -> None:
        """Stop ``item``'s deadline, if it has one; the timer goes with the last."""
        if self._since.pop(item, None) is not None and not self._since:
            self._cancel()

    def change(self, seconds: float) -> None:
        """Make every deadline, running or to come, ``seconds`` from its start."""
        self.seconds = seconds
        self._cancel()
        self._schedule()

    def _cancel(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _schedule(self) -> None:
        """Set the timer for the oldest deadline, if there is one."""
        if self._since and self._call is None:
            due = next(iter(self._since.values())) + self.seconds
            self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._due)

    def _due(self) -> None:
        self._call = None
        since = self._since
        while since:
            item, at = next(iter(since.items()))
            if at + self.seconds > self._clock.seconds():
                break
            del since[item]
            self._expire(item)
        self._schedule()
