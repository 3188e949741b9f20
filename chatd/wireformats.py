"""The formats a connection can be switched between with ``/format``, as its session sees them.

A session knows no wire: its front end hands it the formats that front end's
wire can carry (the line front end: ``line`` and ``json``), each as a
:class:`WireFormat`, and the session switches between them on ``/format``
without knowing what they look like. A format says how events leave
(``encode``, the session's :attr:`~chatd.interfaces.IMember.encode`) and, when
what comes in is not typed text, how a received line becomes the line a user
would have typed (``read``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from chatd.events import Event

# What the session expects of the next line: an alias (or one of the few commands
# before one), the password of a registered alias, or chat (a line or a command).
# A structured format (JSON) tells its input's kinds apart by it.
Expecting = Literal["alias", "password", "chat"]


class InputRefused(ValueError):
    """A received line that does not read in the connection's format; the message
    says why, for its sender."""


@dataclass(frozen=True)
class WireFormat:
    """One format a connection can speak, both ways (its name is the key it is given under)."""

    encode: Callable[[Event], bytes]
    # A received line (decoded as UTF-8) as the line a user would have typed, given
    # what the session expects; None for a line that means nothing (a blank one).
    # Raises InputRefused. None for a format whose lines are typed text already.
    read: Callable[[str, Expecting], str | None] | None = None
