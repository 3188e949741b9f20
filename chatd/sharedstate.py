"""The one reader of what every node of a cluster shares through the store.

Accounts, the topics set last, recent history by room, the bans in force, the
MOTD and which registered aliases are offline from which room are read at start
(:class:`chatd.service.ChatService`) and again after a cluster's link to Redis was
down (:class:`chatd.cluster.node.Cluster`): what other nodes changed meanwhile was
not heard. Both read them here, the same way.
"""

from __future__ import annotations

from chatd.hub import HISTORY_KEPT, Hub
from chatd.interfaces import IChatStore
from chatd.model import SharedState
from chatd.moderation import MOTD_SETTING


async def load_shared_state(store: IChatStore, hub: Hub) -> None:
    """Read the shared state from ``store`` (and the accounts) and give it to ``hub``,
    in place of what it had."""
    topics = await store.topics()
    history = await store.recent_history_by_room(HISTORY_KEPT)
    if hub.accounts is not None:
        await hub.accounts.load()
    bans = await store.active_bans(hub.clock.seconds())
    motd = await store.get_setting(MOTD_SETTING)
    away_rooms = await store.away_rooms()
    hub.load(SharedState(topics=topics, history=history, bans=bans, motd=motd))
    hub.offline.load(away_rooms)
