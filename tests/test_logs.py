"""Tests for chatd.logs: JSON-lines logs for log shippers."""

from __future__ import annotations

import io
import json

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from chatd.logs import event_as_json_line, json_observer
from chatd.tap import Options, makeService


def test_an_event_is_one_line_of_json_with_its_fields() -> None:
    out = io.StringIO()
    log = Logger(namespace="chatd.hub.Hub", observer=json_observer(out))
    log.info("{alias} joined from {peer}", alias="alice", peer="127.0.0.1:5000")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["namespace"] == "chatd.hub.Hub"
    assert record["message"] == "alice joined from 127.0.0.1:5000"
    assert record["alias"] == "alice" and record["peer"] == "127.0.0.1:5000"
    assert record["time"].endswith("+00:00")


def test_a_failure_carries_its_traceback() -> None:
    failure = Failure(ZeroDivisionError("division by zero"))
    event = {
        "log_format": "oops",
        "log_level": LogLevel.error,
        "log_time": 0.0,
        "log_failure": failure,
        "log_namespace": "x",
    }
    record = json.loads(event_as_json_line(event))
    assert "ZeroDivisionError" in record["traceback"]
    assert record["level"] == "error"


def test_log_format_json_gives_twistd_the_observer() -> None:
    """With --log-format json the application carries the ILogObserver twistd will use."""
    options = Options()
    options.parseOptions(["--log-format", "json"])
    application = Application("chatd")
    makeService(options).setServiceParent(application)
    assert application.getComponent(ILogObserver) is not None
    text = Options()
    text.parseOptions([])
    plain = Application("chatd")
    makeService(text).setServiceParent(plain)
    assert plain.getComponent(ILogObserver) is None
