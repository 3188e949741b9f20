"""Who is muted: the state the hub checks on every line, as :mod:`chatd.bans` is for bans.

Operators change it through :mod:`chatd.moderation`; the hub only asks it.
"""

from __future__ import annotations

from chatd.admission import admission_key
from chatd.text import alias_key


class Mutes:
    """Who is muted: alias keys until when, and the addresses their mutes carry.

    Muted is the alias, or the address the mute was given at (the same person
    back under another alias). An address (IPv6: its /64, as connections are
    counted) carries the mute of one alias key.
    """

    def __init__(self) -> None:
        # Alias key -> when the mute ends (clock seconds; inf for never). Public so
        # that the hub's check costs one look when nobody is muted.
        self.until: dict[str, float] = {}
        self._hosts: dict[str, str] = {}

    def add(self, key: str, until: float, host: str | None = None) -> None:
        """Mute alias key ``key`` until ``until`` (and ``host``'s address with it)."""
        self.until[key] = until
        if (address := admission_key(host)) is not None:
            self._hosts[address] = key

    def lift(self, key: str) -> bool:
        """Lift the mute of alias key ``key`` and of the addresses it carries; False if none."""
        for host in [host for host, muted in self._hosts.items() if muted == key]:
            del self._hosts[host]
        return self.until.pop(key, None) is not None

    def muted(self, alias: str, host: str | None, now: float) -> bool:
        """Whether ``alias`` (connected from ``host``) is muted at ``now``; an expired
        mute is lifted on the way."""
        key = alias_key(alias)
        if key not in self.until and (address := admission_key(host)) is not None:
            key = self._hosts.get(address, key)
        until = self.until.get(key)
        if until is None:
            return False
        if until <= now:
            self.lift(key)
            return False
        return True

    def follow(self, old: str, new: str) -> None:
        """Alias key ``old`` is now ``new``: its mute follows the person."""
        if old in self.until:
            self.until[new] = self.until.pop(old)
            for host, key in self._hosts.items():
                if key == old:
                    self._hosts[host] = new
