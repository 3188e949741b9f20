"""Running totals for the metrics endpoint, kept as plain integers on the hot paths.

The paths that move lines bump these with an attribute addition each, once per
line received and once per room flush, never per recipient; the metrics
collector reads them only when scraped. (Prometheus client counters take a lock
on every increment, which the broadcast loop should not pay.)
"""

from __future__ import annotations

from collections import Counter


class Counters:
    """What chatd has done since it started."""

    __slots__ = ("bytes_sent", "disconnects", "lines_delivered", "lines_received")

    def __init__(self) -> None:
        self.lines_received = 0
        # Protocol lines written to clients (CRLF-terminated), and their bytes.
        self.lines_delivered = 0
        self.bytes_sent = 0
        # Clients cut off by a limit, by reason: sendq, flood, idle, alias_timeout.
        self.disconnects: Counter[str] = Counter()

    def delivered(self, data: bytes, recipients: int = 1) -> None:
        """Count ``data`` written to ``recipients`` clients."""
        self.lines_delivered += data.count(b"\n") * recipients
        self.bytes_sent += len(data) * recipients
