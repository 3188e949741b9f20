"""Property tests: arbitrary IRC input, in any chunks, never breaks the server or its output."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from chatd.flood import FloodLimits
from tests.test_irc import IrcClient, Server
from tests.test_protocol import ClockedAccounts

# Whole lines that mean something, so that registrations, moves and renames happen.
LINES = [
    b"NICK alice\r\n",
    b"NICK Bob\n",
    b"NICK owner\r\n",
    b"USER u 0 * :real name\r\n",
    b"CAP LS 302\r\n",
    b"CAP REQ :server-time sasl\r\n",
    b"CAP END\r\n",
    b"PASS secret\r\n",
    b"AUTHENTICATE PLAIN\r\n",
    b"AUTHENTICATE AG93bmVyAHNlY3JldA==\r\n",
    b"PRIVMSG #lobby :hello\r\n",
    b"PRIVMSG #lobby :\x01ACTION waves\x01\r\n",
    b"PRIVMSG watcher :psst\r\n",
    b"PRIVMSG NickServ :IDENTIFY secret\r\n",
    b"NOTICE #lobby :hm\r\n",
    b"JOIN #tea\r\n",
    b"JOIN #lobby,#x\r\n",
    b"PART #tea\r\n",
    b"PART #lobby\r\n",
    b"TOPIC #lobby :a topic\r\n",
    b"TOPIC #lobby\r\n",
    b"NAMES\r\n",
    b"WHO #lobby\r\n",
    b"WHO watcher\r\n",
    b"WHOIS watcher\r\n",
    b"LIST\r\n",
    b"AWAY :out\r\n",
    b"AWAY\r\n",
    b"MOTD\r\n",
    b"MODE #lobby\r\n",
    b"PING :t\r\n",
    b"QUIT :bye\r\n",
    b"HISTORY 3\r\n",
    b"AUTHENTICATE AG93bmVyAHdyb25n\r\n",
    b"AUTHENTICATE +\r\n",
    b"NOTICE chatd :help\r\n",
    b"NICK nickserv\r\n",
    b"ISON watcher alice bob\r\n",
    b"USERHOST watcher\r\n",
    b"KICK #lobby watcher :out\r\n",
    b"OPER admin secret\r\n",
]
FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b" ",
    b"@tag=x ",
    b":prefix ",
    b"\x01",
    b"\x03" + b"4",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\x1b[2J",
    b"#",
    b",",
    b"x" * 300,
    # Commands whose parameters come back in the answer, so that what follows them
    # (a lone CR, a NUL, an escape) is echoed if anything is.
    b"PING :",
    b"CAP REQ :sasl",
    b"AUTHENTICATE ",
    b"NOTICE chatd :",
    b"NICK ",
    b"JOIN #a,",
    b"WHO ",
    b"TOPIC #lobby :",
]
piece = st.one_of(
    st.sampled_from(LINES),
    st.sampled_from(LINES),
    st.sampled_from(FRAGMENTS),
    st.binary(max_size=12),
)
chunk = st.lists(piece, max_size=8).map(b"".join)
action = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 2), chunk),
    st.tuples(st.just("send"), st.integers(0, 2), chunk),
    st.tuples(st.just("drop"), st.integers(0, 2), st.none()),
    st.tuples(st.just("connect"), st.just(0), st.none()),
    st.tuples(st.just("tick"), st.integers(1, 5), st.none()),
)
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(action, max_size=40),
    st.sampled_from([FloodLimits(rate=0), FloodLimits(burst=3, rate=2, queue_cap=4)]),
)
def test_arbitrary_irc_input_keeps_the_invariants(
    actions: list[tuple[str, int, bytes | None]], flood: FloodLimits
) -> None:
    """No exception escapes nor is logged; every line an IRC client is sent is one whole
    message of at most 512 bytes (tags aside) without stray controls; what a line user
    sees is clean; and the hub's members are exactly the live sessions that joined."""
    failures: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        run(actions, flood)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert failures == []


def run(actions: list[tuple[str, int, bytes | None]], flood: FloodLimits) -> None:
    """Play ``actions`` and check the invariants on what was sent."""
    server = Server(accounts=ClockedAccounts(), flood=flood, max_line_bytes=64)
    watcher = server.line_user("watcher")
    clients = [IrcClient(server.irc) for _ in range(3)]
    live = list(clients)
    for kind, index, data in actions:
        if kind == "connect":
            client = IrcClient(server.irc)
            clients.append(client)
            live.append(client)
        elif kind == "tick":
            server.clock.advance(index)
        elif live:
            client = live[index % len(live)]
            if kind == "send":
                assert data is not None
                client.connection.dataReceived(data)
            else:
                client.connection.connectionLost(Failure(ConnectionLost()))
                live.remove(client)
        for client in list(live):
            if client.transport.disconnecting or client.transport.disconnected:
                client.connection.connectionLost(Failure(ConnectionLost()))
                live.remove(client)
    server.clock.advance(1)
    for client in clients:
        for line in client.lines():
            message = line.split(" ", 1)[1] if line.startswith("@") else line
            assert len(message.encode()) + 2 <= 512
            assert not _FORBIDDEN.search(message.replace("\x01", ""))
    for line in watcher.lines():
        assert not _FORBIDDEN.search(line)
    welcomed = {client.connection.session for client in live if client.connection.view.welcomed}
    assert set(server.hub.members()) == welcomed | {watcher.session}
