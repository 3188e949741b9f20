"""Who may connect: a global cap, a per-address cap, and a per-address rate of new connections.

Checked before a protocol is built, so a connection flood costs the server one
refusal line and a close per attempt, and a single address cannot take all the
file descriptors (what ssh-chat suffered from half-open connections). Each limit
is off at 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

# Rate buckets of addresses with nothing connected are forgotten once this many
# addresses are known, so a scan from many addresses cannot grow the table forever.
MAX_TRACKED_ADDRESSES = 4096


@dataclass(frozen=True)
class ConnectionLimits:
    """How many may be connected at once, per address, and how fast one address may connect."""

    max_conns: int = 20_000
    max_per_ip: int = 10
    # New connections per address per minute (a bucket of this size, refilled over a minute).
    max_rate_per_ip: int = 30


class Admission:
    """Counts live connections per address and answers whether a new one may in."""

    def __init__(self, clock: IReactorTime, limits: ConnectionLimits) -> None:
        self._clock = clock
        # Public: a reload replaces them; counts and buckets carry over.
        self.limits = limits
        self._connected = 0
        self._per_host: Counter[str] = Counter()
        # Refusals by limit (max_conns, max_per_ip, max_conn_rate), for the metrics.
        self.refused: Counter[str] = Counter()
        # Address -> (tokens, when last refilled).
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def connected(self) -> int:
        """Connections admitted and not yet released."""
        return self._connected

    def admit(self, host: str | None) -> str | None:
        """Count a new connection from ``host`` in, or say why it is refused.

        ``host`` is None where the transport has no address (a UNIX socket): only
        the global cap applies then.
        """
        limits = self.limits
        if limits.max_conns and self._connected >= limits.max_conns:
            self.refused["max_conns"] += 1
            return "Server full: too many connections; try again later."
        if host is not None:
            if limits.max_per_ip and self._per_host[host] >= limits.max_per_ip:
                self.refused["max_per_ip"] += 1
                return f"Too many connections from {host} (at most {limits.max_per_ip})."
            if limits.max_rate_per_ip and not self._take_token(host):
                self.refused["max_conn_rate"] += 1
                return f"Too many new connections from {host}; wait a minute."
            self._per_host[host] += 1
        self._connected += 1
        return None

    def release(self, host: str | None) -> None:
        """A connection admitted from ``host`` has closed."""
        self._connected -= 1
        if host is not None:
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]

    def _take_token(self, host: str) -> bool:
        capacity = self.limits.max_rate_per_ip
        refill_per_second = capacity / 60.0
        now = self._clock.seconds()
        tokens, updated = self._buckets.get(host, (float(capacity), now))
        tokens = min(capacity, tokens + (now - updated) * refill_per_second)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if host not in self._buckets and len(self._buckets) >= MAX_TRACKED_ADDRESSES:
            self._forget_idle(now, refill_per_second)
        self._buckets[host] = (tokens, now)
        return allowed

    def _forget_idle(self, now: float, refill_per_second: float) -> None:
        """Drop the buckets that have refilled and whose address has nothing connected."""
        capacity = self.limits.max_rate_per_ip
        for host, (tokens, updated) in list(self._buckets.items()):
            full = tokens + (now - updated) * refill_per_second >= capacity
            if full and host not in self._per_host:
                del self._buckets[host]
