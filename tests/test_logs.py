"""Tests for chatd.logs: twistd's text logs made cheaper, and JSON lines for log shippers."""

from __future__ import annotations

import io
import json

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure

from chatd.logs import ClassicText, event_as_json_line, json_observer, text_observer
from chatd.logs import Logger as ChatLogger
from chatd.tap import Options, makeService


class Peer:
    host = "127.0.0.1"

    def __repr__(self) -> str:
        return "<Peer>"


def _events() -> list[dict[str, object]]:
    base = {"log_time": 1_796_000_000.25, "log_level": LogLevel.info, "log_namespace": "chatd.hub"}
    failure = Failure(ZeroDivisionError("division by zero"))
    return [
        {**base, "log_format": "{alias} joined from {peer}", "alias": "ann", "peer": "1.2.3.4:5"},
        {**base, "log_format": "{peer.host} {peer!r} {n:>5} {n:x}", "peer": Peer(), "n": 42},
        {**base, "log_format": "two\nlines {x}", "x": "and\na third"},
        {**base, "log_format": "{{braces}} {x}", "x": "\u00e9\u2603"},
        {**base, "log_format": "{missing} key"},
        {**base, "log_format": "{call()}", "call": lambda: "called"},
        {**base, "log_format": "{} positional"},
        {**base, "log_format": "{x!q} bad conversion", "x": 1},
        {**base, "log_format": ""},
        {**base, "log_format": "{x}", "x": ""},
        {**base, "log_format": b"bytes {x}", "x": 1},
        {**base, "log_format": "no level"} | {"log_level": None},
        {"log_format": "no time, no namespace", "log_time": None},
        {"log_format": "no keys at all"},
        {**base, "log_format": "from {log_system}", "log_system": "HTTPChannel,3,1.2.3.4"},
        {**base, "log_format": "oops {x}", "x": 1, "log_failure": failure},
        {**base, "log_time": 1_796_000_000.9999996, "log_format": "rounded up"},
        {**base, "log_time": 1_796_000_000.9999994, "log_format": "not rounded"},
        {**base, "log_time": 1_796_000_000.0, "log_format": "a whole second"},
        {**base, "log_time": 1_796_000_000.5, "log_format": "the same second"},
        {**base, "log_time": 1_796_000_001.0, "log_format": "the next"},
        {**base, "log_time": 1_795_999_999.5, "log_format": "back in time"},
    ]


def test_the_text_is_exactly_twisteds() -> None:
    """Whatever the event, the faster formatting gives the text twistd would write."""
    classic = ClassicText()
    for event in _events():
        assert classic(dict(event)) == formatEventAsClassicLogText(dict(event)), event


def test_the_text_observer_writes_twistds_lines() -> None:
    out = io.StringIO()
    log = Logger(namespace="chatd.hub.Hub", observer=text_observer(out))
    log.info("{alias} joined from {peer}", alias="alice", peer="127.0.0.1:5000")
    log.info("")  # nothing to say: no line, as with twistd
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" [chatd.hub.Hub#info] alice joined from 127.0.0.1:5000")


def test_twistd_logging_to_stdout_gets_the_faster_text_observer() -> None:
    """In the foreground to stdout (the systemd unit's way); a file or syslog stays twistd's."""
    from twisted.scripts.twistd import ServerOptions

    for twistd_args, faster in [
        (["--nodaemon"], True),
        (["--nodaemon", "--logfile=-"], True),
        (["--nodaemon", "--logfile=chatd.log"], False),
        (["--nodaemon", "--syslog"], False),
        (["--nodaemon", "chatd", "--log-format", "json"], True),
    ]:
        server_options = ServerOptions()
        args = twistd_args if "chatd" in twistd_args else [*twistd_args, "chatd"]
        server_options.parseOptions(args)
        application = Application("chatd")
        makeService(server_options.subOptions).setServiceParent(application)
        assert (application.getComponent(ILogObserver) is not None) is faster, twistd_args


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


def test_chatds_logger_emits_the_events_twisteds_does() -> None:
    """chatd's Logger (a cheaper level check) emits the same events as Twisted's,
    and answers an invalid level as Twisted's does."""
    theirs: list[dict[str, object]] = []
    ours: list[dict[str, object]] = []

    class Source:
        twisted = Logger(observer=theirs.append)
        chatd = ChatLogger(observer=ours.append)

    source = Source()
    for log in (source.twisted, source.chatd):
        log.info("{alias} joined from {peer}", alias="ann", peer="1.2.3.4:5")
        log.debug("{peer}: overlong line dropped", peer="1.2.3.4:5")
        log.emit("no level", "{x}", x=1)  # type: ignore[arg-type]
    assert len(ours) == len(theirs) == 3
    own = {"log_time", "log_logger", "logger", "log_failure"}  # this logger, this instant
    for mine, twisteds in zip(ours, theirs, strict=True):
        assert mine["log_source"] is source
        assert mine.keys() == twisteds.keys()
        assert {k: v for k, v in mine.items() if k not in own} == {
            k: v for k, v in twisteds.items() if k not in own
        }
    assert ours[2]["log_format"] == "Got invalid log level {invalidLevel!r} in {logger}.emit()."
