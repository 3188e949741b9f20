"""Run chatd with ``twistd -n -y etc/chatd.tac``.

The service is built by the same code as ``twistd chatd``. Options go in the
CHATD_OPTIONS environment variable, in command-line form, for example
CHATD_OPTIONS="--port tcp:55555:interface=0.0.0.0 --alias-timeout 30".
"""

import os
import shlex

from twisted.application.service import Application

from chatd.tap import Options, makeService

options = Options()
options.parseOptions(shlex.split(os.environ.get("CHATD_OPTIONS", "")))

application = Application("chatd")
makeService(options).setServiceParent(application)
