"""chatd's two connections to Redis, kept open (and reopened) for the life of the node.

One connection runs commands (keys, scripts, PUBLISH); the other only listens,
since a Redis connection that has subscribed can run nothing else. Both go
through txredisapi's protocols under Twisted's ``ClientService``, which
reconnects with a capped back-off, so an outage of any length ends in a
reconnection within :data:`MAX_RETRY_SECONDS` of Redis coming back.

The link is *up* only while both connections are (the cluster needs to hear as
well as speak); each change of state is reported once to ``on_up`` / ``on_down``.
While it is down, :meth:`RedisLink.execute` fails at once with
:class:`~chatd.cluster.address.RedisUnreachable` instead of queueing: every caller
has a local answer (deliver locally, keep history for later, tell the user to
try again), and a command queued for minutes would act on a world that has
moved on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime, ITransport
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.cluster.address import RedisAddress, RedisUnreachable

CONNECT_TIMEOUT_SECONDS = 3.0
# A command unanswered this long means a hung Redis: the connection is dropped
# (and remade), so the cluster is told the link is down instead of waiting.
REPLY_TIMEOUT_SECONDS = 5.0
INITIAL_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 2.0


class _WholeReads:
    """Parse everything a read brought in before the reactor turn ends.

    txredisapi's parser, after each bulk string, pauses the connection and
    parses the rest of the read in a later reactor turn (``setLineMode`` with
    ``callLater(0)``), to keep its recursion shallow. A published message is
    three bulk strings, so a node would hear at most one other node's message
    per three turns, and the hub, which flushes rooms once per turn, would
    write each remote line to every local member on its own: measured, two
    nodes fell behind from ~150 lines/s. Here the rest is parsed in a loop in
    the same turn instead: as shallow, and remote lines are batched like local
    ones.
    """

    _rest = b""
    transport: ITransport | None

    def setLineMode(self, extra: bytes | str = b"") -> None:
        self.line_mode = 1
        if extra:
            self._rest += extra if isinstance(extra, bytes) else extra.encode()

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        super().dataReceived(data, unpause)  # type: ignore[misc]
        while self._rest and self.transport is not None:
            rest, self._rest = self._rest, b""
            super().dataReceived(rest)  # type: ignore[misc]


class _Commands(_WholeReads, txredisapi.RedisProtocol):
    """The connection that runs commands and scripts."""


class _Subscriber(_WholeReads, txredisapi.SubscriberProtocol):
    """Hands every published message to the link."""

    factory: _ConnectionFactory

    def messageReceived(self, pattern: str | None, channel: str, message: str) -> None:
        self.factory.link.on_message(channel, message)


class _ConnectionFactory(Factory):
    """Builds one txredisapi protocol per connection, with the link's settings.

    txredisapi's protocols call ``stopTrying`` and ``connectionError`` on their
    factory when logging in or choosing the database fails; both are reported
    here and the ClientService goes on retrying (the password may be fixed).
    """

    log = Logger()
    noisy = False
    # Read by txredisapi when logging in fails.
    isLazy = False

    def __init__(self, protocol: type[txredisapi.RedisProtocol], link: RedisLink) -> None:
        self._protocol_type = protocol
        self.link = link
        self._address = link.address

    def buildProtocol(self, addr: Any) -> txredisapi.RedisProtocol:
        address = self._address
        connection = self._protocol_type(
            charset="utf-8",
            replyTimeout=REPLY_TIMEOUT_SECONDS,
            password=address.password,
            dbid=address.db,
            convertNumbers=False,
            username=address.username,
        )
        connection.factory = self
        return connection

    def stopTrying(self) -> None:
        """Called by txredisapi when login or SELECT failed; the service retries anyway."""

    def connectionError(self, why: str) -> None:
        self.log.error("Redis refused the connection: {why}", why=why)


class RedisLink:
    """A command connection and a subscription to Redis, reporting when both are up."""

    log = Logger()

    def __init__(self, address: RedisAddress, reactor: Any = None) -> None:
        """Set ``channels``, ``on_message``, ``on_up``, ``on_down`` (and ``client_name``)
        before :meth:`start`."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.address = address
        self._reactor: IReactorTCP | IReactorTime | IReactorCore = reactor
        self._clock: IReactorTime = reactor
        self.channels: list[str] = []
        # Given to Redis as the connections' names (no spaces), e.g. the node's name.
        self.client_name: str | None = None
        self.on_message: Callable[[str, str], None] = _ignore_message
        self.on_up: Callable[[], None] = _nothing
        self.on_down: Callable[[], None] = _nothing
        self._commands: txredisapi.RedisProtocol | None = None
        self._subscriber: _Subscriber | None = None
        self.up = False
        self._stopping = False
        self._services: list[ClientService] = []

    def start(self) -> None:
        """Start connecting (and reconnecting, until :meth:`stop`)."""
        endpoint = HostnameEndpoint(
            self._reactor, self.address.host, self.address.port, timeout=CONNECT_TIMEOUT_SECONDS
        )
        retry = backoffPolicy(initialDelay=INITIAL_RETRY_SECONDS, maxDelay=MAX_RETRY_SECONDS)
        for protocol, prepare in (
            (_Commands, self._commands_ready),
            (_Subscriber, self._subscriber_ready),
        ):
            service = ClientService(
                endpoint,
                _ConnectionFactory(protocol, self),
                retryPolicy=retry,
                clock=self._clock,
                prepareConnection=prepare,
            )
            self._services.append(service)
            service.startService()

    def stop(self) -> Deferred[Any]:
        """Close both connections for good; fires once they are closed."""
        self._stopping = True
        return gatherResults([service.stopService() for service in self._services])

    def execute(self, *args: str | bytes | int | float) -> Deferred[Any]:
        """Run one command; fails at once with RedisUnreachable while the link is down.

        Commands go out on one connection in the order given and Redis answers them
        in that order, which is what keeps a node's messages in order.
        """
        connection = self._commands
        if connection is None or not self.up:
            return fail(RedisUnreachable("no connection to Redis"))
        try:
            result: Deferred[Any] = connection.execute_command(*args)
        except txredisapi.ConnectionError as lost:
            return fail(RedisUnreachable(str(lost)))
        return result.addErrback(_unreachable)

    # Connections coming and going.

    # ClientService hands prepareConnection a proxy of the protocol; txredisapi's
    # whenConnected and whenDisconnected give the protocol itself. The link keeps
    # the latter, so that a loss is matched to the connection it is about.
    # prepareConnection returns at once: logging in, naming and subscribing are
    # followed here, and a connection that fails them (a wrong password) closes,
    # which ClientService sees as an ordinary loss and retries.

    def _commands_ready(self, proxy: Any) -> None:
        ready: Deferred[Any] = proxy.whenConnected()
        ready.addCallback(self._named, "commands")
        ready.addCallback(self._commands_connected)
        ready.addErrback(self._not_prepared, proxy)

    def _named(self, connection: Any, role: str) -> Deferred[Any]:
        """Name the connection (CLIENT SETNAME), so CLIENT LIST tells whose it is."""
        if self.client_name is None:
            return succeed(connection)
        named: Deferred[Any] = connection.execute_command(
            "CLIENT", "SETNAME", f"{self.client_name}:{role}"
        )
        return named.addCallback(lambda _: connection)

    def _not_prepared(self, failure: Failure, proxy: Any) -> None:
        """Naming or subscribing failed: drop the connection, ClientService makes another."""
        self.log.warn("Redis connection not usable: {problem}", problem=failure.getErrorMessage())
        if proxy.transport is not None:
            proxy.transport.loseConnection()

    def _commands_connected(self, connection: txredisapi.RedisProtocol) -> None:
        self._commands = connection
        connection.whenDisconnected().addCallback(self._commands_lost)
        self._check_up()

    def _commands_lost(self, connection: txredisapi.RedisProtocol) -> None:
        if self._commands is connection:
            self._commands = None
        self._check_down()

    def _subscriber_ready(self, proxy: Any) -> None:
        ready: Deferred[Any] = proxy.whenConnected()
        ready.addCallback(self._named, "events")
        ready.addCallback(self._subscribe)
        ready.addErrback(self._not_prepared, proxy)

    def _subscribe(self, connection: _Subscriber) -> Deferred[None]:
        subscribed: Deferred[Any] = connection.subscribe(self.channels)
        return subscribed.addCallback(lambda _: self._subscribed(connection))

    def _subscribed(self, connection: _Subscriber) -> None:
        self._subscriber = connection
        connection.whenDisconnected().addCallback(self._subscriber_lost)
        self._check_up()

    def _subscriber_lost(self, connection: _Subscriber) -> None:
        if self._subscriber is connection:
            self._subscriber = None
        self._check_down()

    def _check_up(self) -> None:
        if not self.up and self._commands is not None and self._subscriber is not None:
            self.up = True
            self.log.info("connected to Redis at {address}", address=str(self.address))
            self.on_up()

    def _check_down(self) -> None:
        if self.up:
            self.up = False
            if not self._stopping:
                self.log.warn(
                    "lost the connection to Redis at {address}; retrying",
                    address=str(self.address),
                )
                self.on_down()
            # A half-open pair would leave the other connection useless: drop it
            # so both are made again together.
            for connection in (self._commands, self._subscriber):
                if connection is not None and connection.transport is not None:
                    connection.transport.loseConnection()


def _ignore_message(channel: str, message: str) -> None:
    """The default message handler: none is wanted before the cluster sets one."""


def _nothing() -> None:
    """The default handler of the link coming up or going down."""


def _unreachable(failure: Failure) -> Failure:
    """txredisapi's lost-connection and timeout errors, as chatd's RedisUnreachable."""
    lost = failure.check(txredisapi.ConnectionError)
    if lost is not None:
        return Failure(RedisUnreachable(failure.getErrorMessage()))
    return failure
