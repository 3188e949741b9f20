"""Tests for chatd.cluster.link's protocols, fed bytes by hand (no Redis, no reactor turns)."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport

from chatd.cluster.address import RedisAddress
from chatd.cluster.link import RedisLink, _Commands, _ConnectionFactory, _Subscriber


def message(channel: str, payload: str) -> bytes:
    """A pub/sub message as Redis sends it: three bulk strings."""
    parts = [b"message", channel.encode(), payload.encode()]
    return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


def connected(protocol_type: type, link: RedisLink) -> Any:
    """A protocol of the link's, connected and past its SELECT of the database."""
    protocol = _ConnectionFactory(protocol_type, link).buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b"+OK\r\n")
    return protocol


def test_every_message_of_a_read_is_handled_in_the_same_turn() -> None:
    """A read holding many published messages hands them all over at once, in order.

    (txredisapi alone parses one bulk string per reactor turn; see _WholeReads.)
    """
    link = RedisLink(RedisAddress.from_url("redis://127.0.0.1:1/0"), reactor=object())
    heard: list[tuple[str, str]] = []
    link.on_message = lambda channel, text: heard.append((channel, text))
    subscriber = connected(_Subscriber, link)
    subscriber.dataReceived(b"".join(message("chatd:events", f"m{n}") for n in range(500)))
    assert heard == [("chatd:events", f"m{n}") for n in range(500)]


def test_replies_split_anywhere_across_reads_are_parsed_whole() -> None:
    """Replies arriving in pieces of any size come out whole, and in order."""
    link = RedisLink(RedisAddress.from_url("redis://127.0.0.1:1/0"), reactor=object())
    commands = connected(_Commands, link)
    replies = [commands.execute_command("GET", f"k{n}") for n in range(50)]
    got: list[Any] = []
    for reply in replies:
        reply.addCallback(got.append)
    stream = b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in (b"v%d" % n for n in range(50)))
    for start in range(0, len(stream), 7):
        commands.dataReceived(stream[start : start + 7])
    assert got == [f"v{n}" for n in range(50)]
