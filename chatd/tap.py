"""``twistd chatd``: the command-line options and the one function that builds the service.

The twistd plugin and ``etc/chatd.tac`` both call :func:`makeService`, so the
defaults live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from twisted.logger import ILogObserver
from twisted.python import usage

from chatd import optionvalues as values
from chatd.accounts import Accounts
from chatd.admission import ConnectionLimits, Refusal, refusal_http, refusal_line
from chatd.cluster.address import RedisAddress
from chatd.config import ConfigFileOptions
from chatd.files import create_private_directory
from chatd.flood import FloodLimits
from chatd.fronts.line import LineFactory, refusal_json
from chatd.hub import (
    COMINGS_SECONDS,
    DEFAULT_HISTORY_REPLAY,
    DEFAULT_QUIET_JOINS_ABOVE,
    DEFAULT_ROOM,
    Hub,
)
from chatd.interfaces import IChatStore
from chatd.logs import json_observer, text_observer, twistd_log_file
from chatd.offline import DEFAULT_OFFLINE_MAX_AGE_SECONDS, DEFAULT_OFFLINE_MESSAGES, OfflineLimits
from chatd.passwords import Passwords
from chatd.service import ChatService, LiveSettings
from chatd.session import ChatConfig, Sessions
from chatd.stores.base import HISTORY_PER_ROOM
from chatd.stores.sqlite import SQLiteStore
from chatd.text import (
    ALIAS_RULE,
    clean_text,
    decode_line,
    is_valid_name,
)

DEFAULT_PORT = 55555
_DEFAULTS = ChatConfig()


class Options(ConfigFileOptions):
    """Options of ``twistd chatd``."""

    optParameters: ClassVar[list[list[Any]]] = [
        [
            "alias-timeout",
            None,
            _DEFAULTS.alias_timeout_seconds,
            "Seconds a new connection has to choose an alias before it is closed.",
            values.positive(float),
        ],
        [
            "idle-timeout",
            None,
            _DEFAULTS.idle_timeout_seconds,
            "Seconds a chatting client may send nothing before it is disconnected (0: never).",
            values.not_negative(float),
        ],
        [
            "max-line-bytes",
            None,
            _DEFAULTS.max_line_bytes,
            "Longest accepted line, in bytes without the line end; longer ones are dropped.",
            values.positive(int),
        ],
        [
            "sendq-bytes",
            None,
            _DEFAULTS.sendq_bytes,
            "Output held for a client that does not read before it is disconnected.",
            values.positive(int),
        ],
        [
            "flood-burst",
            None,
            _DEFAULTS.flood.burst,
            "Lines a client may send at once before flood control delays them.",
            values.positive(int),
        ],
        [
            "flood-rate",
            None,
            _DEFAULTS.flood.rate,
            "Lines per second a client may send past the burst (0 turns flood control off).",
            values.not_negative(float),
        ],
        [
            "flood-queue",
            None,
            _DEFAULTS.flood.queue_cap,
            "Delayed lines past which a flooder is warned; at twice this, disconnected.",
            values.positive(int),
        ],
        [
            "max-conns",
            None,
            _DEFAULTS.connections.max_conns,
            "Connections at once, from anywhere; more are refused (0: no limit).",
            values.not_negative(int),
        ],
        [
            "max-per-ip",
            None,
            _DEFAULTS.connections.max_per_ip,
            "Connections at once from one IP address (0: no limit).",
            values.not_negative(int),
        ],
        [
            "max-conn-rate",
            None,
            _DEFAULTS.connections.max_rate_per_ip,
            "New connections per minute from one IP address (0: no limit).",
            values.not_negative(int),
        ],
        [
            "tls-cert",
            None,
            None,
            "PEM certificate (chain) for each ssl: --port, --json-port or --irc that names none.",
        ],
        [
            "tls-key",
            None,
            None,
            "PEM private key for each ssl: --port, --json-port or --irc that names none.",
        ],
        [
            "web",
            None,
            None,
            "Serve the chat page and its WebSocket here (e.g. tcp:8080:interface=127.0.0.1)",
            values.endpoint,
        ],
        [
            "ssh",
            None,
            None,
            "Let ssh users in here (e.g. tcp:2222:interface=127.0.0.1); user name = alias",
            values.endpoint,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics over HTTP here (e.g. tcp:9100:interface=127.0.0.1)",
            values.endpoint,
        ],
        [
            "redis",
            None,
            None,
            "Join a cluster of chatd nodes sharing this Redis (redis://host:port/db):"
            " rooms, users, history and accounts live there",
            values.redis_url,
        ],
        [
            "log-format",
            None,
            "text",
            "Log as twistd does (text) or as one JSON object per line (json), for log shippers.",
            values.log_format,
        ],
        [
            "history-replay",
            None,
            DEFAULT_HISTORY_REPLAY,
            "Lines of a room's history shown to whoever enters it (0 for none).",
            values.history_replay,
        ],
        [
            "history-keep",
            None,
            HISTORY_PER_ROOM,
            "Lines of history kept on disk per room; older ones are pruned (0: keep none).",
            values.history_keep,
        ],
        [
            "history-max-age",
            None,
            None,
            "Prune history lines older than this (e.g. 30d); by default only the count limits",
            values.duration,
        ],
        [
            "offline-messages",
            None,
            DEFAULT_OFFLINE_MESSAGES,
            "Private messages kept for a registered alias while it is offline, delivered"
            " at its next login (one sender may fill a fifth of them; 0: none are kept).",
            values.offline_messages,
        ],
        [
            "offline-max-age",
            None,
            DEFAULT_OFFLINE_MAX_AGE_SECONDS,
            "How long a private message kept for a registered alias offline, and a line"
            " that mentioned it while it was away, is kept (e.g. 30d; 2592000 seconds"
            " unless given).",
            values.duration,
        ],
        [
            "quiet-joins-above",
            None,
            DEFAULT_QUIET_JOINS_ABOVE,
            f"In rooms of more than this many, sum up arrivals and departures in one line"
            f" per {COMINGS_SECONDS:g} s instead of one line each (0: always one each).",
            values.not_negative(int),
        ],
        [
            "data-dir",
            None,
            "chatd-data",
            "Directory for the database (created if missing); relative to where twistd runs.",
        ],
        [
            "motd",
            None,
            None,
            "A file whose text is the message of the day (an operator's /motd overrides it).",
        ],
        [
            "default-room",
            None,
            DEFAULT_ROOM,
            "The room everyone starts in.",
            values.room_name,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["json-ports"] = []
        self["operators"] = {}
        self["web-origins"] = []
        self["irc"] = None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse the arguments; under twistd, one that is refused is one line and exit status 1.

        twistd answers a UsageError with all of ``--help`` before the line that
        says what is wrong. chatd's refusals name the option, or the file and the
        key, so that line is enough (``twistd chatd --help`` lists the options); it
        goes to stderr as twistd's own fatal start-up errors do. Without twistd
        as parent (a reload, etc/chatd.tac, tests) the UsageError is raised.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as problem:
            if self.parent is None:
                raise
            raise SystemExit(f"twistd chatd: {problem}") from None

    def opt_oper(self, definition: str) -> None:
        """Define an operator as NAME:HASH (HASH from chatd-passwd); repeatable."""
        name, _, password_hash = definition.partition(":")
        if not is_valid_name(name):
            raise usage.UsageError(f"invalid --oper name {name!r}: use {ALIAS_RULE}")
        if not password_hash.startswith("$argon2"):
            raise usage.UsageError(
                f"invalid --oper {name!r}: give NAME:HASH with an argon2 hash from chatd-passwd"
            )
        self["operators"][name] = password_hash

    def opt_web_origin(self, origin: str) -> None:
        """Also let pages from this origin (https://chat.example.org) use --web; repeatable."""
        parts = urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
        ):
            raise usage.UsageError(f"invalid --web-origin {origin!r}: give scheme://host[:port]")
        self["web-origins"].append(origin)

    def opt_port(self, port: str) -> None:
        """Listen on a port (on 127.0.0.1) or endpoint (tcp:, ssl:, unix:...); repeatable."""
        self["ports"].append(_endpoint_option(port, "--port"))

    opt_p = opt_port

    def opt_json_port(self, port: str) -> None:
        """Like --port, for bots: its connections speak JSON from the start; repeatable."""
        self["json-ports"].append(_endpoint_option(port, "--json-port"))

    def opt_irc(self, endpoint: str) -> None:
        """Let IRC clients in here (e.g. tcp:6667:interface=127.0.0.1; ssl: as --port)."""
        self["irc"] = _endpoint_option(endpoint, "--irc")

    def postOptions(self) -> None:
        self["motd-text"] = read_motd(self["motd"]) if self["motd"] else None
        ports = self["ports"] or [str(DEFAULT_PORT)]
        json_ports = self["json-ports"]
        irc = [self["irc"]] if self["irc"] else []
        if self["tls-cert"] or self["tls-key"]:
            filled = values.with_tls_files(
                [*ports, *json_ports, *irc], self["tls-cert"], self["tls-key"]
            )
            ports = filled[: len(ports)]
            json_ports = filled[len(ports) : len(ports) + len(json_ports)]
            irc = filled[len(ports) + len(json_ports) :]
        self["ports"] = _endpoints(ports, "--port")
        self["json-ports"] = _endpoints(json_ports, "--json-port")
        self["irc"] = _endpoints(irc, "--irc")[0] if irc else None

    def config(self) -> ChatConfig:
        """The protocol limits these options ask for."""
        return ChatConfig(
            alias_timeout_seconds=self["alias-timeout"],
            idle_timeout_seconds=self["idle-timeout"],
            max_line_bytes=self["max-line-bytes"],
            sendq_bytes=self["sendq-bytes"],
            flood=FloodLimits(
                burst=self["flood-burst"], rate=self["flood-rate"], queue_cap=self["flood-queue"]
            ),
            connections=ConnectionLimits(
                max_conns=self["max-conns"],
                max_per_ip=self["max-per-ip"],
                max_rate_per_ip=self["max-conn-rate"],
            ),
        )


def _endpoint_option(port: str, option: str) -> str:
    """The endpoint ``option`` was given, checked; an ``ssl:`` one that names no
    certificate is checked in postOptions, once --tls-cert/--tls-key named its files."""
    if port.startswith("ssl:") and not values.names_tls_files(port):
        return port
    return _endpoints([port], option)[0]


def _endpoints(ports: list[str], option: str) -> list[str]:
    try:
        return [values.endpoint(port) for port in ports]
    except ValueError as problem:
        raise usage.UsageError(f"invalid {option} {problem}") from problem


def live_settings(options: Options) -> LiveSettings:
    return LiveSettings(
        options.config(), options["motd-text"], options["history-replay"], options["operators"]
    )


def reread(argv: Sequence[str]) -> LiveSettings:
    """The live settings of the same command line, with the config and MOTD files as they are now.

    Raises UsageError if the files now say something chatd refuses.
    """
    options = Options()
    options.parseOptions(list(argv))
    return live_settings(options)


DATABASE_FILE = "chatd.sqlite3"
MAX_MOTD_BYTES = 16 * 1024


def read_motd(path: str) -> str:
    """The text of a MOTD file, each line cleaned of terminal controls."""
    try:
        with open(path, "rb") as motd_file:
            raw = motd_file.read(MAX_MOTD_BYTES + 1)
    except OSError as problem:
        raise usage.UsageError(f"cannot read --motd {path}: {problem.strerror}") from None
    if len(raw) > MAX_MOTD_BYTES:
        raise usage.UsageError(f"--motd {path} is over {MAX_MOTD_BYTES} bytes")
    lines = [clean_text(line) for line in decode_line(raw).splitlines()]
    return "\n".join(lines).strip("\n")


def makeService(options: Options) -> ChatService:
    """Build the chat service: its store, its hub, and one listener per ``--port`` (and
    ``--json-port``, ``--web`` ...).

    With ``--redis`` the store is Redis and the hub one node of a cluster;
    without it, a single server with its SQLite store in ``--data-dir``.
    """
    keep_history = options["history-keep"] > 0
    history_per_room = options["history-keep"] if keep_history else HISTORY_PER_ROOM
    store: IChatStore
    cluster = None
    if options["redis"]:
        # txredisapi imports the reactor: only when asked for.
        from chatd.cluster.link import RedisLink
        from chatd.cluster.node import Cluster
        from chatd.stores.redis import RedisStore

        link = RedisLink(RedisAddress.from_url(options["redis"]))
        store = RedisStore(
            link,
            str(link.address),
            history_per_room=history_per_room,
            history_max_age_seconds=options["history-max-age"],
        )
        cluster = Cluster(link, store)
    else:
        store = SQLiteStore(
            Path(options["data-dir"]) / DATABASE_FILE,
            history_per_room=history_per_room,
            history_max_age_seconds=options["history-max-age"],
        )
    hub = Hub(
        default_room=options["default-room"],
        store=store,
        history_replay=options["history-replay"],
        keep_history=keep_history,
        history_max_age_seconds=options["history-max-age"],
        accounts=Accounts(store, Passwords(), options["operators"]),
        listener=cluster.bus if cluster is not None else None,
        directory=cluster.roster if cluster is not None else None,
        quiet_joins_above=options["quiet-joins-above"],
        offline_limits=OfflineLimits(
            messages=options["offline-messages"],
            max_age_seconds=options["offline-max-age"],
        ),
    )
    if cluster is not None:
        cluster.attach(hub)
    hub.motd_file_text = options["motd-text"] or None
    sessions = Sessions(hub, options.config())
    log_observer = None
    twistd_options: Mapping[str, Any] = options.parent or {}
    nodaemon = twistd_options.get("nodaemon", True)
    if options["log-format"] == "json":
        log_observer = partial(_json_log_observer, twistd_options.get("logfile"), nodaemon)
    elif (
        options.parent is not None
        and nodaemon
        and not twistd_options.get("syslog")
        and twistd_options.get("logfile") in (None, "", "-")
    ):
        # twistd's own text logs to stdout (systemd's journal), formatted faster
        # (see chatd.logs); files and syslog stay twistd's (rotation, SIGUSR1).
        log_observer = partial(_text_log_observer, twistd_options.get("logfile"), nodaemon)
    others: list[tuple[str, Any, Refusal]] = [
        (port, LineFactory(sessions, json=True), refusal_json) for port in options["json-ports"]
    ]
    if options["web"]:
        from chatd.fronts.web import (
            web_site,  # imports autobahn and twisted.web: only when asked for
        )

        others.append((options["web"], web_site(sessions, options["web-origins"]), refusal_http))
    if options["ssh"]:
        from chatd.fronts.ssh import ssh_factory  # imports twisted.conch: only when asked for

        # Before the host key is written into it.
        create_private_directory(Path(options["data-dir"]))
        others.append(
            (options["ssh"], ssh_factory(sessions, Path(options["data-dir"])), refusal_line)
        )
    if options["irc"]:
        from chatd.fronts.irc import IrcFactory, refusal_irc

        others.append((options["irc"], IrcFactory(sessions), refusal_irc))
    if options["metrics"]:
        from chatd.metrics import metrics_site  # imports twisted.web: only when asked for

        others.append((options["metrics"], metrics_site(sessions, store, cluster), refusal_http))
    return ChatService(
        sessions,
        store,
        options["ports"],
        others,
        cluster=cluster,
        reread=partial(reread, options.argv),
        log_observer=log_observer,
        daemonizing=not nodaemon,
        pidfile=twistd_options.get("pidfile"),
    )


def _json_log_observer(logfile: str | None, nodaemon: bool) -> ILogObserver:
    return json_observer(twistd_log_file(logfile, nodaemon))


def _text_log_observer(logfile: str | None, nodaemon: bool) -> ILogObserver:
    return text_observer(twistd_log_file(logfile, nodaemon))
