"""Property test of chatd.room: what each member gets of a turn's batch, against a
straightforward reference that walks the batch event by event for every member."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.events import Event, Mentioned, Said
from chatd.room import Presence, Room

SPEAKERS = ("ann", "bob", "cy")


def line_format(event: Event) -> bytes:
    return b"L " + repr(event).encode() + b"\n"


def json_format(event: Event) -> bytes:
    return b'{"j": "' + repr(event).encode() + b'"}\n'


class Member:
    """A member that records each write it is handed, and may raise instead."""

    peer = "192.0.2.1:50312"

    def __init__(self, number: int, encode: bool, raises: bool) -> None:
        self.alias = f"m{number}"
        self.encode = json_format if encode else line_format
        self.raises = raises
        self.received: list[bytes] = []

    def send(self, data: bytes) -> None:
        if self.raises:
            raise RuntimeError("a front end bug")
        self.received.append(data)


@dataclass
class Queued:
    event: Said
    exclude: Member | None
    speaker: str
    mentions: dict[Member, Mentioned] | None


def reference(member: Member, ignores: set[str], batch: list[Queued], start: int) -> bytes:
    """What ``member`` should get of ``batch`` from ``start``, event by event."""
    out = []
    for queued in batch[start:]:
        if queued.exclude is member or queued.speaker in ignores:
            continue
        copy = queued.mentions.get(member) if queued.mentions else None
        out.append(member.encode(copy if copy is not None else queued.event))
    return b"".join(out)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("say"),
            st.integers(0, 40),  # speaker member (modulo the members present)
            st.booleans(),  # whether the speaker is excluded (their own line)
            st.sampled_from(SPEAKERS),
            st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=3),
        ),
        st.tuples(st.just("enter"), st.booleans(), st.sets(st.sampled_from(SPEAKERS))),
        st.tuples(st.just("catch_up"), st.integers(0, 40)),
        st.tuples(st.just("exit"), st.integers(0, 40)),
        st.tuples(st.just("flush")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    initial=st.lists(st.tuples(st.booleans(), st.sets(st.sampled_from(SPEAKERS))), max_size=6),
    steps=ops,
    raising=st.integers(0, 40),
)
def test_each_member_gets_exactly_what_a_walk_of_the_batch_gives_it(
    initial: list[tuple[bool, set[str]]], steps: list[tuple], raising: int
) -> None:
    """Every write to every member equals the reference selection of the batch: in
    order, without its own lines or the ignored, with its mentioned copies, from where
    it arrived or was caught up, and one member's raising delivery costs only it."""
    room = Room("lobby")
    expected: dict[Member, list[bytes]] = {}
    cursor: dict[Member, int] = {}
    batch: list[Queued] = []
    made: list[Member] = []

    def enter(json: bool, ignores: set[str]) -> None:
        member = Member(len(made), json, raises=len(made) == raising)
        made.append(member)
        presence = Presence(room, 0.0, None, True, member.alias)
        presence.ignores = set(ignores)
        room.enter(member, presence)
        expected[member] = []
        cursor[member] = len(batch)

    def due(member: Member) -> None:
        data = reference(member, room.members[member].ignores, batch, cursor[member])
        cursor[member] = len(batch)
        if data and not member.raises:
            expected[member].append(data)

    def present(index: int) -> Member | None:
        members = list(room.members)
        return members[index % len(members)] if members else None

    for json, ignores in initial:
        enter(json, ignores)
    for step in steps:
        if step[0] == "say":
            _, who, excluded, speaker, mentioned = step
            member = present(who)
            event = Said(speaker, f"line {len(batch)}")
            mentions = {}
            for whom, bell in mentioned:
                target = present(whom)
                if target is not None:
                    mentions[target] = Mentioned(event, bell)
            queued = Queued(event, member if excluded else None, speaker, mentions or None)
            batch.append(queued)
            room.queue(queued.event, queued.exclude, queued.speaker, queued.mentions)
        elif step[0] == "enter":
            enter(step[1], step[2])
        elif step[0] in ("catch_up", "exit"):
            member = present(step[1])
            if member is None:
                continue
            due(member)
            if step[0] == "exit":
                room.exit(member)
            else:
                room.catch_up(member)
        else:
            for member in room.members:
                due(member)
            room.flush()
            batch.clear()
            for member in cursor:
                cursor[member] = 0
    for member in room.members:
        due(member)
    room.flush()

    for member in made:
        assert member.received == expected[member]
    assert all(member.raises for member in room.failed)
