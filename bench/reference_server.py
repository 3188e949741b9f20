"""The yardstick: the smallest Twisted fan-out chat server there is.

chatd is measured as a ratio to this server, run in the same benchmark invocation on
the same machine, so the numbers say what chatd's own features (sanitising, the hub,
bounded send queues, logging) cost on top of plain Twisted, whatever the hardware.

It follows the chat example of Twisted's howto (a ``LineReceiver`` per client, a
shared collection of clients): the first line a client sends is its alias, and every
later line goes to every other client as ``<alias> text\\r\\n``. Nothing else: no
prompts, no notices, no commands, no limits, no logging. Two deliberate departures,
both so that only the fan-out differs from chatd: lines end in LF (CR stripped) as in
chatd, and TCP_NODELAY is set as chatd sets it, so that Nagle's algorithm is not what
gets measured.

It listens with a backlog of 1024 instead of Twisted's 50. It acknowledges no alias,
so the load generator cannot pace its connects by the server's replies as it does
with chatd; with a short accept queue, thousands of connects in a row would overflow
it and the join time would measure the kernel's one-second SYN retransmission.

Run: ``python bench/reference_server.py --port 12345`` (listens on 127.0.0.1).
"""

from __future__ import annotations

import argparse

from twisted.internet import endpoints
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

LISTEN_BACKLOG = 1024


class Chat(LineReceiver):
    """One client: its first line names it, each later line goes to everyone else."""

    delimiter = b"\n"

    def __init__(self, users: set[Chat]) -> None:
        self.users = users
        self.name: bytes | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.users.discard(self)

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if self.name is None:
            self.name = line
            self.users.add(self)
            return
        message = b"<" + self.name + b"> " + line + b"\r\n"
        for user in self.users:
            if user is not self:
                user.transport.write(message)


class ChatFactory(ServerFactory):
    """Holds the set of named clients that every line is fanned out to."""

    noisy = False

    def __init__(self) -> None:
        self.users: set[Chat] = set()

    def buildProtocol(self, addr: IAddress) -> Chat:
        return Chat(self.users)


def main() -> None:
    """Listen on 127.0.0.1 (or ``--interface``) and serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args()
    from twisted.internet import reactor

    endpoint = endpoints.serverFromString(
        reactor, f"tcp:{args.port}:interface={args.interface}:backlog={LISTEN_BACKLOG}"
    )
    listening = endpoint.listen(ChatFactory())
    failed: list[Failure] = []

    def cannot_listen(failure: Failure) -> None:
        # Exit rather than run on without a port: whoever started us is waiting for it.
        failed.append(failure)
        reactor.callWhenRunning(reactor.stop)  # type: ignore[attr-defined]

    listening.addErrback(cannot_listen)
    reactor.run()  # type: ignore[attr-defined]
    if failed:
        raise SystemExit(f"reference_server: {failed[0].getErrorMessage()}")


if __name__ == "__main__":
    main()
