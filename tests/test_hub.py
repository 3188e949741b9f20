"""Tests for chatd.hub: membership and delivery, with no sockets involved."""

from __future__ import annotations

import re

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from chatd import hub as hub_module
from chatd import moderation
from chatd.commands import run_command
from chatd.events import Event, InRoom
from chatd.hub import HISTORY_ROOMS_KEPT, LISTED_NAMES, LISTED_ROOMS, Hub
from chatd.model import HistoryEntry, SharedState
from chatd.text import AliasRefused, RoomRefused

ENCODINGS: list[Event] = []


def recording_encode(event: Event) -> bytes:
    """Encode by recording the event, so tests can count how often encoding ran."""
    ENCODINGS.append(event)
    return repr(event).encode()


class RecordingMember:
    """A member that keeps what it was sent instead of writing to a socket."""

    encode = staticmethod(recording_encode)
    host = "192.0.2.1"
    peer = "192.0.2.1:50312"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.alias: str | None = None
        self.received: list[bytes] = []
        self.disconnected: str | None = None

    def send(self, data: bytes) -> None:
        self.received.append(data)

    def disconnect(self, reason: str) -> None:
        self.disconnected = reason

    def delivered(self) -> list[bytes]:
        """What the member has received once the current reactor turn ends."""
        self.hub.clock.advance(0)  # type: ignore[attr-defined]
        return self.received

    def text(self) -> str:
        return "\n".join(d.decode() for d in self.delivered())


@pytest.fixture
def hub() -> Hub:
    return Hub(Clock())


def joined(hub: Hub, *aliases: str) -> list[RecordingMember]:
    members = []
    for alias in aliases:
        member = RecordingMember(hub)
        hub.join(member, alias)
        members.append(member)
    hub.flush()
    for member in members:
        member.received.clear()
    return members


def test_join_welcomes_and_announces(hub: Hub) -> None:
    """A newcomer gets the roster; everyone else gets a join notice with the count."""
    (alice,) = joined(hub, "alice")
    bob = RecordingMember(hub)
    hub.join(bob, "bob")
    assert bob.text() == (
        "InRoom(room='#lobby', names=('alice', 'bob'), present=2, topic=None, welcome='bob')"
    )
    assert alice.text() == "Joined(alias='bob', room='#lobby', present=2, came_from=None)"


def test_alias_unique_case_insensitively(hub: Hub) -> None:
    """A second member cannot take an alias that differs only in case."""
    joined(hub, "alice")
    with pytest.raises(AliasRefused, match="taken"):
        hub.join(RecordingMember(hub), "ALICE")
    assert len(hub) == 1


def test_say_reaches_everyone_but_sender_encoded_once(hub: Hub) -> None:
    """A chat line goes to all other members, encoded a single time for all of them."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    ENCODINGS.clear()
    hub.say(alice, "hello")
    assert alice.delivered() == []
    assert bob.delivered() == carol.delivered() == [b"Said(sender='alice', text='hello')"]
    assert len(ENCODINGS) == 1
    assert bob.received[0] is carol.received[0]


def test_say_sanitises_and_drops_blank(hub: Hub) -> None:
    """Escape sequences never reach recipients and a line left blank is not sent."""
    alice, bob = joined(hub, "alice", "bob")
    hub.say(alice, "\x1b[2J\x1b]0;pwned\x07hi")
    hub.say(alice, "  \x1b[31m ")
    assert bob.delivered() == [b"Said(sender='alice', text='hi')"]


def test_leave_is_announced_exactly_once(hub: Hub) -> None:
    """However many times a departure is reported, others hear of it once."""
    alice, bob = joined(hub, "alice", "bob")
    hub.leave(alice, "Quit: bye")
    hub.leave(alice, "Connection lost")
    assert bob.delivered() == [b"Left(alias='alice', reason='Quit: bye')"]
    assert hub.online() == ("bob",)


def test_leave_frees_the_alias(hub: Hub) -> None:
    """After a member leaves, its alias can be taken again."""
    (alice,) = joined(hub, "alice")
    hub.leave(alice, "Quit")
    hub.join(RecordingMember(hub), "Alice")
    assert hub.online() == ("Alice",)


def test_member_dropping_during_broadcast(hub: Hub) -> None:
    """A recipient that leaves while a broadcast is under way breaks nothing."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")

    def send_then_leave(data: bytes) -> None:
        bob.received.append(data)
        hub.leave(bob, "Send queue exceeded")

    bob.send = send_then_leave  # type: ignore[method-assign]
    hub.say(alice, "hi")
    assert carol.text().splitlines() == [
        "Said(sender='alice', text='hi')",
        "Left(alias='bob', reason='Send queue exceeded')",
    ]
    assert hub.online() == ("alice", "carol")


def test_whisper_reaches_only_recipient(hub: Hub) -> None:
    """A private message goes to its recipient alone and is confirmed to the sender."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.whisper(alice, "BOB", "psst")
    assert bob.delivered() == [b"Whispered(sender='alice', text='psst')"]
    assert alice.delivered() == [b"WhisperSent(recipient='bob', text='psst')"]
    assert carol.delivered() == []


def test_whisper_to_unknown_alias_is_an_error(hub: Hub) -> None:
    """A private message to nobody gets an error back and reaches no one."""
    alice, bob = joined(hub, "alice", "bob")
    hub.whisper(alice, "zed", "psst")
    assert alice.delivered() == [b"Error(text='No such user: zed')"]
    assert bob.delivered() == []


def test_rename_frees_old_alias_and_tells_everyone(hub: Hub) -> None:
    """After a rename the old alias is free and everyone, renamer included, is told."""
    alice, bob = joined(hub, "alice", "bob")
    hub.rename(alice, "ally")
    assert alice.delivered() == bob.delivered() == [b"Renamed(old='alice', new='ally')"]
    hub.join(RecordingMember(hub), "alice")
    assert hub.online() == ("alice", "ally", "bob")


def test_rename_to_change_case_only(hub: Hub) -> None:
    """A member may change the case of their own alias."""
    (alice,) = joined(hub, "alice")
    hub.rename(alice, "Alice")
    assert hub.online() == ("Alice",)


@pytest.mark.parametrize(
    ("new", "why"), [("bob", "taken"), ("alice", "already"), ("x y", "Invalid")]
)
def test_rename_refused(hub: Hub, new: str, why: str) -> None:
    """A rename that breaks the alias rules changes nothing."""
    alice, _ = joined(hub, "alice", "bob")
    with pytest.raises(AliasRefused, match=why):
        hub.rename(alice, new)
    assert hub.online() == ("alice", "bob")


def test_close_notifies_and_disconnects_without_leave_storm(hub: Hub) -> None:
    """Closing tells everyone once and disconnects them; no leave notices follow."""
    alice, bob = joined(hub, "alice", "bob")
    hub.move(alice, "#elsewhere")
    hub.flush()
    bob.received.clear()
    hub.close("Server shutting down.")
    hub.leave(alice, "server shutting down")
    assert bob.delivered() == [b"Notice(text='Server shutting down.')"]
    assert alice.disconnected == bob.disconnected == "Server shutting down."


def test_speaking_when_not_online_is_a_programming_error(hub: Hub) -> None:
    """Front ends must join a member before it speaks; the hub refuses otherwise."""
    with pytest.raises(LookupError):
        hub.say(RecordingMember(hub), "hi")


def test_lines_of_one_turn_arrive_as_one_write(hub: Hub) -> None:
    """Lines said in one reactor turn reach each listener as a single write, in order."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.say(alice, "one")
    hub.say(bob, "two")
    hub.say(alice, "three")
    assert carol.received == []  # nothing is written before the turn ends
    assert carol.delivered() == [
        b"Said(sender='alice', text='one')"
        b"Said(sender='bob', text='two')"
        b"Said(sender='alice', text='three')"
    ]
    assert alice.received == [b"Said(sender='bob', text='two')"]
    assert bob.received == [b"Said(sender='alice', text='one')Said(sender='alice', text='three')"]


def test_listeners_share_one_encoded_batch(hub: Hub) -> None:
    """Everyone who spoke in no part of the turn gets the very same bytes object."""
    alice, bob, carol, dave = joined(hub, "alice", "bob", "carol", "dave")
    ENCODINGS.clear()
    hub.say(alice, "one")
    hub.say(bob, "two")
    assert carol.delivered()[0] is dave.delivered()[0]
    assert len(ENCODINGS) == 2


def test_direct_delivery_keeps_order_with_batched_lines(hub: Hub) -> None:
    """A private message after a chat line in the same turn arrives after it."""
    alice, bob = joined(hub, "alice", "bob")
    hub.say(alice, "public")
    hub.whisper(alice, "bob", "private")
    assert bob.delivered() == [
        b"Said(sender='alice', text='public')",
        b"Whispered(sender='alice', text='private')",
    ]


def test_newcomer_does_not_get_lines_from_before_joining(hub: Hub) -> None:
    """A line said earlier in the turn someone joins is not delivered to them."""
    (alice,) = joined(hub, "alice")
    hub.say(alice, "before he came")
    bob = RecordingMember(hub)
    hub.join(bob, "bob", replay=False)
    hub.say(alice, "after he came")
    assert b"before he came" not in b"".join(bob.delivered())
    assert b"Said(sender='alice', text='after he came')" in bob.received


def test_arrivals_in_one_turn_reach_each_member_in_one_write(hub: Hub) -> None:
    """Many joining in one turn cost those present one write each, not one per arrival."""
    present = joined(hub, "alice", "bob", "carol")
    newcomers = [RecordingMember(hub) for _ in range(5)]
    for n, newcomer in enumerate(newcomers):
        hub.join(newcomer, f"new{n}", replay=False)
    for member in present:
        assert len(member.delivered()) == 1
        assert member.received[0].count(b"Joined(") == 5
    # Each newcomer hears of those who came after it, not of itself or earlier ones.
    first, last = newcomers[0], newcomers[-1]
    assert [d.count(b"Joined(") for d in first.delivered()] == [0, 4]
    assert b"Joined(" not in b"".join(last.delivered())


def test_telling_one_member_does_not_flush_the_room(hub: Hub) -> None:
    """A private answer catches its recipient up alone; the others still get one write."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.say(alice, "one")
    hub.whisper(alice, "bob", "psst")
    hub.say(alice, "two")
    assert carol.delivered() == [
        b"Said(sender='alice', text='one')Said(sender='alice', text='two')"
    ]
    assert bob.received == [
        b"Said(sender='alice', text='one')",
        b"Whispered(sender='alice', text='psst')",
        b"Said(sender='alice', text='two')",
    ]


def test_leaver_hears_what_was_said_before_leaving(hub: Hub) -> None:
    """Lines queued before someone leaves still reach them; later ones do not."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.say(alice, "before")
    hub.leave(bob, "bye")
    hub.say(alice, "after")
    assert bob.delivered() == [b"Said(sender='alice', text='before')"]
    assert carol.received == [
        b"Said(sender='alice', text='before')"
        b"Left(alias='bob', reason='bye')"
        b"Said(sender='alice', text='after')"
    ]


def test_welcome_in_a_big_room_names_the_earliest_only(hub: Hub) -> None:
    """Past LISTED_NAMES members, a newcomer is shown the longest present and a count."""
    joined(hub, *(f"user{n:03}" for n in range(LISTED_NAMES + 5)))
    newcomer = RecordingMember(hub)
    hub.join(newcomer, "aaron")
    names = tuple(f"user{n:03}" for n in range(LISTED_NAMES))
    welcome = InRoom("#lobby", names, LISTED_NAMES + 6, None, "aaron")
    assert newcomer.delivered()[0] == repr(welcome).encode()


# Rooms.


def test_lines_stay_in_their_room(hub: Hub) -> None:
    """A line reaches the sender's room only; private messages cross rooms."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.move(carol, "#rust")
    hub.flush()
    for member in (alice, bob, carol):
        member.received.clear()
    hub.say(alice, "lobby only")
    hub.whisper(alice, "carol", "over here")
    assert bob.delivered() == [b"Said(sender='alice', text='lobby only')"]
    assert carol.delivered() == [b"Whispered(sender='alice', text='over here')"]


def test_move_announces_to_both_rooms(hub: Hub) -> None:
    """Moving tells the old room where the member went and the new room where they came from."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.move(carol, "#rust")
    hub.flush()
    for member in (alice, bob, carol):
        member.received.clear()
    hub.move(alice, "#Rust")
    assert bob.delivered() == [b"Departed(alias='alice', went_to='#rust')"]
    assert carol.delivered() == [
        b"Joined(alias='alice', room='#rust', present=2, came_from='#lobby')"
    ]
    assert alice.delivered() == [
        b"InRoom(room='#rust', names=('alice', 'carol'), present=2, topic=None, welcome=None)"
    ]
    assert hub.room_of(alice) == "#rust"


def test_move_to_current_room_is_an_error(hub: Hub) -> None:
    """Joining the room one is in changes nothing and says so."""
    (alice,) = joined(hub, "alice")
    hub.move(alice, "#LOBBY")
    assert alice.delivered() == [b"Error(text='You are already in #lobby.')"]


def test_move_to_invalid_room_is_refused(hub: Hub) -> None:
    """Room names follow the documented rule."""
    (alice,) = joined(hub, "alice")
    for name in ("rust", "#", "#two words", "#" + "x" * 25, "#\x1b[2J"):
        with pytest.raises(RoomRefused):
            hub.move(alice, name)
    assert hub.room_of(alice) == "#lobby"


def test_rooms_lists_rooms_in_use_and_drops_empty_ones(hub: Hub) -> None:
    """/rooms shows each room with members and its topic; emptied rooms vanish."""
    alice, bob = joined(hub, "alice", "bob")
    hub.move(bob, "#rust")
    hub.set_topic(bob, "crabs")
    hub.list_rooms(alice)
    assert alice.delivered()[-1] == (
        b"RoomList(rooms=(('#lobby', 1, None), ('#rust', 1, 'crabs')), more=0)"
    )
    hub.move(bob, "#go")
    hub.list_rooms(alice)
    assert alice.delivered()[-1] == (
        b"RoomList(rooms=(('#go', 1, None), ('#lobby', 1, None)), more=0)"
    )


def test_rooms_lists_the_busiest_rooms_and_counts_the_rest() -> None:
    """/rooms on a server of many rooms lists the LISTED_ROOMS busiest, in name order,
    and says how many more there are: a list of thousands of rooms with long topics
    would overflow the asker's send queue and cut them off."""
    hub = Hub(Clock())
    members = joined(hub, *(f"u{n}" for n in range(LISTED_ROOMS + 50)))
    for n, member in enumerate(members[1:]):
        hub.move(member, f"#r{n:03}")
    extra = joined(hub, "v1", "v2")
    for member in extra:
        hub.move(member, "#r248")  # now the busiest room, and last by name
    hub.list_rooms(members[0])
    answer = members[0].delivered()[-1].decode()
    names = re.findall(r"\('(#\w+)', \d+, None\)", answer)
    assert len(names) == LISTED_ROOMS and answer.endswith(", more=50)")
    assert names == sorted(names) and "('#r248', 3, None)" in answer


def test_topic_outlives_its_room(hub: Hub) -> None:
    """A topic set on a room is there again when the room is next opened."""
    (alice,) = joined(hub, "alice")
    hub.move(alice, "#rust")
    hub.set_topic(alice, "crabs \x1b[31m")
    hub.move(alice, "#lobby")
    hub.move(alice, "#rust")
    assert alice.delivered()[-1] == (
        b"InRoom(room='#rust', names=('alice',), present=1, topic='crabs', welcome=None)"
    )
    hub.set_topic(alice, None)
    hub.show_topic(alice)
    assert alice.delivered()[-2:] == [
        b"TopicChanged(alias='alice', topic=None)",
        b"Notice(text='#rust has no topic.')",
    ]


def test_who_in_room_and_everywhere(hub: Hub) -> None:
    """/who lists the member's room; /who * everyone online."""
    alice, bob, _ = joined(hub, "alice", "bob", "carol")
    hub.move(bob, "#rust")
    hub.roster(alice)
    hub.roster(alice, everyone=True)
    assert alice.delivered()[-2:] == [
        b"Roster(room='#lobby', names=('alice', 'carol'))",
        b"Roster(room=None, names=('alice', 'bob', 'carol'))",
    ]


def test_leave_is_announced_in_the_members_room_only(hub: Hub) -> None:
    """A departure is told to the room the member was in."""
    alice, bob, carol = joined(hub, "alice", "bob", "carol")
    hub.move(carol, "#rust")
    hub.flush()
    alice.received.clear()
    hub.leave(carol, "Quit")
    assert alice.delivered() == []
    hub.leave(bob, "Quit")
    assert alice.delivered() == [b"Left(alias='bob', reason='Quit')"]


# A front end that raises out of a delivery (issue 12: one burst silenced a room).


class FailingMember(RecordingMember):
    """A member whose front end raises on delivery once armed, as autobahn did past 64 KiB."""

    armed = True

    def send(self, data: bytes) -> None:
        if self.armed:
            raise ValueError("payload too big")
        super().send(data)


def failing(hub: Hub, alias: str) -> FailingMember:
    """A member that joined normally and fails from its next delivery on."""
    member = FailingMember(hub)
    member.armed = False
    hub.join(member, alias)
    hub.flush()
    member.armed = True
    return member


def test_a_member_whose_delivery_raises_is_cut_off_and_the_room_carries_on(hub: Hub) -> None:
    """One failing recipient is cut off; everyone else gets this turn and every later one."""
    alice, bob = joined(hub, "alice", "bob")
    web = failing(hub, "web")
    bob.received.clear()
    hub.say(alice, "one")
    hub.flush()
    assert web.disconnected == "delivery failed"
    assert hub.member_named("web") is None
    assert bob.text() == (
        "Said(sender='alice', text='one')\nLeft(alias='web', reason='Delivery failed')"
    )
    bob.received.clear()
    hub.say(alice, "two")
    assert bob.text() == "Said(sender='alice', text='two')"


def test_a_failing_member_in_one_room_does_not_stop_the_flush_of_the_others(hub: Hub) -> None:
    """Rooms flushed after one with a failing member still get their turn, now and later."""
    alice, bob, carol, dave = joined(hub, "alice", "bob", "carol", "dave")
    hub.move(carol, "#rust")
    hub.move(dave, "#rust")
    failing(hub, "web")
    for member in (alice, bob, carol, dave):
        member.received.clear()
    hub.say(alice, "lobby line")  # #lobby is flushed first, and holds the failing member
    hub.say(carol, "rust line")
    hub.flush()
    assert dave.text() == "Said(sender='carol', text='rust line')"
    dave.received.clear()
    hub.say(carol, "later")
    assert dave.text() == "Said(sender='carol', text='later')"
    assert "Said(sender='alice', text='lobby line')" in bob.text()


def test_a_private_answer_to_a_failing_member_cuts_it_off_without_raising(hub: Hub) -> None:
    """hub.tell to a member whose front end raises does not raise into the command."""
    (alice,) = joined(hub, "alice")
    web = FailingMember(hub)
    hub.join(web, "web")  # its own welcome already fails
    assert web.disconnected == "delivery failed"
    assert hub.member_named("web") is None
    assert "Left(alias='web', reason='Delivery failed')" in alice.text()


# Room history is read from the store when a room opens (issue 12: 20,000 junk rooms).


class SlowHistoryStore:
    """A store whose history reads answer only when the test says so."""

    def __init__(self) -> None:
        self.reads: dict[str, Deferred[list[HistoryEntry]]] = {}
        self.appended: list[HistoryEntry] = []

    def recent_history(
        self, room: str, limit: int, before: float | None = None
    ) -> Deferred[list[HistoryEntry]]:
        self.reads[room] = Deferred()
        return self.reads[room]

    def append_history(self, entry: HistoryEntry) -> None:
        self.appended.append(entry)

    def topic(self, room: str) -> Deferred[str | None]:
        return succeed(None)


def test_a_room_history_is_read_when_the_room_opens_and_replayed_once_read() -> None:
    """Only rooms in use hold history in memory; the first entrant gets it once it is read."""
    store = SlowHistoryStore()
    hub = Hub(Clock(), store=store)  # type: ignore[arg-type]
    alice, bob = joined(hub, "alice", "bob")
    assert set(store.reads) == {"#lobby"}
    store.reads["#lobby"].callback([])
    hub.move(alice, "#old")
    hub.move(bob, "#old")
    hub.say(bob, "said while reading")
    old = [HistoryEntry("#old", "say", "carol", f"line {n}", float(n)) for n in range(3)]
    store.reads["#old"].callback([*old, *store.appended])  # the store has the new line too
    assert "History(room='#old', entries=" in alice.text()
    replayed = alice.text()[alice.text().index("History(") :]
    assert "line 0" in replayed and "line 2" in replayed
    assert "said while reading" not in replayed  # alice saw it live
    assert [entry.text for entry in hub._recent(hub._room(alice), 100)] == [
        "line 0",
        "line 1",
        "line 2",
        "said while reading",
    ]


def test_a_line_heard_from_another_node_does_not_stand_for_a_room_history_not_read() -> None:
    """A line said elsewhere in a room whose history is not in memory is left to the store
    (its node writes it there): the room's history is still read when it opens here."""
    store = SlowHistoryStore()
    hub = Hub(Clock(), store=store)  # type: ignore[arg-type]
    (alice,) = joined(hub, "alice")
    store.reads["#lobby"].callback([])
    hub.remote_said("bob", "#far", "new", 5.0)
    hub.move(alice, "#far")
    old = HistoryEntry("#far", "say", "bob", "old", 1.0)
    new = HistoryEntry("#far", "say", "bob", "new", 5.0)
    store.reads["#far"].callback([old, new])
    assert [entry.text for entry in hub._recent(hub._room(alice), 100)] == ["old", "new"]
    assert "text='old'" in alice.text()


def test_a_room_whose_history_cannot_be_read_is_still_usable() -> None:
    """A store that fails the read costs the replay only; the room works."""
    store = SlowHistoryStore()
    hub = Hub(Clock(), store=store)  # type: ignore[arg-type]
    alice, bob = joined(hub, "alice", "bob")
    store.reads["#lobby"].errback(ConnectionError("store down"))
    hub.say(alice, "still here")
    assert bob.text() == "Said(sender='alice', text='still here')"


class TopicStore:
    """A store that knows one room's topic and answers when the test says so."""

    def __init__(self) -> None:
        self.reads: dict[str, Deferred[str | None]] = {}

    def topic(self, room: str) -> Deferred[str | None]:
        self.reads[room] = Deferred()
        return self.reads[room]

    def set_topic(self, room: str, topic: str | None, set_by: str) -> Deferred[None]:
        return succeed(None)


def test_a_room_topic_is_read_when_the_room_opens_and_told_once_read() -> None:
    """Topics of rooms not in use stay in the store; whoever is in the room learns it."""
    store = TopicStore()
    hub = Hub(Clock(), store=store, keep_history=False)  # type: ignore[arg-type]
    alice, bob = joined(hub, "alice", "bob")
    store.reads["#lobby"].callback(None)
    hub.move(alice, "#old")
    alice.received.clear()
    store.reads["#old"].callback("Old times")
    assert alice.text() == "Notice(text='Topic of #old: Old times')"
    hub.move(bob, "#old")
    assert "topic='Old times'" in bob.text()
    assert len(store.reads) == 2  # the second entrant needed no read


def test_a_topic_set_while_it_is_read_is_not_overwritten_by_the_store() -> None:
    """The store's answer is older than a topic set meanwhile."""
    store = TopicStore()
    hub = Hub(Clock(), store=store, keep_history=False)  # type: ignore[arg-type]
    (alice,) = joined(hub, "alice")
    hub.set_topic(alice, "New")
    store.reads["#lobby"].callback("Old")
    hub.show_topic(alice)
    assert alice.text().endswith("Notice(text='Topic of #lobby: New')")


def test_topics_kept_in_memory_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many rooms had a topic, memory keeps the last few; the rest are read again."""
    monkeypatch.setattr(hub_module, "TOPICS_KEPT", 10)
    hub = Hub(Clock())
    hub.load(SharedState({f"#r{n}": f"topic {n}" for n in range(100)}, {}, [], None))
    assert len(hub._topics) == 10


def operator_and(hub: Hub, *aliases: str) -> list[RecordingMember]:
    """``olivia`` as an operator, then members of ``aliases``, with nothing delivered yet."""
    members = joined(hub, "olivia", *aliases)
    moderation.make_operator(hub, members[0], "root")
    members[0].delivered().clear()
    return members


@pytest.mark.parametrize("target", ["olivia", "OLIVIA"])
def test_an_operator_cannot_ban_their_own_alias(hub: Hub, target: str) -> None:
    """/ban of one's own alias, in any case, is refused with a reason and bans nothing."""
    (olivia,) = operator_and(hub)
    moderation.ban(hub, olivia, target, None, "")
    assert olivia.delivered() == [b"Error(text='You cannot ban yourself.')"]
    assert list(hub.bans) == []
    assert olivia.disconnected is None


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ("999.1.1.1", "Not an IP address: 999.1.1.1"),
        ("10.0.0", "Not an IP address: 10.0.0"),
        ("10.0.0.0/33", "Not a CIDR block: 10.0.0.0/33"),
        ("2001:db8::zz", "Not an IP address: 2001:db8::zz"),
    ],
)
def test_a_mistyped_address_is_refused_not_taken_as_an_alias(
    hub: Hub, target: str, refusal: str
) -> None:
    """Something shaped like an IP address or CIDR block that is not one is refused, unbanned."""
    (olivia,) = operator_and(hub)
    moderation.ban(hub, olivia, target, None, "")
    example = " (e.g. 203.0.113.7, 203.0.113.0/24, 2001:db8::/32)."
    assert olivia.delivered() == [f"Error(text='{refusal}{example}')".encode()]
    assert list(hub.bans) == []


def test_aliases_with_digits_and_dots_are_still_banned_by_alias(hub: Hub) -> None:
    """An alias that merely has digits and dots in it (r2.d2) is an alias ban as before."""
    olivia, droid = operator_and(hub, "r2.d2")
    moderation.ban(hub, olivia, "r2.d2", None, "beeping")
    assert [(ban.mask, ban.kind) for ban in hub.bans] == [("r2.d2", "alias")]
    assert droid.disconnected is not None


def test_a_topic_over_the_limit_is_set_cut_and_the_setter_told(hub: Hub) -> None:
    """A topic past 300 characters is set cut to 300, and its setter is told so."""
    alice, bob = joined(hub, "alice", "bob")
    hub.set_topic(alice, "x" * 301)
    cut = "x" * hub_module.MAX_TOPIC_CHARS
    assert alice.delivered() == [
        f"TopicChanged(alias='alice', topic='{cut}')".encode(),
        b"Notice(text='Your topic was cut to 300 characters.')",
    ]
    assert bob.delivered() == [f"TopicChanged(alias='alice', topic='{cut}')".encode()]
    hub.set_topic(alice, "y" * 300)
    assert alice.delivered()[-1] == f"TopicChanged(alias='alice', topic='{'y' * 300}')".encode()


def test_clearing_a_topic_a_room_does_not_have_tells_the_clearer_alone(hub: Hub) -> None:
    """/topic - in a room without a topic is answered "has no topic", not announced
    to the room as a change."""
    alice, bob = joined(hub, "alice", "bob")
    assert hub.set_topic(alice, None) is False
    assert alice.delivered() == [b"Notice(text='#lobby has no topic.')"]
    assert bob.delivered() == []


def test_a_mute_for_no_duration_says_what_a_duration_is(hub: Hub) -> None:
    """/mute with a word that is no duration is answered with a sentence and examples."""
    olivia, _bob = operator_and(hub, "bob")
    run_command(hub, olivia, "/mute bob forever")
    assert olivia.delivered() == [
        b"Error(text='Not a duration: forever (use e.g. 90s, 10m, 2h, 1d).')"
    ]


def test_an_open_rooms_history_survives_other_rooms_being_opened() -> None:
    """#lobby's replay keeps its lines however many other rooms one user walks through."""
    store = SlowHistoryStore()
    hub = Hub(Clock(), store=store)  # type: ignore[arg-type]
    alice, mallory = joined(hub, "alice", "mallory")
    old = [HistoryEntry("#lobby", "say", "carol", f"line {n}", float(n)) for n in range(50)]
    store.reads["#lobby"].callback(old)
    for n in range(HISTORY_ROOMS_KEPT + 1):
        hub.move(mallory, f"#junk{n}")
        store.reads[f"#junk{n}"].callback([])
    hub.say(alice, "hello")
    shown = [entry.text for entry in hub._recent(hub._room(alice), 100)]
    assert shown[:2] == ["line 0", "line 1"]
    assert len(hub._history) <= HISTORY_ROOMS_KEPT + 1


def test_a_mute_given_at_an_ipv6_address_holds_for_its_64() -> None:
    """A muted IPv6 user back from another address of the same /64 is still muted."""
    hub = Hub(Clock())
    (olivia,) = joined(hub, "olivia")
    moderation.make_operator(hub, olivia, "root")
    troll = RecordingMember(hub)
    troll.host = "2001:db8:1:2::1"
    hub.join(troll, "troll")
    moderation.mute(hub, olivia, "troll", None)
    hub.leave(troll, "Quit")
    again = RecordingMember(hub)
    again.host = "2001:db8:1:2::2"
    hub.join(again, "troll2")
    hub.flush()
    olivia.received.clear()
    hub.say(again, "still here")
    assert "still here" not in olivia.text()


def test_a_topic_the_store_cannot_read_costs_one_warning_line() -> None:
    """A room opened while the store is down works without its topic; no traceback."""
    store = TopicStore()
    hub = Hub(Clock(), store=store, keep_history=False)  # type: ignore[arg-type]
    with capturedLogs() as events:
        (alice,) = joined(hub, "alice")
        store.reads["#lobby"].errback(ConnectionError("Redis is down"))
    [event] = [e for e in events if e["log_level"] >= LogLevel.warn]
    assert event["log_level"] == LogLevel.warn and "log_failure" not in event
    hub.set_topic(alice, "still works")
    hub.show_topic(alice)
    assert alice.text().endswith("Notice(text='Topic of #lobby: still works')")
