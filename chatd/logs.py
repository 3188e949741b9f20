"""JSON-lines logs (``--log-format json``), for log shippers.

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
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from twisted.python.logfile import LogFile

SIMPLE_TYPES = (str, int, float, bool)


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
