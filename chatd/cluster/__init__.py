"""A cluster of chatd nodes sharing a Redis (``--redis``): one chat across them.

:mod:`~chatd.cluster.node` keeps this node in the cluster (claims, heartbeats,
reaping, resynchronisation) over :mod:`~chatd.cluster.link`;
:mod:`~chatd.cluster.bus` publishes what happens on the hub (its listener) and
acts on what other nodes publish (:mod:`~chatd.cluster.messages`);
:mod:`~chatd.cluster.roster` knows their members (the hub's directory).
Importing this package imports no Redis client (``--redis`` is checked with
:mod:`~chatd.cluster.address` alone).
"""
