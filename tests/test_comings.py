"""Tests for the summing up of arrivals and departures in big rooms (chatd.events.Comings)."""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface import implementer

from chatd.events import Comings, Departed, Joined, Left, Renamed
from chatd.hub import COMINGS_SECONDS, DEFAULT_QUIET_JOINS_ABOVE, LISTED_NAMES, Hub, Nowhere
from chatd.interfaces import IMember
from chatd.room import Room

QUIET_ABOVE = 3


EVENTS: list[object] = []


def encode_by_number(event: object) -> bytes:
    """Encode an event as its number in EVENTS, so that members can get it back."""
    EVENTS.append(event)
    return b"%d," % (len(EVENTS) - 1)


@implementer(IMember)
class EventMember:
    """A member that keeps the events it was sent, decoded."""

    encode = staticmethod(encode_by_number)
    host = "192.0.2.1"
    peer = "192.0.2.1:50312"

    def __init__(self) -> None:
        self.alias: str | None = None
        self.events: list[object] = []
        self.disconnected: str | None = None

    def send(self, data: bytes) -> None:
        self.events.extend(EVENTS[int(n)] for n in data.decode().split(",") if n)

    def disconnect(self, reason: str) -> None:
        self.disconnected = reason


def make_hub(quiet_joins_above: int = QUIET_ABOVE) -> Hub:
    return Hub(Clock(), quiet_joins_above=quiet_joins_above)


def clock(hub: Hub) -> Clock:
    assert isinstance(hub.clock, Clock)
    return hub.clock


def join(hub: Hub, *aliases: str) -> list[EventMember]:
    members = []
    for alias in aliases:
        member = EventMember()
        hub.join(member, alias)
        members.append(member)
    return members


def heard(hub: Hub, member: EventMember, seconds: float = 0) -> list[object]:
    """The comings and goings ``member`` heard by ``seconds`` from now; forgets them."""
    clock(hub).advance(seconds)
    kinds = (Joined, Left, Departed, Comings)
    got: list[object] = [e for e in member.events if isinstance(e, kinds)]
    member.events.clear()
    return got


def pending_calls(hub: Hub) -> int:
    return len([call for call in clock(hub).getDelayedCalls() if call.active()])


def test_small_rooms_announce_each_arrival_and_departure() -> None:
    """Up to the threshold, each arrival and departure is its own event, as ever."""
    hub = make_hub()
    alice, _, carol = join(hub, "alice", "bob", "carol")
    assert heard(hub, alice) == [
        Joined("bob", "#lobby", 2, None),
        Joined("carol", "#lobby", 3, None),
    ]
    hub.leave(carol, "Quit")
    assert heard(hub, alice) == [Left("carol", "Quit")]
    assert pending_calls(hub) == 0


def test_arrivals_past_the_threshold_are_summed_up_once_per_interval() -> None:
    """Once the room is over the threshold, arrivals wait for one summary, then the next."""
    hub = make_hub()
    alice, *_ = join(hub, "alice", "bob", "carol")
    heard(hub, alice)
    join(hub, "dave", "erin")
    assert heard(hub, alice, COMINGS_SECONDS - 0.1) == []
    assert pending_calls(hub) == 1  # one timer for the room, not one per arrival
    assert heard(hub, alice, 0.1) == [
        Comings("#lobby", 2, 0, ("dave", "erin"), (), 5, COMINGS_SECONDS)
    ]
    assert pending_calls(hub) == 0
    join(hub, "frank")
    assert heard(hub, alice, COMINGS_SECONDS) == [
        Comings("#lobby", 1, 0, ("frank",), (), 6, COMINGS_SECONDS)
    ]


def test_departures_from_a_big_room_are_summed_up() -> None:
    """Leaving and moving away from a room over the threshold are counted as gone."""
    hub = make_hub()
    alice, _, _, dave, erin = join(hub, "alice", "bob", "carol", "dave", "erin")
    heard(hub, alice, COMINGS_SECONDS)
    hub.leave(erin, "Quit")  # 5 before: summed up
    hub.move(dave, "#side")  # 4 before: summed up
    assert heard(hub, alice, COMINGS_SECONDS) == [
        Comings("#lobby", 0, 2, (), ("erin", "dave"), 3, COMINGS_SECONDS)
    ]


def test_someone_who_comes_and_goes_in_one_interval_is_in_neither_count() -> None:
    """Arriving and leaving (or leaving and coming back) within an interval is no news."""
    hub = make_hub()
    alice, _, _, dave = join(hub, "alice", "bob", "carol", "dave")
    heard(hub, alice, COMINGS_SECONDS)
    erin, _ = join(hub, "erin", "frank")
    hub.leave(erin, "Quit")
    hub.leave(dave, "Quit")
    join(hub, "Dave")
    assert heard(hub, alice, COMINGS_SECONDS) == [
        Comings("#lobby", 1, 0, ("frank",), (), 5, COMINGS_SECONDS)
    ]


def test_crossing_the_threshold_downwards_announces_what_is_pending_first() -> None:
    """When the room shrinks to the threshold, the pending summary comes before the next
    one-by-one notice, so the order of events is kept, and no timer is left behind."""
    hub = make_hub()
    alice, bob, carol, dave = join(hub, "alice", "bob", "carol", "dave")
    hub.leave(dave, "Quit")  # 4 before: summed up (dave came in the same interval)
    hub.leave(carol, "Quit")  # 3 before: one by one
    assert heard(hub, bob) == [Joined("carol", "#lobby", 3, None), Left("carol", "Quit")]
    assert pending_calls(hub) == 0
    heard(hub, alice)
    carol, dave = join(hub, "carol", "dave")  # 3 then 4: dave summed up
    hub.leave(bob, "Quit")  # 4 before: summed up
    hub.leave(carol, "Quit")  # 3 before: pending first, then one by one
    assert heard(hub, alice) == [
        Joined("carol", "#lobby", 3, None),
        Comings("#lobby", 1, 1, ("dave",), ("bob",), 2, COMINGS_SECONDS),
        Left("carol", "Quit"),
    ]
    assert pending_calls(hub) == 0


def test_a_newcomer_is_not_told_the_summary_flushed_by_their_own_arrival() -> None:
    """The summary announced when a small room's next arrival is one by one skips them."""
    hub = make_hub()
    alice, _, carol, dave = join(hub, "alice", "bob", "carol", "dave")
    heard(hub, alice, COMINGS_SECONDS)
    hub.leave(dave, "Quit")  # summed up
    hub.leave(carol, "Quit")  # one by one: the summary goes out
    heard(hub, alice)
    (erin,) = join(hub, "erin")
    assert [e for e in heard(hub, erin, COMINGS_SECONDS)] == []
    assert heard(hub, alice) == [Joined("erin", "#lobby", 3, None)]


def test_a_renamed_newcomer_is_summed_up_by_their_new_name() -> None:
    """A member renamed before the room heard of them is listed as renamed, and only
    they see the rename; anyone else's rename is told to the room."""
    hub = make_hub()
    alice, bob, _ = join(hub, "alice", "bob", "carol")
    (dave,) = join(hub, "dave")
    heard(hub, alice)
    hub.rename(dave, "david")
    hub.rename(bob, "robert")
    clock(hub).advance(0)
    assert Renamed("dave", "david") in dave.events
    assert [e for e in alice.events if isinstance(e, Renamed)] == [Renamed("bob", "robert")]
    assert heard(hub, alice, COMINGS_SECONDS) == [
        Comings("#lobby", 1, 0, ("david",), (), 4, COMINGS_SECONDS)
    ]


def test_a_move_into_a_big_room_is_summed_up_there() -> None:
    """Moving into a room over the threshold counts as an arrival there, and as a
    departure from the room left if that one is big too."""
    hub = make_hub()
    lobby = join(hub, "a1", "a2", "a3", "a4", "a5")
    for member in lobby[1:4]:
        hub.move(member, "#side")
    heard(hub, lobby[0], COMINGS_SECONDS)
    side_first = lobby[1]
    heard(hub, side_first)
    hub.move(lobby[4], "#side")
    assert heard(hub, side_first, COMINGS_SECONDS) == [
        Comings("#side", 1, 0, ("a5",), (), 4, COMINGS_SECONDS)
    ]
    assert heard(hub, lobby[0]) == [Departed("a5", "#side")]


def test_a_room_that_empties_with_a_summary_pending_closes_cleanly() -> None:
    """A room closing drops its pending summary and its timer: nothing fires later."""
    hub = make_hub()
    members = join(hub, "a1", "a2", "a3", "a4", "a5")
    for member in members:
        hub.move(member, "#side")
    for member in members:
        hub.leave(member, "Quit")
    assert hub.room_count == 1
    clock(hub).advance(COMINGS_SECONDS)
    assert pending_calls(hub) == 0


def test_an_empty_default_room_announces_nothing() -> None:
    """The default room stays open when empty; its pending summary goes to nobody."""
    hub = make_hub()
    members = join(hub, "a1", "a2", "a3", "a4", "a5")
    for member in reversed(members):
        hub.leave(member, "Quit")
    clock(hub).advance(COMINGS_SECONDS)
    assert pending_calls(hub) == 0
    (late,) = join(hub, "late")
    assert heard(hub, late, COMINGS_SECONDS) == []


def test_closing_the_hub_cancels_pending_summaries() -> None:
    """Shutting down leaves no summary timer running and announces no comings."""
    hub = make_hub()
    alice, *_ = join(hub, "alice", "bob", "carol", "dave", "erin")
    hub.close("Server shutting down")
    assert pending_calls(hub) == 0
    assert all(not isinstance(e, Comings) for e in alice.events)


def test_zero_never_sums_up() -> None:
    """With quiet_joins_above 0 every arrival is announced, however big the room."""
    hub = make_hub(0)
    members = join(hub, *[f"u{n}" for n in range(DEFAULT_QUIET_JOINS_ABOVE + 5)])
    joins = [e for e in heard(hub, members[0]) if isinstance(e, Joined)]
    assert len(joins) == DEFAULT_QUIET_JOINS_ABOVE + 4
    assert pending_calls(hub) == 0


def test_the_default_sums_up_above_the_default_threshold() -> None:
    """A hub made without the option sums up in rooms over DEFAULT_QUIET_JOINS_ABOVE."""
    hub = Hub(Clock())
    first, *_ = join(hub, *[f"u{n}" for n in range(DEFAULT_QUIET_JOINS_ABOVE + 2)])
    got = heard(hub, first, COMINGS_SECONDS)
    assert len([e for e in got if isinstance(e, Joined)]) == DEFAULT_QUIET_JOINS_ABOVE - 1
    assert got[-1] == Comings(
        "#lobby", 2, 0, ("u100", "u101"), (), DEFAULT_QUIET_JOINS_ABOVE + 2, COMINGS_SECONDS
    )


def test_a_crowd_lists_the_first_names_only() -> None:
    """A summary of many names lists the first LISTED_NAMES and counts them all."""
    hub = make_hub()
    first, *_ = join(hub, "a", "b", "c")
    heard(hub, first)
    names = [f"n{n}" for n in range(LISTED_NAMES + 10)]
    join(hub, *names)
    (summary,) = heard(hub, first, COMINGS_SECONDS)
    assert isinstance(summary, Comings)
    assert summary.joined == LISTED_NAMES + 10
    assert summary.joined_names == tuple(names[:LISTED_NAMES])


class Elsewhere(Nowhere):
    """A directory with ``count`` members of room #lobby on other nodes."""

    def __init__(self, count: int) -> None:
        self.count = count

    def count_in(self, room: str) -> int:
        return self.count if room == "#lobby" else 0


def test_remote_comings_are_summed_up_like_local_ones() -> None:
    """Arrivals, departures, moves and renames on other nodes go into the same summary."""
    directory = Elsewhere(3)
    hub = Hub(Clock(), quiet_joins_above=QUIET_ABOVE, directory=directory)
    (alice,) = join(hub, "alice")  # 4 present: summed up already
    heard(hub, alice, COMINGS_SECONDS)
    hub.remote_joined("rob", "#lobby")
    hub.remote_renamed("rob", "robert", "#lobby")
    hub.remote_moved("sam", "#side", "#lobby")
    hub.remote_left("tom", "#lobby", "Quit")
    hub.remote_moved("uma", "#lobby", "#side")
    clock(hub).advance(0)
    assert not [e for e in alice.events if isinstance(e, Renamed)]
    assert heard(hub, alice, COMINGS_SECONDS) == [
        Comings("#lobby", 2, 2, ("robert", "sam"), ("tom", "uma"), 4, COMINGS_SECONDS)
    ]
    directory.count = 1  # a room of 2: one by one again
    hub.remote_joined("vic", "#lobby")
    assert heard(hub, alice) == [Joined("vic", "#lobby", 2, None)]


def test_room_pending_state_starts_empty() -> None:
    """A new room has nothing pending to sum up."""
    assert Room("#x").comers is None
