"""Who may connect: a global cap, a per-address cap, and a per-address rate of new connections.

Checked when a connection is accepted, before any protocol is built, on every
listener alike (line, web, SSH, metrics: see :class:`AdmittingFactory`), so a
connection flood costs the server one refusal and a close per attempt, and a
single address cannot take all the file descriptors through whichever port has
the weakest guard (what ssh-chat suffered from half-open connections). Each
limit is off at 0.

Addresses are counted as a person is likely to hold them: an IPv4 address as
itself (also when a dual-stack listener reports it IPv4-mapped, ``::ffff:a.b.c.d``),
an IPv6 address by its /64, the block one subscriber is usually given.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import (
    IAddress,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
    ISSLTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

# Rate buckets of addresses with nothing connected are forgotten once this many
# addresses are known, so a scan from many addresses cannot grow the table forever.
MAX_TRACKED_ADDRESSES = 4096
# An IPv6 client is counted by the network of this many leading bits.
IPV6_PREFIX_BITS = 64


def canonical_host(host: str | None) -> str | None:
    """``host`` as chatd shows, bans and logs it: IPv4-mapped IPv6 becomes plain IPv4.

    A dual-stack listener reports an IPv4 client as ``::ffff:192.0.2.1``; without
    this, a ban on 192.0.2.1 would not match it, and it would be counted apart.
    """
    if host is None or ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def admission_key(host: str | None) -> str | None:
    """Under what a connection from ``host`` is counted: IPv4 alone, IPv6 by its /64."""
    host = canonical_host(host)
    if host is None or ":" not in host:
        return host
    try:
        network = ipaddress.IPv6Network(f"{host}/{IPV6_PREFIX_BITS}", strict=False)
    except ValueError:
        return host
    return str(network)


def peer_host(address: IAddress | None) -> str | None:
    """The canonical host of a peer address; None where it has none (a UNIX socket)."""
    return canonical_host(getattr(address, "host", None))


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
            # Every attempt takes a token, refused or not: an address hammering at
            # its cap is slowed like any other that connects too fast.
            if limits.max_rate_per_ip and not self._take_token(host):
                self.refused["max_conn_rate"] += 1
                return f"Too many new connections from {host}; wait a minute."
            if limits.max_per_ip and self._per_host[host] >= limits.max_per_ip:
                self.refused["max_per_ip"] += 1
                return f"Too many connections from {host} (at most {limits.max_per_ip})."
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


# How a listener turns a refusal into something its clients understand.
Refusal = Callable[[str], bytes]


def refusal_line(why: str) -> bytes:
    """A refusal as one line of text: what telnet, nc and SSH clients show.

    An SSH client reads (and may show) lines sent before the server's version
    string, so the same line serves the SSH port (RFC 4253, section 4.2).
    """
    return f"!!! {why}\r\n".encode()


def refusal_http(why: str) -> bytes:
    """A refusal as an HTTP 503 response, for the web and metrics ports."""
    body = f"{why}\n".encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Retry-After: 60\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


def _log_prefix(wrapped: object) -> str:
    """What Twisted's log calls ``wrapped`` (a protocol or a factory)."""
    log_prefix = getattr(wrapped, "logPrefix", None)
    return log_prefix() if log_prefix is not None else wrapped.__class__.__name__


class RefusedConnection(Protocol):
    """A connection turned away at accept time: what it is told, then the close.

    Over TLS nothing can be said before the handshake, and a close waits for the
    handshake to finish, which a flood of connections never does: each would keep
    its descriptor for good. So a refused TLS connection is aborted at once, and
    only the log says why.
    """

    def __init__(self, message: bytes) -> None:
        self._message = message

    def connectionMade(self) -> None:
        assert self.transport is not None
        if ISSLTransport.providedBy(self.transport):
            self.transport.abortConnection()
            return
        self.transport.write(self._message)
        self.transport.loseConnection()


class AdmittedConnection(Protocol):
    """Holds an admitted connection's slot until it closes, and is otherwise invisible.

    The wrapped protocol gets the real transport, so what it writes goes straight
    to the socket (no wrapper on the delivery path); only reads and the close pass
    through here, and the close gives the slot back, however the connection ends.
    """

    def __init__(self, factory: AdmittingFactory, wrapped: IProtocol, key: str | None) -> None:
        self._admitting = factory
        self.wrapped = wrapped
        self._key = key
        self._released = False

    def logPrefix(self) -> str:
        return _log_prefix(self.wrapped)

    def makeConnection(self, transport: ITransport) -> None:
        self.connected = 1
        self.transport = transport
        self.wrapped.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.wrapped.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.connected = 0
        if not self._released:
            self._released = True
            self._admitting.admission.release(self._key)
        self.wrapped.connectionLost(reason)


@implementer(IProtocolFactory, ILoggingContext)
class AdmittingFactory:
    """Puts one listener's connections under the shared :class:`Admission`, at accept time.

    Every listener (line, web, SSH, metrics) is wrapped in one of these around
    the same Admission, so each connection counts once, whatever port it came
    in on, and a refused one costs a short answer and a close: no protocol of
    the wrapped factory is ever built for it.
    """

    noisy = False
    log = Logger(namespace="chatd.admission")

    def __init__(self, wrapped: IProtocolFactory, admission: Admission, refusal: Refusal) -> None:
        self.wrapped = wrapped
        self.admission = admission
        self._refusal = refusal
        if IProtocolNegotiationFactory.providedBy(wrapped):
            # TLS asks the factory it wraps (this one) which protocols to offer
            # over ALPN; with none, Twisted fails every handshake that offers one.
            directlyProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        """The wrapped factory's ALPN protocols (twisted.web's site: http/1.1)."""
        return list(IProtocolNegotiationFactory(self.wrapped).acceptableProtocols())

    def logPrefix(self) -> str:
        """The wrapped factory's name, so the log says which listener this is."""
        return _log_prefix(self.wrapped)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        key = admission_key(getattr(addr, "host", None))
        why = self.admission.admit(key)
        if why is not None:
            self.log.info("refused {peer}: {why}", peer=describe_peer(addr), why=why)
            return RefusedConnection(self._refusal(why))
        try:
            wrapped = self.wrapped.buildProtocol(addr)
        except BaseException:
            self.admission.release(key)
            raise
        if wrapped is None:
            self.admission.release(key)
            return None
        return AdmittedConnection(self, wrapped, key)


def describe_peer(address: IAddress) -> str:
    """A short, log-friendly form of a peer address (``host:port`` for TCP)."""
    host = peer_host(address)
    if host is not None:
        return f"{host}:{address.port}"  # type: ignore[attr-defined]
    return str(address)
