"""Tests for chatd.tap: the options of ``twistd chatd`` and the service they build."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.usage import UsageError

from chatd.events import Error
from chatd.fronts import jsonformat
from chatd.fronts.line import JSONLineConnection, LineConnection, LineFactory
from chatd.service import ChatService
from chatd.session import ChatConfig
from chatd.tap import Options, makeService
from tests.tls import make_certificate


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    """With no options chatd listens on 127.0.0.1:55555 with the documented limits."""
    options = parse()
    assert options["ports"] == ["tcp:55555:interface=127.0.0.1"]
    assert options.config() == ChatConfig(
        alias_timeout_seconds=60.0, max_line_bytes=2048, sendq_bytes=1048576
    )


def test_bare_port_listens_on_loopback() -> None:
    """A bare port number means that port on 127.0.0.1."""
    assert parse("--port", "4000")["ports"] == ["tcp:4000:interface=127.0.0.1"]


def test_endpoint_descriptions_and_repetition() -> None:
    """--port takes endpoint descriptions and may be repeated to listen on several."""
    options = parse("--port", "tcp:4000:interface=0.0.0.0", "-p", "unix:/tmp/chatd.sock")
    assert options["ports"] == ["tcp:4000:interface=0.0.0.0", "unix:/tmp/chatd.sock"]


@pytest.mark.parametrize("port", ["bogus:1", "tcp:notaport", "ssl:4000:privateKey=/no/such.pem"])
def test_bad_port_is_a_usage_error(port: str) -> None:
    """An endpoint that cannot be parsed is refused at start, naming the option."""
    with pytest.raises(UsageError, match="invalid --port"):
        parse("--port", port)


def test_limits() -> None:
    """Each limit option reaches the protocol configuration."""
    options = parse("--alias-timeout", "2.5", "--max-line-bytes", "512", "--sendq-bytes", "65536")
    assert options.config() == ChatConfig(
        alias_timeout_seconds=2.5, max_line_bytes=512, sendq_bytes=65536
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--alias-timeout", "0"],
        ["--alias-timeout", "soon"],
        ["--max-line-bytes", "-1"],
        ["--max-line-bytes", "1.5"],
        ["--sendq-bytes", "0"],
        ["--default-room", "lobby"],
        ["--default-room", "#has space"],
        ["--history-replay", "-1"],
        ["--history-replay", "101"],
        ["--quiet-joins-above", "-1"],
        ["--quiet-joins-above", "many"],
        ["--offline-messages", "-1"],
        ["--offline-messages", "1001"],
        ["--offline-max-age", "0"],
        ["--offline-max-age", "forever"],
    ],
)
def test_bad_limits_are_usage_errors(args: list[str]) -> None:
    """Zero, negative or non-numeric limits are refused with a usage error."""
    with pytest.raises(UsageError):
        parse(*args)


HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def test_operators() -> None:
    """--oper NAME:HASH defines operators; a bad name or a non-argon2 hash is refused."""
    options = parse("--oper", f"root:{HASH}", "--oper", f"ops:{HASH}")
    assert options["operators"] == {"root": HASH, "ops": HASH}
    assert makeService(options).sessions.hub.accounts is not None
    for bad in ("root", "root:secret", f"bad name:{HASH}"):
        with pytest.raises(UsageError, match="invalid --oper"):
            parse("--oper", bad)


def test_default_room() -> None:
    """--default-room names the room everyone starts in (#lobby unless given)."""
    assert parse()["default-room"] == "#lobby"
    service = makeService(parse("--default-room", "#main"))
    assert service.sessions.hub.default_room == "#main"


def test_quiet_joins_above() -> None:
    """--quiet-joins-above sets when a room sums up arrivals (100 unless given, 0 never)."""
    assert parse()["quiet-joins-above"] == 100
    assert makeService(parse()).sessions.hub.quiet_joins_above == 100
    assert makeService(parse("--quiet-joins-above", "0")).sessions.hub.quiet_joins_above == 0


def test_offline_options() -> None:
    """--offline-messages and --offline-max-age bound what waits (50 and 30 days unless given)."""
    limits = makeService(parse()).sessions.hub.offline.limits
    assert (limits.messages, limits.max_age_seconds, limits.per_sender) == (50, 30 * 86400, 10)
    hub = makeService(parse("--offline-messages", "0", "--offline-max-age", "2d")).sessions.hub
    assert (hub.offline.limits.messages, hub.offline.limits.max_age_seconds) == (0, 2 * 86400)


def test_history_and_data_dir(tmp_path: Path) -> None:
    """--history-replay and --data-dir reach the hub and the store."""
    options = parse("--history-replay", "5", "--data-dir", str(tmp_path / "data"))
    service = makeService(options)
    assert service.sessions.hub.history_replay == 5
    assert service.store.path == tmp_path / "data" / "chatd.sqlite3"
    assert parse()["history-replay"] == 20
    assert parse()["data-dir"] == "chatd-data"


def test_history_retention_options(tmp_path: Path) -> None:
    """--history-keep and --history-max-age reach the store and the hub; 0 turns history off."""
    service = makeService(parse("--history-keep", "500", "--history-max-age", "30d"))
    assert service.store.history_per_room == 500
    assert service.store.history_max_age_seconds == 30 * 86400
    assert service.sessions.hub.keep_history
    assert service.sessions.hub.history_max_age_seconds == 30 * 86400
    off = makeService(parse("--history-keep", "0"))
    assert not off.sessions.hub.keep_history
    assert parse()["history-keep"] == 10_000
    assert parse()["history-max-age"] is None
    with pytest.raises(UsageError, match="must be 0 or more"):
        parse("--history-keep", "-1")
    with pytest.raises(UsageError) as refusal:
        parse("--history-max-age", "soon")
    assert str(refusal.value) == (
        "--history-max-age: Not a duration: soon (use e.g. 90s, 10m, 2h, 1d)."
    )


def test_make_service_listens_on_every_port() -> None:
    """makeService builds the chat service with one endpoint per --port."""
    service = makeService(parse("--port", "4000", "--port", "unix:/tmp/chatd.sock"))
    assert isinstance(service, ChatService)
    assert service.endpoints == ["tcp:4000:interface=127.0.0.1", "unix:/tmp/chatd.sock"]


def test_tls_cert_and_key_fill_in_ssl_ports(tmp_path: Path) -> None:
    """--tls-cert/--tls-key complete every ssl: port that names no files; others stay."""
    cert, key = make_certificate(tmp_path)
    options = parse(
        "--port", "ssl:4443", "--port", "4000", "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert options["ports"] == [
        f"ssl:4443:certKey={cert}:privateKey={key}",
        "tcp:4000:interface=127.0.0.1",
    ]
    with pytest.raises(UsageError, match="both --tls-cert and --tls-key"):
        parse("--port", "ssl:4443", "--tls-cert", str(cert))
    with pytest.raises(UsageError, match="need a --port ssl:PORT"):
        parse("--tls-cert", str(cert), "--tls-key", str(key))
    with pytest.raises(UsageError, match="invalid --port"):
        parse("--port", "ssl:4443:certKey=/nonexistent.pem:privateKey=/nonexistent.pem")


def test_json_ports_are_line_listeners_that_start_in_json(tmp_path: Path) -> None:
    """--json-port takes what --port takes, repeatable (none by default); makeService serves
    each with a line factory whose connections speak JSON."""
    assert parse()["json-ports"] == []
    options = parse("--json-port", "4001", "--json-port", "unix:/tmp/bots.sock")
    assert options["json-ports"] == ["tcp:4001:interface=127.0.0.1", "unix:/tmp/bots.sock"]
    assert options["ports"] == ["tcp:55555:interface=127.0.0.1"]
    service = makeService(options)
    listeners = dict(service.listeners)
    for endpoint in options["json-ports"]:
        factory = listeners[endpoint].wrapped
        assert isinstance(factory, LineFactory)
        assert factory.connection_type is JSONLineConnection
    assert listeners["tcp:55555:interface=127.0.0.1"].wrapped.connection_type is (LineConnection)


def test_a_json_port_refuses_a_connection_in_json() -> None:
    """A --json-port connection turned away at accept time (too many from its address) is
    told why as one JSON error event, as everything on that port is, not as a text line."""
    service = makeService(parse("--json-port", "4001", "--max-per-ip", "1"))
    listener = dict(service.listeners)["tcp:4001:interface=127.0.0.1"]
    assert service.sessions.admission.admit("192.0.2.1") is None  # its one connection
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.1", 40000))
    listener.buildProtocol(transport.getPeer()).makeConnection(transport)
    too_many = Error("Too many connections from 192.0.2.1 (at most 1).")
    assert transport.value() == jsonformat.encode(too_many)
    assert transport.disconnecting


@pytest.mark.parametrize("port", ["bogus:1", "tcp:notaport", "ssl:4000:privateKey=/no/such.pem"])
def test_bad_json_port_is_a_usage_error(port: str) -> None:
    """A --json-port endpoint that cannot be parsed is refused at start, naming the option."""
    with pytest.raises(UsageError, match="invalid --json-port"):
        parse("--json-port", port)


def test_tls_cert_and_key_fill_in_ssl_json_ports(tmp_path: Path) -> None:
    """--tls-cert/--tls-key complete an ssl: --json-port as they do an ssl: --port, and one
    is enough for them to be used."""
    cert, key = make_certificate(tmp_path)
    options = parse(
        "--json-port",
        "ssl:4443",
        "--port",
        "ssl:4444",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    files = f"certKey={cert}:privateKey={key}"
    assert options["json-ports"] == [f"ssl:4443:{files}"]
    assert options["ports"] == [f"ssl:4444:{files}"]
    options = parse("--json-port", "ssl:4443", "--tls-cert", str(cert), "--tls-key", str(key))
    assert options["json-ports"] == [f"ssl:4443:{files}"]
    with pytest.raises(UsageError, match="invalid --json-port"):
        parse("--json-port", "ssl:4443")


def test_json_port_in_the_config_file(tmp_path: Path) -> None:
    """The config file takes json-port like port: a string or an array."""
    path = tmp_path / "chatd.toml"
    path.write_text('json-port = ["4001", "unix:/tmp/bots.sock"]\n', encoding="utf-8")
    assert parse("--config", str(path))["json-ports"] == [
        "tcp:4001:interface=127.0.0.1",
        "unix:/tmp/bots.sock",
    ]


def test_web_and_web_origin() -> None:
    """--web takes an endpoint; --web-origin whole sites only, repeatable."""
    options = parse("--web", "8080", "--web-origin", "https://chat.example.org")
    assert options["web"] == "tcp:8080:interface=127.0.0.1"
    assert options["web-origins"] == ["https://chat.example.org"]
    assert parse()["web"] is None
    for bad in ("chat.example.org", "https://chat.example.org/page", "ftp://x.org"):
        with pytest.raises(UsageError, match="invalid --web-origin"):
            parse("--web-origin", bad)


def test_web_origin_check() -> None:
    """The page's own site (as the browser named it) and listed origins only."""
    from chatd.fronts.web import ChatWebSocketFactory

    factory = ChatWebSocketFactory(makeService(parse()).sessions, ["https://Chat.Example.org/"])
    assert factory.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert factory.origin_allowed("https://chat.example.org", "10.0.0.1:8080")
    assert not factory.origin_allowed("http://evil.example", "127.0.0.1:8080")
    assert not factory.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080")


def test_redis_makes_a_cluster_node_with_its_store_in_redis() -> None:
    """--redis builds a hub in a cluster, a Redis store and the cluster link; nothing
    connects yet."""
    from chatd.stores.redis import RedisStore

    service = makeService(parse("--redis", "redis://:secret@127.0.0.1:6390/2"))
    assert isinstance(service.store, RedisStore)
    assert service.cluster is not None
    assert service.sessions.hub.listener is service.cluster.bus
    assert service.sessions.hub.directory is service.cluster.roster
    address = service.cluster.link.address
    assert (address.host, address.port, address.db, address.password) == (
        "127.0.0.1",
        6390,
        2,
        "secret",
    )
    assert "secret" not in str(address)
    assert not service.cluster.link.up


def test_without_redis_chatd_is_a_single_server() -> None:
    """No --redis: the plain hub and the SQLite store, and no cluster."""
    from chatd.hub import Hub
    from chatd.stores.sqlite import SQLiteStore

    service = makeService(parse())
    assert type(service.sessions.hub) is Hub
    assert isinstance(service.store, SQLiteStore)
    assert service.cluster is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/0",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:6379/0?timeout=5",
    ],
)
def test_a_bad_redis_url_is_refused(url: str) -> None:
    """Anything but redis://[:password@]host[:port][/db] is a usage error."""
    with pytest.raises(UsageError):
        parse("--redis", url)


def test_checking_redis_options_imports_no_reactor() -> None:
    """Parsing --redis does not import txredisapi (which would install the reactor)."""
    import subprocess
    import sys

    code = (
        "import sys; from chatd.tap import Options; "
        "Options().parseOptions(['--redis', 'redis://127.0.0.1/0']); "
        "print('txredisapi' in sys.modules, 'twisted.internet.reactor' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_ssh_makes_the_data_directory_private(tmp_path: Path) -> None:
    """With --ssh the data directory, made for the host key, is 0700 and the key 0600."""
    data_dir = tmp_path / "chatd-data"
    previous = os.umask(0o022)  # the usual umask, which would make it world-readable
    try:
        makeService(parse("--ssh", "tcp:0:interface=127.0.0.1", "--data-dir", str(data_dir)))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    (key,) = data_dir.iterdir()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_the_default_data_directory_is_ignored_by_git() -> None:
    """A chatd-data/ made by running chatd in a checkout is never committed by accident."""
    result = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", "chatd-data/chatd.sqlite3"],
        cwd=Path(__file__).resolve().parents[1],
        timeout=30,
    )
    assert result.returncode == 0
