"""The Prometheus metrics endpoint (``--metrics ENDPOINT``), in the text format.

Served by ``prometheus_client``'s Twisted resource on ``twisted.web``, from a
registry of chatd's own (not the library's global one). Everything is read when
scraped, from counters the hub, the sessions and the store keep as plain
integers: see :mod:`chatd.counters`. The HTTP limits (no request bodies, a
deadline for the request head, no access log) are those of :mod:`chatd.fronts.httpsite`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource
from twisted.web.server import Site

from chatd.fronts.httpsite import NOT_FOUND, GuardedSite
from chatd.interfaces import IChatStore
from chatd.session import Sessions

if TYPE_CHECKING:
    from chatd.cluster.node import Cluster


class ChatCollector:
    """Reads chatd's state and totals at scrape time."""

    def __init__(
        self, sessions: Sessions, store: IChatStore, cluster: Cluster | None = None
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        sessions, hub, store = self._sessions, self._sessions.hub, self._store
        counters = hub.counters
        yield GaugeMetricFamily("chatd_users", "Users online (with an alias).", value=len(hub))
        yield GaugeMetricFamily(
            "chatd_connections", "Open client connections.", value=sessions.admission.connected
        )
        yield GaugeMetricFamily("chatd_rooms", "Rooms open.", value=hub.room_count)
        yield CounterMetricFamily(
            "chatd_lines_received", "Lines received from clients.", value=counters.lines_received
        )
        yield CounterMetricFamily(
            "chatd_lines_delivered", "Lines written to clients.", value=counters.lines_delivered
        )
        yield CounterMetricFamily(
            "chatd_bytes_sent", "Bytes written to clients.", value=counters.bytes_sent
        )
        disconnects = CounterMetricFamily(
            "chatd_disconnects",
            "Clients cut off by a limit.",
            labels=["reason"],
        )
        for reason in ("sendq", "flood", "idle", "alias_timeout"):
            disconnects.add_metric([reason], counters.disconnects[reason])
        yield disconnects
        refused = CounterMetricFamily(
            "chatd_refused_connections", "Connections refused by a limit.", labels=["limit"]
        )
        for limit in ("max_conns", "max_per_ip", "max_conn_rate"):
            refused.add_metric([limit], sessions.admission.refused[limit])
        yield refused
        yield SummaryMetricFamily(
            "chatd_history_write_seconds",
            "Time to write a batch of history to the database, queueing included.",
            count_value=store.batches_written,
            sum_value=store.write_seconds,
        )
        cluster = self._cluster
        if cluster is not None:  # a cluster node (--redis)
            yield GaugeMetricFamily(
                "chatd_cluster_link_up", "1 while the link to Redis is up.", value=int(cluster.up)
            )
            yield GaugeMetricFamily(
                "chatd_cluster_remote_users",
                "Users online on the other nodes.",
                value=len(cluster.roster),
            )
            yield CounterMetricFamily(
                "chatd_cluster_items_published",
                "Events sent to the other nodes.",
                value=cluster.items_published,
            )
            yield CounterMetricFamily(
                "chatd_cluster_items_received",
                "Events received from the other nodes.",
                value=cluster.items_received,
            )


def metrics_site(sessions: Sessions, store: IChatStore, cluster: Cluster | None = None) -> Site:
    """A web site serving the metrics at ``/metrics`` (and at ``/``), with the cluster's
    when the node is in one."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ChatCollector(sessions, store, cluster))
    metrics = MetricsResource(registry=registry)
    root = MetricsRoot()
    root.putChild(b"", metrics)
    root.putChild(b"metrics", metrics)
    return GuardedSite(root, reactor=sessions.clock)


class MetricsRoot(Resource):
    """``/`` and ``/metrics``; anything else is not found, quietly (twisted.web's own
    not-found page logs each HEAD request for it)."""

    def getChild(self, path: bytes, request: object) -> Resource:
        return NOT_FOUND
