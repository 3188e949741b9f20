"""Where a cluster's Redis is (the ``--redis`` URL, parsed), and the error for "not now".

Kept apart from :mod:`chatd.cluster.link` so that checking the option imports
neither txredisapi nor (through it) the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_REDIS_PORT = 6379


class RedisURLRefused(ValueError):
    """A ``--redis`` value that is not a redis:// URL chatd can use."""


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is: ``redis://[[user]:password@]host[:port][/db]``."""

    host: str
    port: int
    db: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse ``url``; raise RedisURLRefused saying what is wrong with it."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise RedisURLRefused(f"{url!r} is not a redis:// URL")
        try:
            port = parts.port or DEFAULT_REDIS_PORT
        except ValueError:
            raise RedisURLRefused(f"{url!r} has a bad port") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise RedisURLRefused(f"{url!r}: the database must be a number, as in /0")
        if parts.query or parts.fragment:
            raise RedisURLRefused(f"{url!r}: options after ? or # are not understood")
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            db=int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __str__(self) -> str:
        """The address without the password, for logs."""
        return f"redis://{self.host}:{self.port}/{self.db}"


class RedisUnreachable(ConnectionError):
    """No connection to Redis now (down, restarting, or a reply timed out).

    A builtin ConnectionError, so that code using Redis through the link can
    tell an outage from a bug without importing a Redis client.
    """
