"""Log observers: twistd's text format made cheaper, and JSON lines (``--log-format json``).

The text format is twistd's own (``2026-12-03T06:10:48+0000 [chatd.hub#info] ann
joined from 127.0.0.1:5000``), written by :func:`text_observer`, which formats the
common event (a str format, a time, no traceback) without Twisted's pure-Python
``string.Formatter`` and a time zone lookup per line: every session logs its
arrival and departure, and that formatting was a tenth of a short session's cost.
Anything else is formatted by Twisted itself, so the output is the same.

The JSON format is for log shippers.

Each event becomes one JSON object on one line: its time (UTC, ISO 8601), level,
namespace and formatted message, plus the event's own simple fields (``alias``,
``peer``, ``reason``...) so a shipper can index them without parsing the text,
and the traceback where there is one. twisted.logger's own JSON format is made
to be read back by Twisted, not by shippers: it has no formatted message and
prefixes each record with a control character.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from time import time
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.logger import Logger as TwistedLogger
from twisted.python.logfile import LogFile

SIMPLE_TYPES = (str, int, float, bool)

_LEVELS = frozenset(LogLevel.iterconstants())


class Logger(TwistedLogger):
    """twisted.logger's Logger, emitting the same events with a cheaper level check.

    Twisted's ``emit`` checks the level against ``LogLevel.iterconstants()``, which
    sorts the levels anew for every event: with a session's arrival and departure
    logged, that sort was about 2 % of a short session's CPU. Here it is a set lookup;
    an invalid level still gets Twisted's own answer.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        """Emit a log event at ``level``, as Twisted's Logger does."""
        if level not in _LEVELS:
            super().emit(level, format, **kwargs)
            return
        kwargs.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time(),
        )
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(kwargs)


class ClassicText:
    """Formats an event as twistd's text logs do (``formatEventAsClassicLogText``), faster.

    The time stamp has a resolution of a second and is made once per second; the
    message is made by ``str.format_map``, which reads the same format language
    as Twisted's formatter. What that cannot do (a ``{callable()}`` field, a
    missing key), an event with a traceback, a flattened one or one without a
    time is left to Twisted, so the text is always the same as twistd's.
    """

    __slots__ = ("_second", "_stamp")

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def __call__(self, event: dict[str, Any]) -> str | None:
        text = event.get("log_format")
        when = event.get("log_time")
        if (
            type(text) is not str
            or type(when) is not float
            or "log_failure" in event
            or "log_flattened" in event
        ):
            return formatEventAsClassicLogText(event)
        try:
            message = text.format_map(event)
        except Exception:
            return formatEventAsClassicLogText(event)
        if not message:
            return None
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
        else:
            try:
                system = str(system)
            except Exception:
                system = "UNFORMATTABLE"
        line = f"{self._time(when)} [{system}] {message}"
        return line.replace("\n", "\n\t") + "\n"

    def _time(self, when: float) -> str:
        second = int(when)
        # Within a microsecond of the next second, the time is rounded up to it.
        if second != self._second or when - second >= 0.999999:
            stamp = formatTime(when)
            if when - second >= 0.999999:
                return stamp
            self._second, self._stamp = second, stamp
        return self._stamp


def text_observer(out: IO[str]) -> ILogObserver:
    """An observer writing each event to ``out`` as twistd's text logs do."""
    return FileLogObserver(out, ClassicText())


def event_as_json_line(event: dict[str, Any]) -> str:
    """One log event as a line of JSON."""
    at = event.get("log_time")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(at, timezone.utc).isoformat() if at else None,
        "level": getattr(event.get("log_level"), "name", None),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and isinstance(value, SIMPLE_TYPES):
            record[key] = value
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def json_observer(out: IO[str]) -> ILogObserver:
    """An observer writing each event to ``out`` as a line of JSON."""
    return FileLogObserver(out, event_as_json_line)


def twistd_log_file(logfile: str | None, nodaemon: bool) -> IO[str]:
    """Where twistd itself would log: stdout in the foreground, else the log file.

    The same choice as twistd's for its text logs (``--logfile``, default
    ``twistd.log``; ``-`` for stdout), and the file rotates the same way.
    """
    if logfile == "-" or (not logfile and nodaemon):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")
