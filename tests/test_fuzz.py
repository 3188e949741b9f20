"""Property tests: arbitrary byte streams, chunkings and disconnects never break the server."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionLost

from chatd.flood import FloodLimits
from chatd.mentions import mentions
from chatd.text import alias_key
from tests.test_protocol import Client, RegisteredServer, Server

FRAGMENTS = [
    b"\n",
    b"\r\n",
    b"\r",
    b"a",
    b"b",
    b"Al",
    b"/nick ",
    b"/quit",
    b"/quit gone",
    b"/me ",
    b"/msg watcher ",
    b"/who",
    b"/help",
    b"//",
    b"\x1b[2J",
    b"\x1b]0;t\x07",
    b"\xc2\x9b",
    b"\xff\xfb\x01",
    b"\xff\xfa",
    b"\xff\xf0",
    b"\xff",
    b"\x00",
    b"\xc3",
    b"\xe2\x80\xae",
    b"x" * 40,
]

# Whole lines that mean something, so that aliases, renames and quits really happen.
LINES = [
    b"alice\n",
    b"Bob\r\n",
    b"c\n",
    b"hi there\n",
    b"/nick dave\n",
    b"/nick ALICE\n",
    b"/me waves\n",
    b"/msg watcher psst\n",
    b"/quit bye\n",
    b"/who\n",
    b"/join #rust\n",
    b"/join #lobby\n",
]
piece = st.one_of(
    st.sampled_from(LINES),
    st.sampled_from(LINES),
    st.sampled_from(FRAGMENTS),
    st.binary(max_size=12),
)
chunk = st.lists(piece, max_size=8).map(b"".join)
action = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 3), chunk),
    st.tuples(st.just("drop"), st.integers(0, 3), st.none()),
    st.tuples(st.just("connect"), st.just(0), st.none()),
)
# With the clock in play: time passes between actions (flood delays, idle cut-offs).
# Shorter than the idle timeout, so the watcher, typing before each, stays.
timed_action = st.one_of(action, st.tuples(st.just("tick"), st.integers(1, 29), st.none()))

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_JOIN = re.compile(r"\*\*\* (\S+) has joined #lobby")
_LEAVE = re.compile(r"\*\*\* (\S+) has (?:left \(|gone to #)")
_RENAME = re.compile(r"\*\*\* (\S+) is now known as (\S+)$")
_SPOKEN = re.compile(r"(?:<\S+>|\* \S+) (.*)")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, max_size=40))
def test_arbitrary_input_keeps_invariants(actions: list[tuple[str, int, bytes | None]]) -> None:
    """No exception escapes, what others see is clean, membership matches live connections,
    and every departure is announced exactly once."""
    check_invariants(Server(max_line_bytes=64, sendq_bytes=1 << 20), actions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(timed_action, max_size=40))
def test_invariants_hold_with_flood_control_and_idle_timeout(
    actions: list[tuple[str, int, bytes | None]],
) -> None:
    """The same, with lines delayed by flood control, flooders cut off, and idle timeouts."""
    server = Server(
        max_line_bytes=64,
        sendq_bytes=1 << 20,
        flood=FloodLimits(burst=3, rate=2, queue_cap=4),
        idle_timeout_seconds=30,
    )
    server.sessions.start()
    check_invariants(server, actions)
    server.sessions.stop()


# A password check, answered when the actions say so: what is typed meanwhile is marked.
PASSWORD_LINES = [b"owner\n", b"secret\n", b"wrong\n", b"OWNER\r\n", b"\n"]
password_chunk = st.lists(
    st.one_of(st.sampled_from(PASSWORD_LINES), st.sampled_from(PASSWORD_LINES), piece),
    max_size=8,
).map(b"".join)
# Two clients mostly, so that one of them goes through a check with something to send.
password_action = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 1), password_chunk),
    st.tuples(st.just("send"), st.integers(0, 1), password_chunk),
    st.tuples(st.just("answer"), st.just(0), st.none()),
    st.tuples(st.just("tick"), st.integers(1, 3), st.none()),
    st.tuples(st.just("drop"), st.integers(0, 3), st.none()),
    st.tuples(st.just("connect"), st.just(0), st.none()),
)
_MARK = re.compile(r"Zq\d+qZ")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(password_action, max_size=40),
    st.sampled_from([FloodLimits(rate=0), FloodLimits(burst=3, rate=2, queue_cap=4)]),
)
def test_nothing_sent_during_a_password_check_reaches_anyone(
    actions: list[tuple[str, int, bytes | None]], flood: FloodLimits
) -> None:
    """Each line a client sends while its password is checked is marked: whatever the answer
    and whenever it comes, no mark reaches the watcher (as chat, an action, a message, a
    quit reason) or becomes an alias, and the other invariants hold; with flood control
    (which holds lines back too) and without."""
    server = RegisteredServer(max_line_bytes=64, flood=flood)
    server.accounts.hold = True
    marks = itertools.count()
    started_in_a_check: set[Client] = set()  # a line of theirs is unfinished, and marked

    def send(client: Client, data: bytes) -> None:
        """One line at a time, each piece marked if it is sent during a check or finishes
        a line begun during one."""
        for line in re.findall(rb"[^\n]*\n|[^\n]+$", data):
            end = b"\n" if line.endswith(b"\n") else b""
            if client.session._checking or client in started_in_a_check:
                line = line.removesuffix(b"\n") + b"Zq%dqZ" % next(marks) + end
                if end:
                    started_in_a_check.discard(client)
                else:
                    started_in_a_check.add(client)
            client.type(line)

    seen = check_invariants(server, actions, send=send, answer=server.accounts.answer)
    assert not _MARK.search(seen)
    assert not any(_MARK.search(alias) for alias in server.hub.online())


def check_invariants(
    server: Server,
    actions: list[tuple[str, int, bytes | None]],
    send: Callable[[Client, bytes], None] = Client.type,
    answer: Callable[[], None] | None = None,
) -> str:
    """Play ``actions`` against ``server`` and check what a watcher saw against the hub;
    return what the watcher saw. ``send`` delivers a chunk, ``answer`` answers the password
    checks waiting."""
    (watcher,) = server.join("watcher")
    clients: list[Client] = [server.connect() for _ in range(3)]
    for kind, index, data in actions:
        if kind == "connect":
            clients.append(server.connect())
            continue
        if kind == "answer":
            assert answer is not None
            answer()
            continue
        if kind == "tick":
            watcher.type("\n")  # the watcher keeps itself alive
            server.clock.advance(index)
            continue
        client = clients[index % len(clients)]
        if client.closed:
            continue
        if client.transport.disconnecting:
            client.finish_close()
        elif kind == "drop":
            client.drop(ConnectionLost)
        else:
            assert data is not None
            send(client, data)
    for client in clients:
        if client.transport.disconnecting and not client.closed:
            client.finish_close()

    server.clock.advance(0)  # end the reactor turn: deliver what the hub batched
    raw = watcher.transport.value()
    assert raw == b"" or raw.endswith(b"\r\n")
    text = raw.decode("utf-8")  # strict: nothing invalid was relayed
    present: set[str] = set()  # aliases the watcher has been told are in its room
    named = False  # whether a line has mentioned the watcher yet
    for line in text.split("\r\n")[:-1]:
        # The one control character: the bell at the end of a line that mentions the
        # watcher; the first such line has it (later ones within the bell's interval not).
        rang = line.endswith("\a")
        line = line.removesuffix("\a")
        spoken = _SPOKEN.fullmatch(line)
        mentioned = bool(spoken and mentions(spoken.group(1), "watcher"))
        assert mentioned or not rang, line
        assert rang or named or not mentioned, line
        named |= mentioned
        assert not _FORBIDDEN.search(line), line
        if joined := _JOIN.match(line):
            key = alias_key(joined.group(1))
            assert key not in present
            present.add(key)
        elif left := _LEAVE.match(line):
            key = alias_key(left.group(1))
            assert key in present  # one leave per join: never announced twice
            present.remove(key)
        elif renamed := _RENAME.match(line):
            present.remove(alias_key(renamed.group(1)))
            present.add(alias_key(renamed.group(2)))

    online = {c.session for c in clients if not c.closed and c.session.alias is not None}
    assert {alias_key(a) for a in server.hub.online()} == {
        alias_key(p.alias)
        for p in online  # type: ignore[arg-type]
    } | {"watcher"}
    in_lobby = {alias_key(p.alias) for p in online if server.hub.room_of(p) == "#lobby"}  # type: ignore[arg-type]
    assert present == in_lobby
    assert server.sessions.live == {c.session for c in clients if not c.closed} | {watcher.session}
    return text
