"""Messages that wait for you: what a registered alias missed while offline or away.

Two things wait, both in the store, so they survive a restart and, with Redis,
are seen from every node of a cluster:

* A ``/msg`` to a registered alias nobody is online as is kept (a box per
  recipient, of at most ``--offline-messages``, a fifth of them from any one
  sender, none older than ``--offline-max-age``) and handed over at the owner's
  next login, from any front end, each with the time it was sent; the sender is
  told it will wait, or why it was not kept (box full, their share of it used,
  the recipient banned, too many left lately, the store down). Messages are
  deleted from the store only once handed to the session: a crash between the
  two delivers them again at the next login (at least once, never lost).
* A line (said or ``/me``) that mentions a registered alias (the definition of
  :func:`chatd.mentions.mentioned_keys`) in the room they are away from: the room
  they were last in when they went offline, or the room they are in while marked
  ``/away``. At login, and on coming back from ``/away``, they are told how many
  lines mentioned them meanwhile; ``/mentions`` lists them.

Who is away from which room is kept in memory, in two indexes the hot path (every
line said) looks at with one dict lookup and one set intersection, never a store
read: the registered aliases offline by their last room (read from the store at
start, kept up to date by this node's logins and logouts and by other nodes'
news of theirs), and the registered members of this node marked away, by the room
they are in. A line said here is checked against both; a line said on another
node only against this node's away members (the offline ones were checked by
the node where it was said), so each mention is kept once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from chatd.admission import admission_key
from chatd.events import Error, Event, Mentions, Notice, OfflineMessage
from chatd.model import BOX_FULL, KEPT, SENDER_FULL, HistoryEntry, WaitingMessage
from chatd.text import alias_key, clean_text, count_of, duration, room_key
from chatd.throttle import Quota

if TYPE_CHECKING:
    from chatd.hub import Hub
    from chatd.interfaces import IMember

DEFAULT_OFFLINE_MESSAGES = 50
# The most --offline-messages may be: a box is read (and, in Redis, counted by its
# sender) whole at each message kept.
MAX_OFFLINE_MESSAGES = 1000
DEFAULT_OFFLINE_MAX_AGE_SECONDS = 30 * 86400.0
# One sender may fill at most this fraction of a box, so that others still can.
SENDER_SHARE = 5
# Messages one sender (by address) may leave for offline aliases per hour, all
# boxes together, on this node: a sender cannot fill every account's box.
MESSAGES_LEFT_PER_HOUR = 30
MESSAGES_LEFT_WINDOW_SECONDS = 3600.0
# Lines kept per registered alias as mentioning it (the newest), and how many
# away aliases one line is kept for at most (a line naming every account in a
# room is a mass highlight, not worth a store write each).
MENTIONS_KEPT = 100
MENTIONED_PER_LINE = 10


@dataclass(frozen=True)
class OfflineLimits:
    """How much waits: ``messages`` per recipient (0: no message is kept), for
    ``max_age_seconds``; mentions are kept as long, the newest ``mentions``."""

    messages: int = DEFAULT_OFFLINE_MESSAGES
    max_age_seconds: float = DEFAULT_OFFLINE_MAX_AGE_SECONDS
    mentions: int = MENTIONS_KEPT

    @property
    def per_sender(self) -> int:
        """How many messages of one box may come from one sender."""
        return max(1, self.messages // SENDER_SHARE)


class Offline:
    """The hub's keeper of what waits for registered aliases (see the module doc)."""

    log = Logger()

    def __init__(self, hub: Hub, limits: OfflineLimits) -> None:
        self._hub = hub
        self.limits = limits
        # Room key -> alias keys of the registered aliases offline that were last in it,
        # and account key -> (room key, since when), the same by account.
        self._offline_in: dict[str, set[str]] = {}
        self._offline: dict[str, tuple[str, float]] = {}
        # Room key -> account key -> since when, of members here marked away in that
        # room, and member -> (room key, account key, since), the same by member.
        self._away_in: dict[str, dict[str, float]] = {}
        self._away: dict[IMember, tuple[str, str, float]] = {}
        # Accounts whose waiting messages are being read (one read at a time each).
        self._fetching: set[str] = set()
        self._quota = Quota(hub.clock, MESSAGES_LEFT_PER_HOUR, MESSAGES_LEFT_WINDOW_SECONDS)

    # Who is away from which room.

    def load(self, away_rooms: dict[str, tuple[str, float]]) -> None:
        """Take up the offline aliases the store knows of (at start, and after a
        cluster's outage), but those online here or elsewhere now. One known here
        to be offline that the store does not list stays: the store could not be
        told during the outage."""
        unsaved = {
            account: noted for account, noted in self._offline.items() if account not in away_rooms
        }
        self._offline_in.clear()
        self._offline.clear()
        for account, (room, since) in (unsaved | away_rooms).items():
            if not self._online_anywhere(account):
                self._note_offline(account, room, since)

    def went(self, member: IMember, account: str, room: str) -> None:
        """``member``, of registered ``account``, went offline here from ``room``: away
        from it since now, or since they were marked away in it. Nothing changes if
        the account is online all the same: ``member`` had been renamed away from
        it, and its owner logged in as it again."""
        if self._online_anywhere(account):
            return
        since = self._hub.clock.seconds()
        if (away := self._away.get(member)) is not None and away[0] == room_key(room):
            since = away[2]
        self._note_offline(account, room, since)
        if (store := self._hub.store) is not None:
            self._in_background(
                store.set_away_room(account, room, since), "noting {account} away", account
            )

    def gone_elsewhere(self, alias: str, room: str) -> None:
        """``alias`` went offline on another node from ``room`` (which noted it in the store)."""
        accounts = self._hub.accounts
        registered = accounts is not None and accounts.is_registered(alias)
        if registered and self._hub.member_named(alias) is None:
            self._note_offline(alias_key(alias), room, self._hub.clock.seconds())

    def came_elsewhere(self, alias: str) -> None:
        """``alias`` came online on another node."""
        self._forget_offline(alias_key(alias))

    def away_changed(self, member: IMember) -> None:
        """``member`` was marked away or back, moved, changed alias or left: index them
        anew, and tell one who is back what mentioned them meanwhile."""
        old = self._away.pop(member, None)
        if old is not None:
            old_room, old_account, _ = old
            in_room = self._away_in.get(old_room)
            if in_room is not None:
                in_room.pop(old_account, None)
                if not in_room:
                    del self._away_in[old_room]
        hub = self._hub
        if not hub.is_online(member):
            return
        presence = hub.presence_of(member)
        account = presence.account
        if presence.away is not None and account == alias_key(presence.alias):
            assert account is not None
            since = old[2] if old is not None and old[1] == account else hub.clock.seconds()
            room = room_key(presence.room.name)
            self._away_in.setdefault(room, {})[account] = since
            self._away[member] = (room, account, since)
        elif old is not None and presence.away is None:
            self._tell_mentions_since(member, old[1], old[2])

    def _note_offline(self, account: str, room: str, since: float) -> None:
        self._forget_offline(account)
        key = room_key(room)
        self._offline[account] = (key, since)
        self._offline_in.setdefault(key, set()).add(account)

    def _forget_offline(self, account: str) -> float | None:
        """Take ``account`` out of the offline index; return since when it was offline."""
        noted = self._offline.pop(account, None)
        if noted is None:
            return None
        room, since = noted
        in_room = self._offline_in.get(room)
        if in_room is not None:
            in_room.discard(account)
            if not in_room:
                del self._offline_in[room]
        return since

    def _online_anywhere(self, account: str) -> bool:
        return self._hub.member_named(account) is not None or (
            self._hub.directory.find(account) is not None
        )

    # Lines that mention someone away (the hot path: see the module doc).

    def heard(
        self,
        room: str,
        kind: str,
        alias: str,
        text: str,
        at: float,
        keys: frozenset[str],
        here: bool = True,
    ) -> None:
        """``alias`` said (or did) ``text`` in ``room``, which may mention ``keys`` (see
        :func:`chatd.mentions.mentioned_keys`: the hub reads a line's words once, for
        the bell and for this); ``here`` says it was said on this node. Keep it for
        whoever is away that it mentions: a set intersection, and only when somebody
        is away from the room (from most rooms, nobody is)."""
        key = room_key(room)
        away = self._away_in.get(key)
        offline = self._offline_in.get(key) if here else None
        if away is None and offline is None:
            return
        mentioned: set[str] = set(keys & away.keys()) if away is not None else set()
        if offline is not None:
            mentioned |= keys & offline
        mentioned.discard(alias_key(alias))
        if not mentioned or (store := self._hub.store) is None:
            return
        entry = HistoryEntry(room, kind, alias, text, at)
        not_before = at - self.limits.max_age_seconds
        for account in sorted(mentioned)[:MENTIONED_PER_LINE]:
            written = store.add_mention(account, entry, self.limits.mentions, not_before)
            self._in_background(written, "keeping a mention of {account}", account)

    # Private messages to someone offline.

    def keeps_for(self, alias: str) -> bool:
        """Whether a message to ``alias``, online nowhere, is kept for them."""
        accounts = self._hub.accounts
        return (
            self.limits.messages > 0
            and self._hub.store is not None
            and accounts is not None
            and accounts.is_registered(alias)
        )

    def keep(self, member: IMember, sender: str, recipient: str, text: str) -> None:
        """Keep ``text`` (cleaned, not empty) from ``member`` (online as ``sender``) for
        registered ``recipient``, who is online nowhere, and tell the sender whether it
        will wait."""
        hub = self._hub
        store = hub.store
        assert store is not None  # keeps_for said so
        name = clean_text(recipient)
        if hub.banned(alias=recipient) is not None:
            hub.tell(member, Error(f"{name} is banned: your message was not kept."))
            return
        quota_key = admission_key(member.host) or alias_key(sender)
        if wait := self._quota.take(quota_key):
            minutes = max(1, round(wait / 60))
            hub.tell(
                member,
                Error(
                    f"You left {MESSAGES_LEFT_PER_HOUR} messages for people offline in the last"
                    f" hour; this one was not kept (try again in {minutes} min)."
                ),
            )
            return
        now = hub.clock.seconds()
        kept = store.keep_message(
            recipient,
            WaitingMessage(sender, text, now),
            self.limits.messages,
            self.limits.per_sender,
            now - self.limits.max_age_seconds,
            sender_key=self._sender_key(member, sender),
        )
        kept.addCallbacks(
            self._kept,
            self._not_kept,
            callbackArgs=(member, name, quota_key),
            errbackArgs=(member, name, quota_key),
        )

    def _sender_key(self, member: IMember, sender: str) -> str:
        """Who ``member`` is counted as for their share of a box: their account if
        registered, else their address, else (no address: a UNIX socket) their alias.
        Not the alias alone, which a /nick or a second connection changes."""
        if (account := self._hub.presence_of(member).account) is not None:
            return f"account {account}"
        if (address := admission_key(member.host)) is not None:
            return f"address {address}"
        return f"alias {alias_key(sender)}"

    def _kept(self, answer: str, member: IMember, name: str, quota_key: str) -> None:
        if answer == KEPT:
            self._tell(
                member,
                Notice(
                    f"{name} is offline: your message will wait for their next login"
                    f" (kept up to {duration(self.limits.max_age_seconds)})."
                ),
            )
            return
        self._quota.give_back(quota_key)
        if answer == SENDER_FULL:
            self._tell(
                member,
                Error(
                    f"You have {self.limits.per_sender} messages waiting for {name} already;"
                    " this one was not kept."
                ),
            )
        elif answer == BOX_FULL:
            self._tell(member, Error(f"{name} has too many messages waiting; yours was not kept."))

    def _not_kept(self, failure: Any, member: IMember, name: str, quota_key: str) -> None:
        self._quota.give_back(quota_key)
        self.log.warn(
            "cannot keep a message for {name}: {problem}",
            name=name,
            problem=failure.getErrorMessage(),
        )
        self._tell(member, Error(f"Your message for {name} cannot be kept now; it was not sent."))

    # At login.

    def welcome(self, account: str) -> None:
        """A member just logged in as registered ``account``: hand over what waited
        (to whoever is online as it when the store answers)."""
        since = self._forget_offline(account)
        store = self._hub.store
        if store is None:
            return
        now = self._hub.clock.seconds()
        self._in_background(
            store.set_away_room(account, None, now), "noting {account} back", account
        )
        if account in self._fetching:
            return  # the read under way delivers and counts to whoever is online then
        self._fetching.add(account)
        delivered = ensureDeferred(self._deliver(account))
        delivered.addCallback(lambda _: self._tell_mentions_to(account, since))
        delivered.addErrback(
            lambda failure: self.log.failure("delivering to {account}", failure, account=account)
        )

    async def _deliver(self, account: str) -> None:
        """Hand the messages waiting for ``account`` to its member, then delete them."""
        store = self._hub.store
        assert store is not None
        not_before = self._hub.clock.seconds() - self.limits.max_age_seconds
        try:
            messages = await store.waiting_messages(account, not_before)
        except Exception as problem:
            self.log.warn(
                "cannot read the messages for {account}: {problem}",
                account=account,
                problem=problem,
            )
            if (member := self._online_as(account)) is not None:
                self._tell(
                    member,
                    Error(
                        "Messages left for you cannot be read now; they wait for your next login."
                    ),
                )
            return
        finally:
            self._fetching.discard(account)
        member = self._online_as(account)
        if member is None or not messages:
            return  # gone already: they wait for the next login
        ignores = self._hub.presence_of(member).ignores
        shown = [message for message in messages if alias_key(message.sender) not in ignores]
        if shown:
            self._tell(member, Notice(f"{count_of(len(shown), 'message')} waited for you:"))
        for message in shown:
            self._tell(member, OfflineMessage(message.sender, message.text, message.at))
        if not self._hub.is_online(member):
            return  # cut off on the way (its send queue overflowed): they wait again
        dropped = store.drop_messages(account, [message.handle for message in messages])
        self._in_background(dropped, "deleting the messages delivered to {account}", account)

    def _online_as(self, account: str) -> IMember | None:
        """The member online here as registered ``account``, if any."""
        member = self._hub.member_named(account)
        return member if member is not None and self._hub.is_registered(member) else None

    # Mentions.

    def _tell_mentions_to(self, account: str, since: float | None) -> None:
        """Tell whoever is online here as ``account`` now how many lines mentioned it
        since ``since``: a login that came while the messages were read is told too."""
        if (member := self._online_as(account)) is not None:
            self._tell_mentions_since(member, account, since)

    def _tell_mentions_since(self, member: IMember, account: str, since: float | None) -> None:
        """Tell ``member`` how many lines mentioned ``account`` since ``since`` (None:
        ever), if any did."""
        if self._hub.store is None:
            return
        read = self._read_mentions(member, account)

        def tell(entries: list[HistoryEntry]) -> None:
            count = sum(1 for entry in entries if since is None or entry.at >= since)
            if count:
                self._tell(
                    member,
                    Notice(
                        f"{count_of(count, 'line')} mentioned you while you were away:"
                        " /mentions shows them."
                    ),
                )

        read.addCallbacks(tell, self._mentions_not_read, errbackArgs=(member, account, False))

    def show_mentions(self, member: IMember, clear: bool) -> None:
        """Tell registered ``member`` the lines that mentioned them while away (or forget them)."""
        hub = self._hub
        if hub.store is None or not hub.is_registered(member):
            hub.tell(member, Error("Your alias is not registered (see /register)."))
            return
        account = alias_key(hub.presence_of(member).alias)
        if clear:
            cleared = hub.store.clear_mentions(account)
            cleared.addCallbacks(
                lambda _: self._tell(member, Notice("Your mentions are forgotten.")),
                self._mentions_not_read,
                errbackArgs=(member, account, True),
            )
            return
        read = self._read_mentions(member, account)
        read.addCallbacks(
            lambda entries: self._tell(member, Mentions(tuple(entries))),
            self._mentions_not_read,
            errbackArgs=(member, account, True),
        )

    def _read_mentions(self, member: IMember, account: str) -> Deferred[list[HistoryEntry]]:
        """The mentions of ``account`` within the age, but those of aliases ``member`` ignores."""
        store = self._hub.store
        assert store is not None
        not_before = self._hub.clock.seconds() - self.limits.max_age_seconds
        read = store.mentions_of(account, not_before)

        def unignored(entries: list[HistoryEntry]) -> list[HistoryEntry]:
            if not self._hub.is_online(member):
                return []
            ignores = self._hub.presence_of(member).ignores
            return [entry for entry in entries if alias_key(entry.alias) not in ignores]

        read.addCallback(unignored)
        return read

    def _mentions_not_read(self, failure: Any, member: IMember, account: str, asked: bool) -> None:
        self.log.warn(
            "cannot read the mentions of {account}: {problem}",
            account=account,
            problem=failure.getErrorMessage(),
        )
        if asked:
            self._tell(member, Error("Your mentions cannot be read now; try again later."))

    # Plumbing.

    def _tell(self, member: IMember, event: Event) -> None:
        """Tell ``member`` ``event`` if they are still online (a store answers later)."""
        if self._hub.is_online(member):
            self._hub.tell(member, event)

    def _in_background(self, work: Deferred[Any], what: str, account: str) -> None:
        """Log, in one line, a store write that failed (the store being down is no bug)."""
        work.addErrback(
            lambda failure: self.log.warn(
                what + " failed: {problem}", account=account, problem=failure.getErrorMessage()
            )
        )
