"""Messages that wait for you (chatd.offline): private messages kept for a registered
alias offline, and the lines that mentioned it while away, over the line protocol
with a real SQLite store that answers at once (and a task.Clock)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.logger import LogLevel, capturedLogs

from chatd import mentions as mentions_module
from chatd import moderation
from chatd.events import Mentions, OfflineMessage
from chatd.fronts.jsonformat import as_json
from chatd.fronts.lineformat import encode
from chatd.hub import Hub
from chatd.model import HistoryEntry, WaitingMessage
from chatd.offline import MESSAGES_LEFT_PER_HOUR, OfflineLimits
from chatd.sharedstate import load_shared_state
from chatd.stores.base import StoreError
from chatd.stores.sqlite import SQLiteStore
from tests.storetesting import texts
from tests.test_accounts import AccountServer, register
from tests.test_protocol import Client

START = 1_800_000_000.0  # 2027-01-15 08:00:00Z
STAMP = "[2027-01-15 08:00:00Z]"


class OfflineServer(AccountServer):
    """An AccountServer whose hub keeps what waits within ``limits``."""

    def __init__(self, path: Path, limits: OfflineLimits | None = None) -> None:
        self.limits = limits or OfflineLimits()
        super().__init__(path)
        self.clock.advance(START)

    def make_hub(self, history_replay: int) -> Hub:
        hub = super().make_hub(history_replay)
        hub.offline.limits = self.limits
        hub.history_replay = 0  # the lines after a welcome are what waited, alone
        return hub

    def join_from(self, alias: str, host: str) -> Client:
        """Connect from ``host`` and choose ``alias`` (others connect from one address)."""
        client = Client(self.factory, IPv4Address("TCP", host, 40000))
        client.type(f"{alias}\n")
        client.lines()
        return client

    def offline(self, alias: str) -> None:
        """Take ``alias`` offline, as if its connection was lost."""
        member = self.hub.member_named(alias)
        assert member is not None
        self.hub.leave(member, "Connection lost")

    def registered_offline(self, alias: str, password: str = "correct-horse") -> None:
        """Register ``alias`` (straight into the store: no quota of registrations), offline."""
        assert self.store.create_account(alias, f"fake${password}").result
        assert self.hub.accounts is not None
        self.hub.accounts.note_registered(alias)
        self.login(alias, password)
        self.offline(alias)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OfflineServer]:
    server = OfflineServer(tmp_path / "chatd.sqlite3")
    yield server
    server.store.stop()


def after_welcome(client: Client) -> list[str]:
    """The lines a client was sent after the welcome of its login."""
    lines = client.lines()
    welcome = next(n for n, line in enumerate(lines) if line.startswith("*** Welcome, "))
    return [line for line in lines[welcome + 1 :] if line != "*** Type /help for commands."]


# Private messages.


def test_a_message_waits_and_is_delivered_at_login_with_its_time(server: OfflineServer) -> None:
    """A /msg to a registered alias offline is kept, the sender told, and the owner gets
    it at their next login, stamped with when it was sent, once."""
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob see you at noon\n")
    assert alice.lines() == [
        "*** bob is offline: your message will wait for their next login (kept up to 30d00h)."
    ]
    server.clock.advance(3600)
    bob = server.login("bob", "correct-horse")
    assert after_welcome(bob) == [
        "*** 1 message waited for you:",
        f"{STAMP} *alice* see you at noon",
    ]
    server.offline("bob")
    again = server.login("bob", "correct-horse")
    assert after_welcome(again) == []


def test_an_unregistered_alias_offline_is_still_no_such_user(server: OfflineServer) -> None:
    """Nothing is kept for an alias nobody registered."""
    (alice,) = server.join("alice")
    alice.type("/msg nobody hello\n")
    assert alice.lines() == ["!!! No such user: nobody"]


def test_nothing_is_kept_when_turned_off(tmp_path: Path) -> None:
    """With --offline-messages 0 a registered alias offline is no such user, as before."""
    server = OfflineServer(tmp_path / "db", OfflineLimits(messages=0))
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob hello\n")
    assert alice.lines() == ["!!! No such user: bob"]
    server.store.stop()


def test_a_registered_alias_renamed_away_gets_it_at_its_next_login(
    server: OfflineServer,
) -> None:
    """Its owner online under another alias, a registered alias is offline: the message
    waits for a login as that alias."""
    bob = register(server, "bob", "correct-horse")
    bob.type("/nick robert\n")
    (alice,) = server.join("alice")
    alice.type("/msg bob hello\n")
    assert alice.lines()[0].startswith("*** bob is offline")
    server.offline("robert")
    assert after_welcome(server.login("bob", "correct-horse")) == [
        "*** 1 message waited for you:",
        f"{STAMP} *alice* hello",
    ]


def test_an_online_recipient_gets_it_at_once(server: OfflineServer) -> None:
    """A registered alias online is whispered to as ever, nothing kept."""
    register(server, "bob", "correct-horse")
    (alice,) = server.join("alice")
    alice.type("/msg bob now\n")
    assert alice.lines() == ["-> *bob* now"]
    assert server.store.waiting_messages("bob", 0).result == []


def test_a_full_box_and_a_senders_share_are_refused_aloud(tmp_path: Path) -> None:
    """Past a sender's share, or a full box, the sender is told it was not kept."""
    server = OfflineServer(tmp_path / "db", OfflineLimits(messages=5))
    server.registered_offline("bob")
    alice, carol, dave, erin = (
        server.join_from(alias, f"192.0.2.{n}")
        for n, alias in enumerate(("alice", "carol", "dave", "erin"))
    )
    alice.type("/msg bob one\n")
    alice.lines()
    alice.type("/msg bob two\n")
    assert alice.lines() == [
        "!!! You have 1 messages waiting for bob already; this one was not kept."
    ]
    for sender in (carol, dave, erin):
        sender.type("/msg bob hi\n")
    frank = server.join_from("frank", "192.0.2.10")
    frank.type("/msg bob hi\n")
    frank.lines()
    gina = server.join_from("gina", "192.0.2.11")
    gina.type("/msg bob hi\n")
    assert gina.lines() == ["!!! bob has too many messages waiting; yours was not kept."]
    assert len(server.store.waiting_messages("bob", 0).result) == 5
    server.store.stop()


def test_a_rename_does_not_open_a_new_share(tmp_path: Path) -> None:
    """A sender's share of a box counts who they are (their address), not the alias
    they use: a /nick, or another connection, does not let them leave more."""
    server = OfflineServer(tmp_path / "db", OfflineLimits(messages=5))
    server.registered_offline("bob")
    alice, other = server.join("alice", "mallory")
    alice.type("/msg bob one\n")
    alice.lines()
    alice.type("/nick alice2\n")
    alice.lines()
    other.lines()
    alice.type("/msg bob two\n")
    other.type("/msg bob three\n")
    refused = "!!! You have 1 messages waiting for bob already; this one was not kept."
    assert (alice.lines(), other.lines()) == ([refused], [refused])
    assert [m.text for m in server.store.waiting_messages("bob", 0).result] == ["one"]
    server.store.stop()


def test_messages_past_the_age_are_not_delivered(tmp_path: Path) -> None:
    """A message older than --offline-max-age is not handed over."""
    server = OfflineServer(tmp_path / "db", OfflineLimits(max_age_seconds=86400))
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob old news\n")
    assert alice.lines() == [
        "*** bob is offline: your message will wait for their next login (kept up to 1d00h)."
    ]
    server.clock.advance(86401)
    assert after_welcome(server.login("bob", "correct-horse")) == []
    server.store.stop()


def test_someone_ignoring_the_sender_does_not_get_it(server: OfflineServer) -> None:
    """The recipient's saved ignores hold for what waited: the ignored sender's
    messages are dropped, the others delivered."""
    bob = register(server, "bob", "correct-horse")
    (alice, carol) = server.join("alice", "carol")
    bob.type("/ignore alice\n")
    bob.lines()
    server.offline("bob")
    alice.type("/msg bob you ignore me\n")
    carol.type("/msg bob hello\n")
    assert after_welcome(server.login("bob", "correct-horse")) == [
        "*** 1 message waited for you:",
        f"{STAMP} *carol* hello",
    ]
    assert server.store.waiting_messages("bob", 0).result == []


def test_a_muted_sender_cannot_leave_messages(server: OfflineServer) -> None:
    """A muted member's /msg is refused as their lines are, nothing kept."""
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    moderation.mute_heard(server.hub, "alice", None)
    alice.lines()
    alice.type("/msg bob let me speak\n")
    assert alice.lines() == ["!!! You are muted: nobody sees your lines."]
    assert server.store.waiting_messages("bob", 0).result == []


def test_nothing_is_kept_for_a_banned_alias(server: OfflineServer) -> None:
    """A registered alias that is banned gets no messages kept."""
    server.registered_offline("bob")
    (mod,) = server.join("keeper")
    mod.type("/oper root operpass\n")
    mod.type("/ban bob spam\n")
    assert mod.lines()[-1] == "*** Banned alias bob for good."
    (alice,) = server.join("alice")
    alice.type("/msg bob hi\n")
    assert alice.lines() == ["!!! bob is banned: your message was not kept."]


def test_one_sender_can_leave_only_so_many_messages_an_hour(tmp_path: Path) -> None:
    """A sender messaging many offline accounts is stopped after the hourly quota."""
    server = OfflineServer(tmp_path / "db")
    names = [f"user{n}" for n in range(MESSAGES_LEFT_PER_HOUR + 1)]
    for name in names:
        server.registered_offline(name)
    (alice,) = server.join("alice")
    for name in names[:-1]:
        alice.type(f"/msg {name} buy now\n")
    alice.lines()
    alice.type(f"/msg {names[-1]} buy now\n")
    assert alice.lines() == [
        f"!!! You left {MESSAGES_LEFT_PER_HOUR} messages for people offline in the last hour;"
        " this one was not kept (try again in 60 min)."
    ]
    server.clock.advance(3600)
    alice.type(f"/msg {names[-1]} later\n")
    assert alice.lines()[0].startswith("*** user30 is offline")
    server.store.stop()


def test_control_characters_are_cleaned_before_keeping(server: OfflineServer) -> None:
    """Escape sequences never reach the box, nor the recipient."""
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob \x1b[2J\x1b]0;pwned\x07hi\n")
    alice.lines()
    assert [m.text for m in server.store.waiting_messages("bob", 0).result] == ["hi"]


def test_an_overlong_line_never_reaches_the_box(server: OfflineServer) -> None:
    """A /msg over the line limit is refused whole, so a kept message is bounded as a line is."""
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob " + "x" * 5000 + "\n")
    assert alice.lines()[0].startswith("!!! Line too long")
    assert server.store.waiting_messages("bob", 0).result == []


def test_the_store_down_is_told_to_the_sender_without_a_traceback(server: OfflineServer) -> None:
    """When the store cannot keep it, the sender is told it was not sent; one log line."""
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    server.store.stop()
    with capturedLogs() as events:
        alice.type("/msg bob are you there\n")
    assert alice.lines() == ["!!! Your message for bob cannot be kept now; it was not sent."]
    assert not [event for event in events if "log_failure" in event]
    assert [event["log_level"] for event in events if "bob" in str(event)] == [LogLevel.warn]


def test_messages_survive_a_restart(tmp_path: Path) -> None:
    """A message kept before the daemon stopped is delivered after it starts again."""
    path = tmp_path / "db"
    first = OfflineServer(path)
    first.registered_offline("bob")
    (alice,) = first.join("alice")
    alice.type("/msg bob across restarts\n")
    first.store.stop()
    second = OfflineServer(path)
    assert after_welcome(second.login("bob", "correct-horse")) == [
        "*** 1 message waited for you:",
        f"{STAMP} *alice* across restarts",
    ]
    second.store.stop()


class HeldStore(SQLiteStore):
    """A store whose reads of waiting messages wait until the test releases them."""

    held: list[tuple[Deferred[list[WaitingMessage]], list[WaitingMessage]]]

    def waiting_messages(self, recipient: str, not_before: float) -> Deferred[list[Any]]:
        read = super().waiting_messages(recipient, not_before)
        answer: Deferred[list[WaitingMessage]] = Deferred()
        read.addCallback(lambda messages: self.held.append((answer, messages)))
        return answer

    def release(self) -> None:
        held, self.held = self.held, []
        for deferred, messages in held:
            deferred.callback(messages)


def test_a_login_while_messages_are_read_gets_them_once(tmp_path: Path) -> None:
    """Logging in again while the first login's messages are being read delivers them
    once, to the session that is online when the store answers."""
    server = OfflineServer(tmp_path / "db")
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob just once\n")
    server.store.__class__ = HeldStore
    server.store.held = []  # type: ignore[attr-defined]
    first = server.login("bob", "correct-horse")
    second = server.login("bob", "correct-horse")
    server.store.release()  # type: ignore[attr-defined]
    assert "just once" not in "\n".join(first.lines())
    assert after_welcome(second) == [
        "*** 1 message waited for you:",
        f"{STAMP} *alice* just once",
    ]
    server.store.stop()


def test_a_login_while_messages_are_read_is_told_of_its_mentions(tmp_path: Path) -> None:
    """The session that gets the messages read for an earlier login is also told how
    many lines mentioned it while away."""
    server = OfflineServer(tmp_path / "db")
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("bob, are you there?\n")
    alice.type("/msg bob call me\n")
    server.store.__class__ = HeldStore
    server.store.held = []  # type: ignore[attr-defined]
    server.login("bob", "correct-horse")
    second = server.login("bob", "correct-horse")
    server.store.release()  # type: ignore[attr-defined]
    assert after_welcome(second) == [
        "*** 1 message waited for you:",
        f"{STAMP} *alice* call me",
        "*** 1 line mentioned you while you were away: /mentions shows them.",
    ]
    server.store.stop()


def test_a_recipient_cut_off_while_messages_are_handed_over_keeps_them(tmp_path: Path) -> None:
    """A login whose send queue overflows with the messages that waited is cut off and
    its messages stay for the next login: none is deleted unread."""
    server = OfflineServer(tmp_path / "db", OfflineLimits(messages=20))
    server.registered_offline("bob")
    for n in range(5):
        sender = server.join_from(f"sender{n}", f"192.0.2.{n}")
        for m in range(4):
            sender.type(f"/msg bob {n}.{m} " + "x" * 300 + "\n")
    server.sessions.config = replace(server.sessions.config, sendq_bytes=3000)
    bob = server.connect()
    bob.lines()
    bob.transport.producer.pauseProducing()
    bob.type("bob\ncorrect-horse\n")
    assert bob.transport.disconnected
    assert len(server.store.waiting_messages("bob", 0).result) == 20
    server.store.stop()


class UnreadableStore(SQLiteStore):
    """A store that keeps what waits but cannot read it back (its disk failing)."""

    def waiting_messages(self, recipient: str, not_before: float) -> Deferred[list[Any]]:
        return fail(StoreError("disk I/O error"))

    def mentions_of(self, account: str, not_before: float) -> Deferred[list[Any]]:
        return fail(StoreError("disk I/O error"))


def test_a_login_while_the_store_cannot_read_keeps_everything(tmp_path: Path) -> None:
    """A login whose messages cannot be read is told they wait for the next one, nothing
    is lost, /mentions says it cannot read them, and the log has no traceback."""
    server = OfflineServer(tmp_path / "db")
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob still there?\n")
    alice.type("bob?\n")
    server.store.__class__ = UnreadableStore
    with capturedLogs() as events:
        bob = server.login("bob", "correct-horse")
        bob.type("/mentions\n")
    assert after_welcome(bob) == [
        "!!! Messages left for you cannot be read now; they wait for your next login.",
        "!!! Your mentions cannot be read now; try again later.",
    ]
    assert not [event for event in events if "log_failure" in event]
    server.store.__class__ = SQLiteStore
    assert [m.text for m in server.store.waiting_messages("bob", 0).result] == ["still there?"]
    assert texts(server.store.mentions_of("bob", 0).result) == ["bob?"]
    server.store.stop()


def test_the_recipient_gone_before_the_read_answers_keeps_them(tmp_path: Path) -> None:
    """Messages read after their recipient left again stay for the next login."""
    server = OfflineServer(tmp_path / "db")
    server.registered_offline("bob")
    (alice,) = server.join("alice")
    alice.type("/msg bob later\n")
    server.store.__class__ = HeldStore
    server.store.held = []  # type: ignore[attr-defined]
    server.login("bob", "correct-horse")
    server.offline("bob")
    server.store.release()  # type: ignore[attr-defined]
    server.store.__class__ = SQLiteStore
    assert [m.text for m in server.store.waiting_messages("bob", 0).result] == ["later"]
    server.store.stop()


# Mentions.


def test_mentions_while_offline_are_counted_at_login_and_listed(server: OfflineServer) -> None:
    """Lines that mention a registered alias in the room it left are counted at its
    login and listed by /mentions; other rooms' lines and other words are not."""
    server.registered_offline("bob")
    alice, carol = server.join("alice", "carol")
    alice.type("bob: lunch?\n")
    alice.type("bobby is not bob's\n")
    alice.type("nothing here\n")
    carol.type("/join #other\n")
    carol.type("bob, here?\n")
    server.clock.advance(60)
    bob = server.login("bob", "correct-horse")
    assert after_welcome(bob) == [
        "*** 2 lines mentioned you while you were away: /mentions shows them."
    ]
    bob.type("/mentions\n")
    assert bob.lines() == [
        "*** Lines that mentioned you while you were away (2):",
        f"#lobby {STAMP} <alice> bob: lunch?",
        f"#lobby {STAMP} <alice> bobby is not bob's",
        "*** End of mentions ('/mentions clear' forgets them).",
    ]
    bob.type("/mentions clear\n")
    assert bob.lines() == ["*** Your mentions are forgotten."]
    bob.type("/mentions\n")
    assert bob.lines() == ["*** No lines mentioned you while you were away."]


def test_an_away_member_is_told_on_coming_back(server: OfflineServer) -> None:
    """A registered member marked /away is told on coming back how many lines in their
    room mentioned them meanwhile."""
    bob = register(server, "bob", "correct-horse")
    (alice,) = server.join("alice")
    bob.type("/away lunch\n")
    alice.type("@bob are you back?\n")
    alice.type("/me waves at Bob\n")
    bob.lines()
    bob.type("/away\n")
    assert bob.lines() == [
        "*** You are no longer marked as away.",
        "*** 2 lines mentioned you while you were away: /mentions shows them.",
    ]
    alice.type("bob, welcome back\n")
    bob.lines()
    bob.type("/mentions\n")
    assert bob.lines()[:3] == [
        "*** Lines that mentioned you while you were away (2):",
        f"#lobby {STAMP} <alice> @bob are you back?",
        f"#lobby {STAMP} * alice waves at Bob",
    ]


def test_mentions_while_away_then_offline_are_counted_at_login(server: OfflineServer) -> None:
    """A member marked away who then goes offline is told at login of the lines since
    they went away, not only since they went offline."""
    bob = register(server, "bob", "correct-horse")
    (alice,) = server.join("alice")
    bob.type("/away lunch\n")
    alice.type("bob?\n")
    server.clock.advance(60)
    server.offline("bob")
    alice.type("bob??\n")
    assert after_welcome(server.login("bob", "correct-horse")) == [
        "*** 2 lines mentioned you while you were away: /mentions shows them."
    ]


def test_a_session_renamed_away_leaving_does_not_take_its_owner_offline(
    server: OfflineServer,
) -> None:
    """The owner back online under their registered alias is not noted offline when an
    older session of theirs, renamed away from it, leaves: lines naming them are not kept."""
    robert = register(server, "bob", "correct-horse")
    robert.type("/nick robert\n")
    bob = server.login("bob", "correct-horse")
    server.offline("robert")
    (alice,) = server.join("alice")
    alice.type("hi bob\n")
    bob.lines()
    assert server.store.mentions_of("bob", 0).result == []
    assert server.store.away_rooms().result == {}


def test_a_line_is_read_for_mentions_once_whoever_is_away(
    server: OfflineServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path: a line said costs one pass over its words (the bell of those
    present needs it), and keeping it for someone away costs no second one."""
    passes: list[str] = []
    word = mentions_module._WORD

    class CountingWord:
        def findall(self, text: str) -> list[str]:
            passes.append(text)
            return word.findall(text)

    monkeypatch.setattr(mentions_module, "_WORD", CountingWord())
    server.registered_offline("bob")
    alice, carol = server.join("alice", "carol")
    carol.type("/join #elsewhere\n")
    carol.type("nobody away here\n")
    assert passes == ["nobody away here"]
    alice.type("bob?\n")
    assert passes == ["nobody away here", "bob?"]
    assert [entry.text for entry in server.store.mentions_of("bob", 0).result] == ["bob?"]


def test_mentions_need_a_registered_alias(server: OfflineServer) -> None:
    """/mentions for a guest says registration is needed; a bad argument gets the usage."""
    (alice,) = server.join("alice")
    alice.type("/mentions\n")
    assert alice.lines() == ["!!! Your alias is not registered (see /register)."]
    alice.type("/mentions everything\n")
    assert alice.lines() == ["!!! Usage: /mentions [clear]"]


def test_who_was_offline_where_survives_a_restart(tmp_path: Path) -> None:
    """After a restart, lines in the room a registered alias left still count as mentions."""
    path = tmp_path / "db"
    first = OfflineServer(path)
    first.registered_offline("bob")
    first.store.stop()
    second = OfflineServer(path)
    ensureDeferred(load_shared_state(second.store, second.hub))
    (alice,) = second.join("alice")
    alice.type("hey bob\n")
    assert after_welcome(second.login("bob", "correct-horse")) == [
        "*** 1 line mentioned you while you were away: /mentions shows them."
    ]
    second.store.stop()


class AwayRoomsUnwritable(SQLiteStore):
    """A store that cannot note where an alias went offline (Redis down a moment)."""

    def set_away_room(self, account: str, room: str | None, since: float) -> Deferred[None]:
        return fail(StoreError("connection lost"))


def test_who_went_offline_during_an_outage_is_not_forgotten_at_the_reload(
    server: OfflineServer,
) -> None:
    """An alias that went offline while the store could not note it is still offline
    from its room after the shared state is read again (a cluster's link back)."""
    server.registered_offline("bob")
    server.login("bob", "correct-horse")
    server.store.__class__ = AwayRoomsUnwritable
    server.offline("bob")
    server.store.__class__ = SQLiteStore
    ensureDeferred(load_shared_state(server.store, server.hub))
    (alice,) = server.join("alice")
    alice.type("bob, back yet?\n")
    assert texts(server.store.mentions_of("bob", 0).result) == ["bob, back yet?"]


# How the new events look on each wire.


def test_the_line_format_of_what_waited() -> None:
    """A message that waited is a private message stamped with its time; /mentions a
    block with each line's room."""
    assert encode(OfflineMessage("alice", "hi", START)) == f"{STAMP} *alice* hi\r\n".encode()
    entry = HistoryEntry("#rust", "act", "alice", "pings bob", START)
    assert encode(Mentions((entry,))).decode().split("\r\n") == [
        "*** Lines that mentioned you while you were away (1):",
        f"#rust {STAMP} * alice pings bob",
        "*** End of mentions ('/mentions clear' forgets them).",
        "",
    ]


def test_the_json_of_what_waited() -> None:
    """The WebSocket gets offline_message with its time, and mentions with each entry's room."""
    assert as_json(OfflineMessage("alice", "hi", START)) == {
        "type": "offline_message",
        "sender": "alice",
        "text": "hi",
        "at": START,
    }
    entry = HistoryEntry("#rust", "say", "alice", "bob?", START)
    assert as_json(Mentions((entry,)))["entries"] == [
        {"room": "#rust", "kind": "say", "alias": "alice", "text": "bob?", "at": START}
    ]
