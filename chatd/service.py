"""The chat service: starts nothing itself, but says goodbye to everyone on the way down."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from chatd.protocol import ChatFactory

SHUTDOWN_NOTICE = "Server shutting down."


class ChatService(Service):
    """Owns the shared factory; on stop, tells every client and waits for them to close.

    Listening ports are sibling services of this one, so by the time clients hear
    the notice no new ones are being accepted.
    """

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.factory.shut_down(SHUTDOWN_NOTICE)
