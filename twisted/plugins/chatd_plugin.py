"""twistd plugin: makes ``twistd chatd`` run the service built by :mod:`chatd.tap`.

Kept to one lazy ServiceMaker: importing anything else here (the reactor above
all) would run on every plugin scan of every twistd invocation on the machine.
"""

from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.tap",
    "A small, hardened line-based chat daemon (telnet/nc friendly).",
    "chatd",
)
