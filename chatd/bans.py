"""Bans on aliases, IP addresses and CIDR blocks, checked at connect and at alias time.

The list is kept in memory (it is read on every connection) and mirrored to the
store, which makes each change durable before the operator is told it is done.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator

from chatd.model import Ban
from chatd.text import alias_key, is_valid_name

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BanRefused(ValueError):
    """A ban target that is neither an alias, an IP address nor a CIDR block."""


# Dotted numbers (999.1.1.1, 10.0.0) are an address mistyped, never an alias to ban.
_DOTTED_NUMBERS = re.compile(r"[0-9]+(\.[0-9]+)+")


def _looks_like_an_address(text: str) -> bool:
    """Whether ``text`` is meant as an IP address (IPv6 has colons, which no alias has)."""
    return ":" in text or _DOTTED_NUMBERS.fullmatch(text) is not None


def ban_target(target: str) -> tuple[str, str]:
    """The canonical mask and kind (alias, ip or cidr) of what ``/ban`` was given."""
    try:
        network = ipaddress.ip_network(target, strict=False)
    except ValueError:
        address, slash, _prefix = target.partition("/")
        if _looks_like_an_address(address):
            what = "a CIDR block" if slash else "an IP address"
            raise BanRefused(
                f"Not {what}: {target} (e.g. 203.0.113.7, 203.0.113.0/24, 2001:db8::/32)."
            ) from None
        if is_valid_name(target):
            return alias_key(target), "alias"
        raise BanRefused(f"Not an alias, IP address or CIDR block: {target}") from None
    if "/" in target:
        return str(network), "cidr"
    return str(network.network_address), "ip"


class Bans:
    """The bans in force."""

    def __init__(self, bans: Iterable[Ban] = ()) -> None:
        self._bans: dict[str, Ban] = {}
        self._networks: dict[str, IPNetwork] = {}
        for ban in bans:
            self.add(ban)

    def __iter__(self) -> Iterator[Ban]:
        return iter(sorted(self._bans.values(), key=lambda ban: ban.created_at))

    def add(self, ban: Ban) -> None:
        """Enforce ``ban`` (replacing one on the same mask)."""
        self._bans[ban.mask] = ban
        if ban.kind != "alias":
            self._networks[ban.mask] = ipaddress.ip_network(ban.mask, strict=False)

    def remove(self, mask: str) -> bool:
        """Lift the ban on ``mask``; False if there was none."""
        self._networks.pop(mask, None)
        return self._bans.pop(mask, None) is not None

    def match(self, now: float, host: str | None = None, alias: str | None = None) -> Ban | None:
        """The ban in force at ``now`` that covers ``host`` or ``alias``, if any."""
        if not self._bans:  # the common case, asked twice per session: nothing to look at
            return None
        for mask in [m for m, ban in self._bans.items() if _expired(ban, now)]:
            self.remove(mask)
        if alias is not None and (ban := self._bans.get(alias_key(alias))) is not None:
            return ban
        if host is None or not self._networks:
            return None
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None  # not an IP peer (a UNIX socket, say)
        for mask, network in self._networks.items():
            if address.version == network.version and address in network:
                return self._bans[mask]
        return None


def _expired(ban: Ban, now: float) -> bool:
    return ban.expires_at is not None and ban.expires_at <= now
