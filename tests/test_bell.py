"""Mentions for those present: the bell (line protocol, SSH), the mark (JSON), /bell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatd.client import NOT_REVERSE, REVERSE, ChatClient
from chatd.events import Acted, History, Mentioned, Notice, Said
from chatd.fronts import jsonformat, lineformat
from chatd.hub import BELL_INTERVAL_SECONDS, Hub
from chatd.model import HistoryEntry
from tests.test_hub import ENCODINGS, RecordingMember, joined
from tests.test_protocol import Server
from tests.test_ssh import SSHHarness


@pytest.fixture
def hub() -> Hub:
    return Hub(Clock())


def said(sender: str, text: str) -> bytes:
    return repr(Said(sender, text)).encode()


def mentioned(sender: str, text: str, bell: bool = True) -> bytes:
    return repr(Mentioned(Said(sender, text), bell)).encode()


# Who gets which copy (the hub and the room, with members that record events).


def test_the_mentioned_get_their_own_copy_and_the_rest_the_shared_bytes(hub: Hub) -> None:
    """Only bob, whom the line names, gets the marked copy; the rest share one encoding."""
    alice, bob, carol, dave = joined(hub, "alice", "bob", "carol", "dave")
    ENCODINGS.clear()
    hub.say(alice, "bob: lunch?")
    assert bob.delivered() == [mentioned("alice", "bob: lunch?")]
    assert carol.received == dave.received == [said("alice", "bob: lunch?")]
    assert carol.received[0] is dave.received[0]
    assert alice.received == []
    assert len(ENCODINGS) == 2  # the line once, bob's copy once


@pytest.mark.parametrize("text", ["thanks @BOB!", "ask Bob.", "(bob)", "bob, bob and bob"])
def test_any_case_a_leading_at_and_punctuation_still_mention(hub: Hub, text: str) -> None:
    """A mention is the alias as a word, in any case, with or without @ (chatd.mentions)."""
    alice, bob = joined(hub, "alice", "bob")
    hub.say(alice, text)
    assert bob.delivered() == [mentioned("alice", text)]


@pytest.mark.parametrize("text", ["bobby", "bob_2 is here", "x.bob", "b-o-b"])
def test_a_longer_word_is_no_mention(hub: Hub, text: str) -> None:
    """An alias inside a longer word (bobby, x.bob) mentions nobody."""
    alice, bob = joined(hub, "alice", "bob")
    hub.say(alice, text)
    assert bob.delivered() == [said("alice", text)]


def test_an_action_mentions_too(hub: Hub) -> None:
    """/me pokes bob reaches bob as his marked copy of the action."""
    alice, bob = joined(hub, "alice", "bob")
    hub.act(alice, "pokes bob")
    assert bob.delivered() == [repr(Mentioned(Acted("alice", "pokes bob"), True)).encode()]


def test_saying_your_own_alias_rings_nobody(hub: Hub) -> None:
    """A member naming themselves gets nothing (their lines are not echoed); no copy is made."""
    alice, bob = joined(hub, "alice", "bob")
    ENCODINGS.clear()
    hub.say(alice, "alice is back")
    assert alice.delivered() == []
    assert bob.received == [said("alice", "alice is back")]
    assert len(ENCODINGS) == 1
    assert not isinstance(ENCODINGS[0], Mentioned)


def test_someone_ignored_never_rings(hub: Hub) -> None:
    """A line from someone bob ignores is not delivered to him, mention or not."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.ignore(bob, "alice")
    bob.delivered()
    bob.received.clear()
    hub.say(alice, "bob! bob!")
    assert bob.delivered() == []
    assert carol.received == [said("alice", "bob! bob!")]


def test_a_member_of_another_room_is_not_mentioned_here(hub: Hub) -> None:
    """Naming someone who is in another room sends them nothing."""
    alice, bob = joined(hub, "alice", "bob")
    hub.move(bob, "#elsewhere")
    bob.delivered()
    bob.received.clear()
    ENCODINGS.clear()
    hub.say(alice, "where is bob?")
    assert bob.delivered() == []
    assert not any(isinstance(event, Mentioned) for event in ENCODINGS)


def test_with_the_bell_off_the_copy_is_still_marked_without_the_bell(hub: Hub) -> None:
    """/bell off keeps the mark (for the page and the client) and drops the bell."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.set_bell(bob, False)
    off = Notice("The bell for lines that mention you is off.")
    assert bob.delivered() == [repr(off).encode()]
    bob.received.clear()
    hub.say(alice, "bob and carol: tea")
    assert bob.delivered() == [mentioned("alice", "bob and carol: tea", bell=False)]
    assert carol.received == [mentioned("alice", "bob and carol: tea", bell=True)]


def test_a_mention_keeps_its_place_among_the_lines_and_what_is_told_alone(hub: Hub) -> None:
    """Caught up mid-turn, bob gets the lines before, his copy, then what he alone is told,
    then the rest of the turn: in the order it all happened (the second copy without a
    bell: the first rang it)."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.say(alice, "one")
    hub.say(carol, "bob: two")
    hub.tell(bob, Notice("alone"))
    hub.say(alice, "three, bob")
    hub.say(alice, "four")
    assert bob.delivered() == [
        said("alice", "one") + mentioned("carol", "bob: two"),
        repr(Notice("alone")).encode(),
        mentioned("alice", "three, bob", bell=False) + said("alice", "four"),
    ]
    assert carol.received == [
        said("alice", "one") + said("alice", "three, bob") + said("alice", "four")
    ]


def test_a_newcomer_is_not_mentioned_by_what_was_said_before_they_came(hub: Hub) -> None:
    """A line naming bob before he joined, in the same turn, does not reach him."""
    (alice,) = joined(hub, "alice")
    hub.say(alice, "bob will come")
    bob = RecordingMember(hub)
    hub.join(bob, "bob", replay=False)
    hub.say(alice, "hi bob")
    assert bob.delivered()[1:] == [mentioned("alice", "hi bob")]


def test_a_line_from_another_node_mentions_members_here(hub: Hub) -> None:
    """In a cluster, a line said elsewhere reaches the members it names here marked."""
    bob, carol = joined(hub, "bob", "carol")
    hub.remote_said("zed", "#lobby", "bob: from afar", 1.0)
    assert bob.delivered() == [mentioned("zed", "bob: from afar")]
    assert carol.received == [said("zed", "bob: from afar")]


def test_a_line_naming_five_hundred_members_costs_one_copy_each_and_two_encodings(
    hub: Hub,
) -> None:
    """Hostile: a line listing 500 aliases of the room gives each of them one write with
    one marked copy, and the copy is encoded once for all."""
    aliases = [f"{a}{b}" for a in "abcdefghijklmnopqrst" for b in "0123456789abcdefghijklmno"]
    assert len(aliases) == 500
    alice, *members = joined(hub, "alice", *aliases)
    text = " ".join(aliases)
    assert len(text.encode()) < 2048  # a line the line protocol takes
    ENCODINGS.clear()
    hub.say(alice, text)
    hub.flush()
    copy = mentioned("alice", text)
    assert all(member.received == [copy] for member in members)
    assert len(ENCODINGS) == 2


def test_a_mention_survives_a_member_cut_off_mid_flush(hub: Hub) -> None:
    """A mentioned member whose delivery raises is cut off; the others still get theirs."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")

    def broken(data: bytes) -> None:
        raise RuntimeError("front end bug")

    bob.send = broken  # type: ignore[method-assign]
    hub.say(alice, "bob and carol")
    assert carol.delivered()[0] == mentioned("alice", "bob and carol")
    assert bob.disconnected == "delivery failed"


# A bell flood: one member's bell rings at most once per BELL_INTERVAL_SECONDS.


def test_lines_naming_someone_again_soon_are_marked_without_another_bell(hub: Hub) -> None:
    """Hostile: many lines naming bob, from one sender or several, ring him once per
    interval; every line still reaches him marked, and the bell rings again after it."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.say(alice, "bob")
    hub.say(carol, "bob!")
    hub.say(alice, "@bob")
    assert bob.delivered() == [
        mentioned("alice", "bob")
        + mentioned("carol", "bob!", bell=False)
        + mentioned("alice", "@bob", bell=False)
    ]
    bob.received.clear()
    hub.clock.advance(BELL_INTERVAL_SECONDS - 0.5)  # type: ignore[attr-defined]
    hub.say(carol, "bob?")
    assert bob.delivered() == [mentioned("carol", "bob?", bell=False)]
    bob.received.clear()
    hub.clock.advance(0.5)  # type: ignore[attr-defined]
    hub.say(carol, "bob??")
    assert bob.delivered() == [mentioned("carol", "bob??")]


def test_each_member_has_a_bell_interval_of_their_own(hub: Hub) -> None:
    """bob's bell having rung does not keep carol's quiet."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.say(alice, "bob")
    hub.say(alice, "carol")
    assert bob.delivered() == [mentioned("alice", "bob") + said("alice", "carol")]
    assert carol.received == [said("alice", "bob") + mentioned("alice", "carol")]


def test_a_line_from_someone_ignored_does_not_use_up_the_bell(hub: Hub) -> None:
    """Hostile: someone bob ignores cannot silence the next line that names him by naming
    him first (their line never reaches him, so it must not take his bell)."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.ignore(bob, "alice")
    bob.delivered()
    bob.received.clear()
    hub.say(alice, "bob bob bob")
    hub.say(carol, "bob: real question")
    assert bob.delivered() == [mentioned("carol", "bob: real question")]


def test_bell_on_rings_at_the_next_mention(hub: Hub) -> None:
    """/bell on is asked for now: the next line naming bob rings, however recent the last."""
    alice, bob = joined(hub, "alice", "bob")
    hub.say(alice, "bob")
    hub.set_bell(bob, True)
    hub.say(alice, "bob again")
    assert bob.delivered()[-1] == mentioned("alice", "bob again")


def test_a_line_naming_someone_500_times_rings_once(server: Server) -> None:
    """Hostile: one line naming bob 500 times ends in one BEL on his terminal."""
    alice, bob = server.join("alice", "bob")
    alice.type(" ".join(["bob"] * 500) + "\n")
    (line,) = bob.lines()
    assert line.count("\a") == 1 and line.endswith("\a")


# The line protocol and JSON.


def test_the_line_protocol_ends_a_mention_with_a_bell_before_the_crlf() -> None:
    """The bell comes after the text, so the prefix stays first; without it, the plain line."""
    line = Said("alice", "bob: hi")
    assert lineformat.encode(Mentioned(line, bell=True)) == b"<alice> bob: hi\a\r\n"
    assert lineformat.encode(Mentioned(line, bell=False)) == b"<alice> bob: hi\r\n"
    action = Mentioned(Acted("alice", "waves at bob"), bell=True)
    assert lineformat.encode(action) == b"* alice waves at bob\a\r\n"


@pytest.mark.parametrize("bell", [True, False])
def test_json_marks_a_mention_whatever_the_bell(bell: bool) -> None:
    """The JSON copy is the line's object with "mention": true; no bell in it."""
    assert json.loads(jsonformat.encode(Mentioned(Said("alice", "bob: hi"), bell))) == {
        "type": "message",
        "sender": "alice",
        "text": "bob: hi",
        "mention": True,
    }
    assert json.loads(jsonformat.encode(Mentioned(Acted("alice", "pokes bob"), bell))) == {
        "type": "action",
        "sender": "alice",
        "text": "pokes bob",
        "mention": True,
    }


def test_replayed_lines_are_marked_in_json_and_never_ring() -> None:
    """History shown to bob marks (in JSON) the lines of others naming him; no line rings."""
    entries = (
        HistoryEntry("#lobby", "say", "alice", "bob: you there?", 1.0),
        HistoryEntry("#lobby", "say", "bob", "bob is here", 2.0),
        HistoryEntry("#lobby", "act", "carol", "hugs BOB", 3.0),
        HistoryEntry("#lobby", "say", "carol", "bobby tables", 4.0),
    )
    records = json.loads(jsonformat.encode(History("#lobby", entries, reader="Bob")))
    assert "reader" not in records
    assert [entry.get("mention", False) for entry in records["entries"]] == [
        True,
        False,
        True,
        False,
    ]
    unread = json.loads(jsonformat.encode(History("#lobby", entries)))
    assert not any("mention" in entry for entry in unread["entries"])
    assert b"\a" not in lineformat.encode(History("#lobby", entries, reader="bob"))


def test_history_on_arrival_and_on_request_names_its_reader(hub: Hub) -> None:
    """The hub tells each member whose history it is, so JSON can mark their mentions."""
    alice, bob = joined(hub, "alice", "bob")
    hub.say(alice, "bob: earlier")
    hub.show_history(bob, 5)
    assert b"reader='bob'" in bob.delivered()[-1]
    carol = RecordingMember(hub)
    hub.join(carol, "carol")
    assert any(b"History(" in data and b"reader='carol'" in data for data in carol.delivered())


# /bell and the line protocol, in memory.


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("/bell", "*** The bell for lines that mention you is on."),
        ("/bell off", "*** The bell for lines that mention you is off."),
        ("/BELL On", "*** The bell for lines that mention you is on."),
        ("/bell loud", "!!! Usage: /bell [on|off]"),
        ("/bell on off", "!!! Usage: /bell [on|off]"),
    ],
)
def test_bell_says_sets_or_refuses(server: Server, line: str, answer: str) -> None:
    """/bell says whether the bell is on, /bell on|off sets it, anything else is refused."""
    (alice,) = server.join("alice")
    alice.type(line + "\n")
    assert alice.lines() == [answer]


def test_a_line_protocol_user_hears_the_bell_until_bell_off(server: Server) -> None:
    """bob gets a BEL at the end of a line naming him; after /bell off, the plain line."""
    alice, bob, carol = server.join("alice", "bob", "carol")
    alice.type("bob: ping\n")
    assert bob.lines() == ["<alice> bob: ping\a"]
    assert carol.lines() == ["<alice> bob: ping"]
    bob.type("/bell off\n")
    bob.lines()
    alice.type("bob: ping again\n")
    assert bob.lines() == ["<alice> bob: ping again"]
    bob.type("/bell on\n")
    bob.lines()
    alice.type("/me nudges bob\n")
    assert bob.lines() == ["* alice nudges bob\a"]


def test_a_bell_typed_by_a_user_is_stripped(server: Server) -> None:
    """Hostile: a BEL (or many) in what someone types rings nobody; only the server's does."""
    alice, bob = server.join("alice", "bob")
    alice.type("ring\a\a\a ring \x1b]0;x\x07\n")
    assert bob.lines() == ["<alice> ring ring"]
    alice.type("\abob\a\n")
    assert bob.lines() == ["<alice> bob\a"]


def test_the_bell_is_in_help(server: Server) -> None:
    """/help lists /bell with what it does."""
    (alice,) = server.join("alice")
    alice.type("/help\n")
    assert any("/bell [on|off]" in line for line in alice.lines())


# The SSH terminal.


def test_the_bell_reaches_an_ssh_terminal_until_bell_off(tmp_path: Path) -> None:
    """The server's BEL goes through the SSH line editor to the terminal; /bell off stops it."""
    harness = SSHHarness(tmp_path)
    _, alice_client, alice_pump = harness.connect(b"alice")
    alice = harness.shell(alice_client, alice_pump)
    _, bob_client, bob_pump = harness.connect(b"bob")
    bob = harness.shell(bob_client, bob_pump)

    def bob_says(line: bytes) -> bytes:
        start = len(alice.received)
        bob.write(line + b"\r")
        bob_pump.flush()
        harness.clock.advance(0)
        alice_pump.flush()
        return alice.received[start:]

    shown = bob_says(b"alice: are you there?")
    assert b"<bob> alice: are you there?\a\r" in shown
    assert shown.count(b"\a") == 1
    assert b"\a" not in bob_says(b"no mention here")
    alice.write(b"/bell off\r")
    alice_pump.flush()
    harness.clock.advance(0)
    alice_pump.flush()
    assert b"The bell for lines that mention you is off." in alice.received
    shown = bob_says(b"alice?")
    assert b"<bob> alice?\r" in shown
    assert b"\a" not in shown


# chatd-client.


def client_at_a_terminal(interactive: bool = True) -> tuple[ChatClient, list[str]]:
    """A chatd-client connection (at a terminal or not) welcomed as alice."""
    shown: list[str] = []
    client = ChatClient(shown.append, Clock(), "alice", interactive=interactive)
    client.makeConnection(StringTransport())
    client.dataReceived(b"*** Welcome, alice! You are in #lobby (2): alice, bob\r\n")
    shown.clear()
    return client, shown


def test_the_client_highlights_a_mention_and_rings_with_the_server_s_bell() -> None:
    """At a terminal, a line naming us is in reverse video, ringing when the server rang."""
    client, shown = client_at_a_terminal()
    client.dataReceived(b"<bob> alice: hi\a\r\n* bob waves at ALICE\r\n<bob> hi all\r\n")
    assert shown == [
        f"{REVERSE}<bob> alice: hi{NOT_REVERSE}\a",
        f"{REVERSE}* bob waves at ALICE{NOT_REVERSE}",  # the bell was off
        "<bob> hi all",
    ]


def test_the_client_highlights_replayed_mentions_without_a_bell() -> None:
    """A history line naming us is highlighted; our own, or a longer word, are not."""
    client, shown = client_at_a_terminal()
    client.dataReceived(
        b"[2026-11-24 10:32:05Z] <bob> alice: earlier\r\n"
        b"[2026-11-24 10:32:06Z] <alice> alice here\r\n"
        b"[2026-11-24 10:32:07Z] * bob likes alicebot\r\n"
    )
    assert shown == [
        f"{REVERSE}[2026-11-24 10:32:05Z] <bob> alice: earlier{NOT_REVERSE}",
        "[2026-11-24 10:32:06Z] <alice> alice here",
        "[2026-11-24 10:32:07Z] * bob likes alicebot",
    ]


def test_a_hostile_server_rings_only_on_a_line_that_mentions_us() -> None:
    """A bell on a notice, a private message or a line not naming us is stripped, and
    what the server sends can never carry its own escape sequences."""
    client, shown = client_at_a_terminal()
    client.dataReceived(
        b"*** alice\a\r\n*bob* alice\a\r\n<bob> hello\a\r\n<bob> alice \x1b[31mred\a\r\n"
    )
    assert shown == [
        "*** alice",
        "*bob* alice",
        "<bob> hello",
        f"{REVERSE}<bob> alice red{NOT_REVERSE}\a",
    ]


def test_a_pipe_gets_mentions_as_plain_lines() -> None:
    """Without a terminal, a line naming us is shown as it is: no video, no bell."""
    client, shown = client_at_a_terminal(interactive=False)
    client.dataReceived(b"<bob> alice: hi\a\r\n")
    assert shown == ["<bob> alice: hi"]


def test_the_client_follows_its_renamed_alias_for_mentions() -> None:
    """After /nick, a line naming the new alias is highlighted and the old one is not."""
    client, shown = client_at_a_terminal()
    client.dataReceived(b"*** alice is now known as ann\r\n<bob> alice?\r\n<bob> ann!\a\r\n")
    assert shown[1:] == ["<bob> alice?", f"{REVERSE}<bob> ann!{NOT_REVERSE}\a"]
