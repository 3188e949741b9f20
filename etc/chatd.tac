"""Run chatd with ``twistd -n -y etc/chatd.tac``.

The service is built by the same code as ``twistd chatd``. Options go in the
CHATD_OPTIONS environment variable, in command-line form, for example
CHATD_OPTIONS="--port tcp:55555:interface=0.0.0.0 --alias-timeout 30".
"""

import os
import shlex

from twisted.application.service import Application
from twisted.python.usage import UsageError

from chatd.tap import Options, makeService

options = Options()
try:
    options.parseOptions(shlex.split(os.environ.get("CHATD_OPTIONS", "")))
except UsageError as problem:  # one line, as `twistd chatd` gives, not a traceback
    raise SystemExit(f"chatd.tac: CHATD_OPTIONS: {problem}") from None

application = Application("chatd")
makeService(options).setServiceParent(application)
