"""One node's part in a cluster of chatd processes sharing a Redis: its life cycle.

Redis holds who is online where, and carries what happens between nodes:

``{prefix}members`` (hash)
    alias key -> presence record (JSON: alias, node, room, since, away,
    registered). An alias is claimed with a Lua script that writes the record
    only if no other node holds it, so an alias is unique across the cluster.
``{prefix}node-members:{node}`` (set)
    the alias keys one node holds, so that its claims can be dropped at once.
``{prefix}nodes`` (set) and ``{prefix}alive:{node}`` (key with a TTL)
    the nodes, and each node's heartbeat: refreshed every
    :data:`HEARTBEAT_SECONDS`, it expires :data:`NODE_TTL_SECONDS` after the
    node stops. Every node runs the reaper script each heartbeat: a node whose
    heartbeat has expired is removed with all its claims, and one ``gone``
    message tells the others, so a killed node's users are announced as
    leaving within a few seconds and their aliases are free again.
``{prefix}events`` (pub/sub channel)
    everything nodes tell each other: JSON ``{"n": node, "m": [items]}``, each
    item one of :mod:`chatd.cluster.messages`. A
    node publishes once per reactor turn with all that turn's items (the same
    batching the rooms do), on its one command connection, so Redis relays a
    node's items in the order they happened. Claims and releases publish from
    inside their Lua scripts, atomically with the change they announce; the
    turn's batch is sent before any such script so the order still holds.

When the link to Redis drops, the node goes on serving its own members and
tells them that the other servers cannot hear them. When it is back, the node
resynchronises: it registers again, claims its members' aliases again (one
that was taken elsewhere meanwhile is given up by its member here), reads who
is on the other nodes, and publishes its whole roster (``sync``) for the
others to reconcile. Removing members that are no longer listed waits one
heartbeat TTL, so that after a Redis restart (which forgets everything) the
other nodes have had the time to register again before anyone is announced as
gone.

The :class:`Cluster` keeps the link, the claims, the heartbeat and the
resynchronisation; it hands what it receives to its :class:`~chatd.cluster.bus.Bus`
(the hub's listener), which keeps its :class:`~chatd.cluster.roster.Roster` (the
hub's directory).
"""

from __future__ import annotations

import os
import socket
from secrets import token_hex
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.cluster.bus import Bus
from chatd.cluster.link import RedisLink
from chatd.cluster.messages import (
    PRESENCE_MESSAGES,
    Join,
    Json,
    Leave,
    MalformedMessage,
    Message,
    PresenceRecord,
    Rename,
    Sync,
    UnknownMessage,
    envelope,
    open_envelope,
    parse,
    to_text,
)
from chatd.cluster.roster import Roster
from chatd.hub import Hub
from chatd.interfaces import IChatStore
from chatd.sharedstate import load_shared_state
from chatd.text import alias_key

HEARTBEAT_SECONDS = 1.0
NODE_TTL_SECONDS = 4.0
DEFAULT_PREFIX = "chatd:"
GONE_REASON = "Their server stopped answering"
RESYNC_RETRY_SECONDS = 1.0
SHUTDOWN_REASON = "Their server shut down"

# Claim (or refresh) an alias for a node; publish ARGV[4] on ARGV[5] unless empty.
# With ARGV[6] = '1' the claim is taken from whichever node holds it (the owner
# of a registered alias replacing a session of theirs on another node).
# The node that held it is told to end its session (a "replace" item), from here,
# atomically with the taking, so no view of who held it can be stale.
# KEYS: members hash, this node's member set.
# ARGV: alias key, node, record, message, channel, force, key prefix, alias.
CLAIM_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local owner = cjson.decode(current)['node']
  if owner ~= ARGV[2] then
    if ARGV[6] ~= '1' then return 0 end
    redis.call('SREM', ARGV[7] .. 'node-members:' .. owner, ARGV[1])
    local replace = {t = 'replace', to = owner, alias = ARGV[8]}
    redis.call('PUBLISH', ARGV[5], cjson.encode({n = ARGV[2], m = {replace}}))
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[4]) end
return 1
"""

# Give up a node's claim; publish ARGV[3] (unless empty) only if it was still the node's.
# KEYS: members hash, this node's member set. ARGV: alias key, node, message, channel.
RELEASE_SCRIPT = """
redis.call('SREM', KEYS[2], ARGV[1])
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and cjson.decode(current)['node'] == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[3]) end
  return 1
end
return 0
"""

# Move a node's claim from one alias key to another (the same key for a change of case).
# KEYS: members hash, this node's member set.
# ARGV: old key, new key, node, new record, message, channel.
RENAME_SCRIPT = """
if ARGV[1] ~= ARGV[2] then
  local taken = redis.call('HGET', KEYS[1], ARGV[2])
  if taken and cjson.decode(taken)['node'] ~= ARGV[3] then return 0 end
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  if old and cjson.decode(old)['node'] == ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[1]) end
  redis.call('SREM', KEYS[2], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
"""

# Refresh this node's heartbeat; 0 if the node was reaped meanwhile (it must resync).
# KEYS: nodes set, this node's heartbeat key. ARGV: node, TTL in ms.
BEAT_SCRIPT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""

# Register this node (again), with a fresh heartbeat.
# KEYS: nodes set, this node's heartbeat key. ARGV: node, TTL in ms.
REGISTER_SCRIPT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""

# Remove nodes and their claims, telling the others who is gone: every node whose
# heartbeat expired (ARGV[4] empty), or the one node ARGV[4] (an orderly stop).
# The news goes out in the name of the node that is gone, so every other node,
# the reaper included, acts on it.
# KEYS: nodes set, members hash. ARGV: key prefix, channel, reaping node, node to
# remove or '', reason.
REAP_SCRIPT = """
local nodes = {}
if ARGV[4] ~= '' then
  nodes = {ARGV[4]}
else
  for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if redis.call('EXISTS', ARGV[1] .. 'alive:' .. node) == 0 then table.insert(nodes, node) end
  end
end
for _, node in ipairs(nodes) do
  local set = ARGV[1] .. 'node-members:' .. node
  local aliases = {}
  for _, key in ipairs(redis.call('SMEMBERS', set)) do
    local record = redis.call('HGET', KEYS[2], key)
    if record then
      local presence = cjson.decode(record)
      if presence['node'] == node then
        redis.call('HDEL', KEYS[2], key)
        table.insert(aliases, presence['alias'])
      end
    end
  end
  redis.call('DEL', set, ARGV[1] .. 'alive:' .. node)
  redis.call('SREM', KEYS[1], node)
  local item = {t = 'gone', node = node, aliases = aliases, reason = ARGV[5]}
  redis.call('PUBLISH', ARGV[2], cjson.encode({n = node, m = {item}}))
end
return #nodes
"""


def new_node_id() -> str:
    """A name for this process that no other node has: host, pid and a random part."""
    return f"{socket.gethostname()}.{os.getpid()}.{token_hex(3)}"


class Cluster:
    """Connects a hub to the other nodes through Redis (see the module doc).

    Built before the hub, whose listener is :attr:`bus` and directory :attr:`roster`;
    then :meth:`attach` the hub.
    """

    log = Logger()

    def __init__(
        self,
        link: RedisLink,
        store: IChatStore | None = None,
        *,
        node: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.node = node or new_node_id()
        self.up = False
        self._store = store
        self._clock: IReactorTime = clock  # type: ignore[assignment]
        self._prefix = prefix
        self.channel = f"{prefix}events"
        self._members_key = f"{prefix}members"
        self._nodes_key = f"{prefix}nodes"
        self._mine_key = f"{prefix}node-members:{self.node}"
        self._alive_key = f"{prefix}alive:{self.node}"
        self.link = link
        link.channels = [self.channel]
        link.client_name = f"chatd:{self.node}"
        link.on_message = self._received
        link.on_up = self._link_up
        link.on_down = self._link_down
        # The members of the other nodes (the hub's directory), and the hub's listener.
        self.roster = Roster(self.publish)
        self.bus = Bus(self, self.roster)
        self._hub: Hub | None = None
        self._own_envelope = envelope(self.node, [])[:-3]  # '{"n":"NODE","m":'
        self._outbox: list[Json] = []
        self._outbox_call: IDelayedCall | None = None
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self._clock
        self._settle_call: IDelayedCall | None = None
        self._retry_call: IDelayedCall | None = None
        self._was_down = False
        self._resyncing = False
        self._first_up: Deferred[None] | None = Deferred()
        # Alias keys other nodes changed while a roster read was in flight: the
        # read may predate the change, so it must not undo it.
        self._changed: set[str] | None = None
        # Items received and published, for the metrics and the benchmark.
        self.items_published = 0
        self.items_received = 0

    def attach(self, hub: Hub) -> None:
        """Serve ``hub``, built with :attr:`bus` as its listener and :attr:`roster` as its
        directory."""
        self._hub = hub
        self.bus.attach(hub)

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the cluster serves no hub yet")
        return self._hub

    # Life cycle.

    def start(self) -> Deferred[None]:
        """Connect; fires once connected and synchronised the first time (retrying until then)."""
        self.log.info(
            "node {node} joining the cluster at {address}",
            node=self.node,
            address=str(self.link.address),
        )
        self.link.start()
        assert self._first_up is not None
        return self._first_up

    async def stop(self) -> None:
        """Leave the cluster: the others are told this node's members are gone."""
        if self._heartbeat.running:
            self._heartbeat.stop()
        for call in (self._settle_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        self._send_outbox()
        if self.up:
            try:
                await self._reap(self.node, SHUTDOWN_REASON)
            except Exception as problem:
                self.log.warn("could not tell the cluster this node is leaving: {p}", p=problem)
        self.up = False
        await self.link.stop()

    # What the bus asks for (its Node protocol).

    def publish(self, message: Message) -> bool:
        """Queue ``message`` for every other node; sent at the end of this reactor turn."""
        if not self.up:
            return False
        self._outbox.append(message.to_json())
        if self._outbox_call is None:
            self._outbox_call = self._clock.callLater(0, self._send_outbox)
        return True

    @property
    def linked(self) -> bool:
        """Whether Redis can be reached now (claims go out even while resynchronising)."""
        return self.link.up

    def claim(self, record: PresenceRecord, message: Join, force: bool = False) -> Deferred[bool]:
        """Claim ``record``'s alias for this node, publishing ``message`` if it is ours;
        ``force`` takes it from another node."""
        published = envelope(self.node, [message.to_json()])
        return self._claim(record, published, force).addCallback(bool)

    def refresh(self, alias: str) -> None:
        """Learn again who holds ``alias`` (after losing it to them in a race)."""

        def learnt(raw: str | None) -> None:
            record = _record(raw)
            if record is not None and record.node != self.node:
                self.bus.heard_of(record)

        looked_up = self.link.execute("HGET", self._members_key, alias_key(alias))
        looked_up.addCallback(learnt)
        looked_up.addErrback(self._warn, "looking up {alias}", alias=alias)

    def _claim(self, record: PresenceRecord, message: str, force: bool = False) -> Deferred[Any]:
        return self._script(
            CLAIM_SCRIPT,
            [self._members_key, self._mine_key],
            [
                alias_key(record.alias),
                self.node,
                to_text(record.to_json()),
                message,
                self.channel,
                "1" if force else "0",
                self._prefix,
                record.alias,
            ],
        )

    def rename(self, old: str, record: PresenceRecord, message: Rename) -> Deferred[bool]:
        """Move the claim on ``old`` to ``record``'s alias, publishing ``message``."""
        return self._script(
            RENAME_SCRIPT,
            [self._members_key, self._mine_key],
            [
                alias_key(old),
                alias_key(record.alias),
                self.node,
                to_text(record.to_json()),
                envelope(self.node, [message.to_json()]),
                self.channel,
            ],
        ).addCallback(bool)

    def release(self, alias: str, message: Leave) -> None:
        """Give up the claim on ``alias``, publishing ``message`` if it was ours."""
        self._script(
            RELEASE_SCRIPT,
            [self._members_key, self._mine_key],
            [alias_key(alias), self.node, envelope(self.node, [message.to_json()]), self.channel],
        ).addErrback(self._warn, "releasing {alias}", alias=alias)

    def update(self, record: PresenceRecord) -> None:
        """Keep ``record`` as its member's presence (for nodes that resynchronise later)."""
        self._claim(record, "").addErrback(self._warn, "updating {alias}", alias=record.alias)

    # The link.

    def _link_up(self) -> None:
        ensureDeferred(self._resync()).addErrback(self._resync_failed)

    def _link_down(self) -> None:
        self.up = False
        self._was_down = True
        self._outbox.clear()
        if self._heartbeat.running:
            self._heartbeat.stop()
        self.bus.link_down()

    def _resync_failed(self, failure: Any) -> None:
        """A lost link starts over by itself when it is back; anything else (Redis
        refusing writes, loading its data) is retried while the link is up."""
        self._resyncing = False
        self.log.warn(
            "cluster resynchronisation failed: {problem}", problem=failure.getErrorMessage()
        )
        if self.link.up:
            self._retry_call = self._clock.callLater(RESYNC_RETRY_SECONDS, self._retry_resync)

    def _retry_resync(self) -> None:
        self._retry_call = None
        if self.link.up and not self.up:
            self._link_up()

    async def _resync(self) -> None:
        """(Re)join the cluster: register, claim our members, learn the others', tell them ours."""
        if self._resyncing:
            return
        self._resyncing = True
        ttl_ms = int(NODE_TTL_SECONDS * 1000)
        await self._script(
            REGISTER_SCRIPT, [self._nodes_key, self._alive_key], [self.node, ttl_ms]
        )
        await self._reap("", GONE_REASON)
        for member_record in self.bus.local_records():
            # The owner of a registered alias keeps it, whoever took it meanwhile.
            won = await self._claim(member_record, "", force=member_record.registered)
            if not won and (member := self.hub.member_named(member_record.alias)) is not None:
                self.hub.lost_alias(member)
        await self._release_departed()
        if self._store is not None and self._first_up is None:
            # After an outage (at start-up the service loads the store itself).
            await load_shared_state(self._store, self.hub)
        records, _ = await self._read_roster()
        self.bus.reconcile(None, records, drop_missing=False)
        self.up = True
        self._resyncing = False
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.cancel()
        self._settle_call = self._clock.callLater(NODE_TTL_SECONDS, self._settle)
        self._heartbeat.start(HEARTBEAT_SECONDS, now=False)
        self.publish(Sync(tuple(self.bus.local_records())))
        self.log.info(
            "node {node} in the cluster: {local} member(s) here, {remote} on other nodes",
            node=self.node,
            local=len(self.hub),
            remote=len(self.roster),
        )
        if self._was_down:
            self.bus.link_back()
        if self._first_up is not None:
            first, self._first_up = self._first_up, None
            first.callback(None)

    async def _release_departed(self) -> None:
        """Give up the claims of members who left while the link was down.

        The others learn of their departure from this node's roster (``sync``).
        """
        claimed = await self.link.execute("SMEMBERS", self._mine_key)
        here = {alias_key(record.alias) for record in self.bus.local_records()}
        for key in set(claimed or ()) - here:
            await self._script(
                RELEASE_SCRIPT,
                [self._members_key, self._mine_key],
                [key, self.node, "", self.channel],
            )

    async def _read_roster(self) -> tuple[list[PresenceRecord], set[str]]:
        """Every presence record in Redis, and the alias keys whose news came in
        while the read was on its way (their records may be older than the news)."""
        self._changed = set()
        try:
            raw = await self.link.execute("HGETALL", self._members_key)
        finally:
            changed, self._changed = self._changed, None
        records = [record for value in _hash_values(raw) if (record := _record(value))]
        return [r for r in records if alias_key(r.alias) not in changed], changed

    def _settle(self) -> None:
        """One TTL after a resync: drop the members the cluster no longer lists."""
        self._settle_call = None
        if not self.up:
            return

        def reconcile(roster: tuple[list[PresenceRecord], set[str]]) -> None:
            records, changed = roster
            if self.up:
                self.bus.reconcile(None, records, drop_missing=True, keep=changed)

        ensureDeferred(self._read_roster()).addCallback(reconcile).addErrback(
            self._warn, "reading the roster"
        )

    def _beat(self) -> Deferred[None]:
        """Refresh our heartbeat and reap dead nodes; resync if we were reaped ourselves."""
        ttl_ms = int(NODE_TTL_SECONDS * 1000)
        beat = self._script(BEAT_SCRIPT, [self._nodes_key, self._alive_key], [self.node, ttl_ms])

        def beaten(alive: int) -> Deferred[Any]:
            if not alive:
                self.log.warn(
                    "node {node} was taken for dead by the cluster; rejoining", node=self.node
                )
                self.up = False
                self._heartbeat.stop()
                self._link_up()
                return succeed(None)
            return self._reap("", GONE_REASON)

        beat.addCallback(beaten)
        beat.addErrback(self._warn, "the heartbeat")
        return beat

    def _reap(self, node: str, reason: str) -> Deferred[Any]:
        reaped = self._script(
            REAP_SCRIPT,
            [self._nodes_key, self._members_key],
            [self._prefix, self.channel, self.node, node, reason],
        )
        return reaped

    # Messages.

    def _received(self, channel: str, message: str | bytes) -> None:
        """Act on one published batch: every message of another node's, in order.

        Redis sends a node its own batches too; they are recognised by their
        first bytes (this node writes the node name first) and not parsed; another
        batch under this node's name is nobody's, and dropped. What cannot be read
        is logged (one line) and dropped; nothing in a batch can stop the node from
        reading the next one.
        """
        if isinstance(message, bytes):  # not UTF-8: txredisapi hands over the bytes
            message = message.decode("utf-8", "replace")
        if message.startswith(self._own_envelope):
            return
        try:
            node, items = open_envelope(message)
        except MalformedMessage:
            self.log.warn(
                "cluster: unreadable message ignored: {message!r}", message=message[:200]
            )
            return
        if node == self.node:  # not written by this node (its own are recognised above)
            self.log.warn(
                "cluster: a batch under this node's name ignored: {message!r}",
                message=message[:200],
            )
            return
        for item in items:
            self.items_received += 1
            self._dispatch(node, item)

    def _dispatch(self, node: str, item: Any) -> None:
        if isinstance(item, dict) and "to" in item and item["to"] != self.node:
            return  # addressed to another node
        try:
            message = parse(item)
        except UnknownMessage as unknown:
            self.log.warn("cluster: {problem} from {node}, ignored", problem=unknown, node=node)
            return
        except MalformedMessage as problem:
            self.log.warn(
                "cluster: a message that is not one from {node} ignored ({problem}): {item!r}",
                node=node,
                problem=problem,
                item=str(item)[:200],
            )
            return
        if self._changed is not None and isinstance(message, PRESENCE_MESSAGES):
            self._changed.update(alias_key(alias) for alias in message.touched())
        try:
            self.bus.receive(node, message)
        except Exception:  # a bug: the next messages must still be heard
            self.log.failure(
                "cluster: cannot act on {message!r} from {node}", message=message, node=node
            )

    def _send_outbox(self) -> None:
        if self._outbox_call is not None and self._outbox_call.active():
            self._outbox_call.cancel()
        self._outbox_call = None
        items, self._outbox = self._outbox, []
        if not items:
            return
        self.items_published += len(items)
        self.link.execute("PUBLISH", self.channel, envelope(self.node, items)).addErrback(
            self._warn, "publishing {count} item(s)", count=len(items)
        )

    def _script(self, script: str, keys: list[str], args: list[Any]) -> Deferred[Any]:
        """Run a Lua script after whatever this turn has published, so order holds."""
        self._send_outbox()
        return self.link.execute("EVAL", script, len(keys), *keys, *args)

    def _warn(self, failure: Any, what: str, **fields: Any) -> None:
        self.log.warn(
            "cluster: " + what + " failed: {problem}", problem=failure.getErrorMessage(), **fields
        )


def _record(raw: Any) -> PresenceRecord | None:
    """A presence record read from Redis, or None if it is not one (logged)."""
    if raw is None:
        return None
    try:
        return PresenceRecord.from_text(raw)
    except MalformedMessage:
        Cluster.log.warn("cluster: a presence record that is not one ignored: {raw!r}", raw=raw)
        return None


def _hash_values(raw: Any) -> list[str]:
    """The values of an HGETALL reply (txredisapi gives a dict, or a flat list)."""
    if isinstance(raw, dict):
        return list(raw.values())
    return list(raw[1::2]) if raw else []
