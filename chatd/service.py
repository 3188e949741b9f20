"""The chat service: opens the store, then listens; on the way down, says goodbye.

Listening waits for the store: the hub must know the rooms' topics and recent
history before the first client can arrive, or a newcomer would get an empty
replay and live lines would land before the loaded ones.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from chatd.hub import HISTORY_KEPT, MOTD_SETTING
from chatd.protocol import ChatFactory
from chatd.store import Store

SHUTDOWN_NOTICE = "Server shutting down."


class ChatService(Service):
    """Owns the factory, the store and the listening ports, and orders their start and stop."""

    log = Logger()

    def __init__(self, factory: ChatFactory, store: Store, listeners: list[IService]) -> None:
        self.factory = factory
        self.store = store
        self._listeners = MultiService()
        for listener in listeners:
            listener.setServiceParent(self._listeners)
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        super().startService()
        ensureDeferred(self._start()).chainDeferred(self.ready)

    async def _start(self) -> None:
        try:
            await self.store.start()
            topics = await self.store.topics()
            history = await self.store.recent_history_by_room(HISTORY_KEPT)
            if self.factory.hub.accounts is not None:
                await self.factory.hub.accounts.load()
            bans = await self.store.active_bans(self.factory.clock.seconds())
            motd = await self.store.get_setting(MOTD_SETTING)
        except Exception:
            self.log.failure("cannot open the store at {path}; stopping", path=self.store.path)
            from twisted.internet import reactor

            reactor.stop()  # type: ignore[attr-defined]
            return
        self.factory.hub.load(topics, history, bans, motd)
        self._listeners.startService()

    async def _stop(self) -> None:
        if self._listeners.running:
            await self._listeners.stopService()
        await self.factory.shut_down(SHUTDOWN_NOTICE)
        await self.store.stop()

    def stopService(self) -> Deferred[None]:
        """Stop accepting, tell every client and wait for them, then close the store."""
        super().stopService()
        return ensureDeferred(self._stop())
