"""The chat service: binds its ports, opens the store, then accepts; on the way down, says goodbye.

Ports are bound in ``privilegedStartService``, so a port that cannot be had (in
use, no permission) stops twistd at once with an error and a non-zero exit
rather than leaving a daemon running that nobody can reach, and so ports below
1024 can be bound before twistd sheds root. Accepting waits for the store,
though: the hub must know the rooms' topics, recent history and bans before the
first client arrives, or a newcomer would get an empty replay and a banned
address could slip in. Until then the bound ports do not read, and the kernel
holds early callers in the listen backlog.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.abstract import FileDescriptor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from chatd.admission import AdmittingFactory, Refusal, refusal_line
from chatd.fronts.line import LineFactory
from chatd.hub import HISTORY_KEPT
from chatd.interfaces import IChatStore
from chatd.session import ChatConfig, Sessions
from chatd.sharedstate import load_shared_state

if TYPE_CHECKING:
    from chatd.cluster.node import Cluster

SHUTDOWN_NOTICE = "Server shutting down."
# The collector's thresholds while serving (Python's are 700, 10, 10): a short session
# leaves hundreds of young objects, so the young generation was collected every few
# sessions; collected per 10,000 (a pause of a few ms at most), churn went 2-4 % faster.
GC_THRESHOLDS = (10_000, 20, 100)


@dataclass(frozen=True)
class LiveSettings:
    """What a reload (SIGHUP) can change without a restart."""

    config: ChatConfig
    motd_text: str | None
    history_replay: int
    operators: Mapping[str, str]


class ChatService(Service):
    """Owns the sessions, the store and the listening ports, and orders their start and stop."""

    log = Logger()

    def __init__(
        self,
        sessions: Sessions,
        store: IChatStore,
        endpoints: Sequence[str],
        others: Sequence[tuple[str, IProtocolFactory, Refusal]] = (),
        reactor: IReactorCore | None = None,
        reread: Callable[[], LiveSettings] | None = None,
        log_observer: Callable[[], ILogObserver] | None = None,
        cluster: Cluster | None = None,
        daemonizing: bool = False,
        pidfile: str | None = None,
    ) -> None:
        """Listen on ``endpoints`` for line chat, and on each of ``others`` with its factory.

        Every listener's connections pass the sessions' one Admission at accept
        time (see :class:`~chatd.admission.AdmittingFactory`); each of ``others``
        says how a refused connection is told (``refusal``: a line, an HTTP 503).

        ``reread`` reads the settings again for a reload; with it, SIGHUP reloads.

        ``log_observer`` makes the observer twistd should log to instead of its own.

        ``cluster`` joins the other nodes sharing a Redis (whose store ``store``
        then is) before accepting, and leaves them after the last client.

        ``daemonizing`` says twistd runs without ``--nodaemon``: a port that cannot
        be bound is then raised to twistd, whose waiting parent process prints it.
        ``pidfile`` is twistd's, removed if chatd ends the start itself (twistd
        removes it only after an error it is given).
        """
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.sessions = sessions
        self.line_factory = LineFactory(sessions)
        self.store = store
        self.cluster = cluster
        self.endpoints = list(endpoints)
        self.listeners: list[tuple[str, IProtocolFactory]] = [
            (description, AdmittingFactory(wrapped, sessions.admission, refusal))
            for description, wrapped, refusal in [
                *((description, self.line_factory, refusal_line) for description in endpoints),
                *others,
            ]
        ]
        self._reactor = reactor
        self._listening: list[Deferred[IListeningPort]] = []
        self.ports: list[IListeningPort] = []
        self._binding = False
        self._refusal: Failure | None = None
        self.ready: Deferred[None] = Deferred()
        self._reread = reread
        self._log_observer = log_observer
        self._previous_sighup: Any = None
        # The collector's thresholds before startService, back at stopService.
        self._gc_thresholds = gc.get_threshold()
        self._daemonizing = daemonizing
        self._pidfile = pidfile

    def setServiceParent(self, parent: Any) -> None:
        """Join the application; hand twistd the log observer, if chatd has its own.

        twistd logs to the application's ILogObserver component when it has one
        (twistd's documented hook for custom logging) and starts logging only
        after the application is built, so this is where it can be given.
        """
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer())
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Bind every port now; if one cannot be bound, twistd exits 1 with a line saying why.

        In the foreground that line is all: SystemExit ends twistd as its own
        fatal start-up errors do, with no traceback of twistd's internals after
        the one line that matters. A daemonizing twistd gets the error raised
        instead, since its parent process reports only what the child raises.
        """
        super().privilegedStartService()
        for description, factory in self.listeners:
            self._binding = True
            listening = serverFromString(self._reactor, description).listen(factory)
            listening.addCallbacks(self._bound, self._refused, errbackArgs=(description,))
            self._binding = False
            if self._refusal is not None:
                self.log.critical(
                    "cannot listen on {endpoint}: {reason}",
                    endpoint=description,
                    reason=self._refusal.getErrorMessage(),
                )
                if self._daemonizing:
                    self._refusal.raiseException()
                if self._pidfile:
                    with suppress(OSError):
                        os.remove(self._pidfile)
                raise SystemExit(1)
            self._listening.append(listening)

    def _bound(self, port: IListeningPort) -> None:
        """Keep a freshly bound port from accepting until the service is ready.

        TCP, TLS and UNIX ports are file descriptors the reactor reads to
        accept; while they are not read, connections wait in the kernel's backlog.
        """
        if isinstance(port, FileDescriptor):
            port.stopReading()
        self.ports.append(port)

    def _refused(self, failure: Failure, description: str) -> None:
        if self._binding:
            self._refusal = failure
            return
        self.log.failure("cannot listen on {endpoint}; stopping", failure, endpoint=description)
        self._reactor.stop()

    def startService(self) -> None:
        if len(self._listening) < len(self.listeners):
            self.privilegedStartService()
        super().startService()
        self.sessions.start()
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        if self._reread is not None:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        # After the reactor has installed its own handlers (during startup).
        self._reactor.callWhenRunning(self._take_stop_signals)
        ensureDeferred(self._start()).chainDeferred(self.ready)

    async def _start(self) -> None:
        try:
            await self.store.start()
            if self.cluster is not None:
                # Waits (retrying) until Redis answers: the store is in Redis.
                await self.cluster.start()
            await load_shared_state(self.store, self.sessions.hub)
        except OSError as problem:  # the machine's doing (a directory, permissions, space)
            self.log.critical(
                "cannot open the store at {location}: {problem}; stopping",
                location=self.store.location,
                problem=problem,
            )
            self._reactor.stop()
            return
        except Exception:
            self.log.failure(
                "cannot open the store at {location}; stopping", location=self.store.location
            )
            self._reactor.stop()
            return
        await gatherResults(self._listening)
        for port in self.ports:
            if isinstance(port, FileDescriptor):
                port.startReading()
        # What start-up made (modules, the loaded state) lives on: never scan it again.
        gc.freeze()
        self.log.info("accepting connections on {count} port(s)", count=len(self.ports))

    async def _stop(self) -> None:
        for port in self.ports:
            await maybeDeferred(port.stopListening)
        await self.sessions.shut_down(SHUTDOWN_NOTICE)
        self.sessions.stop()
        await self.store.stop()
        if self.cluster is not None:
            await self.cluster.stop()

    def _take_stop_signals(self) -> None:
        """SIGTERM and SIGINT stop the reactor without marking the exit as by signal.

        twistd re-raises the signal that stopped its reactor, so the process would
        die of SIGTERM (status 143) after an orderly shutdown; chatd's shutdown is
        orderly (everyone told, history flushed), so it exits 0, as services should.
        """
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_signal)

    def _stop_signal(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._stop_reactor, signal.Signals(signum).name)  # type: ignore[attr-defined]

    def _stop_reactor(self, name: str) -> None:
        self.log.info("received {signal}, shutting down", signal=name)
        with suppress(ReactorNotRunning):  # a second signal during the shutdown
            self._reactor.stop()

    def _sighup(self, signum: int, frame: Any) -> None:
        # A signal handler may run between any two bytecodes: do the work in the reactor.
        self._reactor.callFromThread(self.reload)  # type: ignore[attr-defined]

    def reload(self) -> None:
        """Read the config and MOTD files again and apply what can change live.

        A file that now says something chatd refuses changes nothing: the error
        is logged and the running settings stay.
        """
        assert self._reread is not None
        try:
            settings = self._reread()
        except Exception as problem:  # UsageError, or whatever reading the files raised
            self.log.error("reload refused, settings unchanged: {problem}", problem=str(problem))
            return
        self.sessions.reconfigure(settings.config)
        hub = self.sessions.hub
        hub.motd_file_text = settings.motd_text or None
        hub.history_replay = min(settings.history_replay, HISTORY_KEPT)
        if hub.accounts is not None:
            hub.accounts.set_operators(settings.operators)
        self.log.info(
            "reloaded: MOTD, operators, limits and timeouts as the files now say"
            " ({operators} operator(s))",
            operators=len(settings.operators),
        )

    def stopService(self) -> Deferred[None]:
        """Stop accepting, tell every client and wait for them, then close the store."""
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        super().stopService()
        gc.unfreeze()
        gc.set_threshold(*self._gc_thresholds)
        return ensureDeferred(self._stop())
