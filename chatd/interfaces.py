"""The seams of chatd, as zope interfaces that mypy (with mypy-zope) checks.

Each names what one side of a seam may rely on of the other: the hub of its
members (:class:`IMember`), of its store (:class:`IChatStore`), of whoever
listens to what happens in it (:class:`IHubListener`, the cluster's bus) and of
whoever knows the members elsewhere (:class:`IDirectory`, the cluster's roster).
Test doubles and real implementations are checked against the same interface
with ``zope.interface.verify.verifyObject``.
"""

from __future__ import annotations

from zope.interface import Interface

# --- the hub and its members (owned by the session work) ---------------------


# --- the store (owned by the stores work) -----------------------------------


# --- the hub's listener and directory (owned by the hub and cluster work) ---
