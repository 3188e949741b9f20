"""Integration tests: the real ``twistd -n chatd`` on loopback, driven by raw sockets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.daemon import Daemon, read_until, start_chatd, venv_script
from tests.tls import make_certificate
from tests.wsclient import WebSocketClient, WebSocketRefused

REPO = Path(__file__).resolve().parents[2]


def join(daemon: Daemon, alias: str) -> socket.socket:
    client = daemon.connect()
    read_until(client, b"Choose an alias")
    client.sendall(alias.encode() + b"\r\n")
    read_until(client, b"Type /help for commands.\r\n")
    return client


def read_to_eof(client: socket.socket, timeout: float = 10.0) -> bytes:
    client.settimeout(timeout)
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def test_clients_chat_through_the_daemon(chatd: Daemon) -> None:
    """Several socket clients join, chat, whisper and quit through a real daemon."""
    alice = join(chatd, "alice")
    bob = join(chatd, "bob")
    carol = join(chatd, "carol")
    read_until(alice, b"carol has joined #lobby (3 here)\r\n")
    alice.sendall(b"hello everyone\n")
    assert b"<alice> hello everyone\r\n" in read_until(bob, b"<alice> hello everyone\r\n")
    read_until(carol, b"<alice> hello everyone\r\n")
    bob.sendall(b"/msg carol just you\r\n")
    read_until(carol, b"*bob* just you\r\n")
    carol.sendall(b"/quit later\r\n")
    assert read_to_eof(carol).endswith(b"*** Goodbye.\r\n")
    read_until(alice, b"*** carol has left (Quit: later)\r\n")
    bob.shutdown(socket.SHUT_WR)
    read_to_eof(bob)
    read_until(alice, b"*** bob has left (Connection closed)\r\n")
    alice.close()


def test_sigterm_says_goodbye_and_exits_cleanly(chatd: Daemon) -> None:
    """SIGTERM tells every client, including one still choosing an alias, and exits 0."""
    alice = join(chatd, "alice")
    pending = chatd.connect()
    read_until(pending, b"Choose an alias")
    chatd.signal(signal.SIGTERM)
    assert read_to_eof(alice).endswith(b"*** Server shutting down.\r\n")
    assert read_to_eof(pending).endswith(b"*** Server shutting down.\r\n")
    assert chatd.wait(15) == 0
    assert "received SIGTERM, shutting down" in chatd.log_text()
    assert "Server Shut Down." in chatd.log_text()
    assert "Traceback" not in chatd.log_text()


def test_overlong_line_over_a_socket(tmp_path: Path) -> None:
    """A real client's overlong line is refused and the connection keeps working."""
    daemon = start_chatd(tmp_path, "--max-line-bytes", "100")
    try:
        alice = join(daemon, "alice")
        bob = join(daemon, "bob")
        alice.sendall(b"y" * 5000 + b"\nstill here\n")
        read_until(alice, b"!!! Line too long (over 100 bytes); dropped.\r\n")
        read_until(bob, b"<alice> still here\r\n")
    finally:
        daemon.stop()


def test_stalled_reader_is_cut_off_while_others_get_everything(tmp_path: Path) -> None:
    """A client that never reads is disconnected; a reading client receives every line."""
    # Flood control off: the sender pastes 10,000 lines as fast as it can.
    daemon = start_chatd(tmp_path, "--sendq-bytes", "65536", "--flood-rate", "0")
    try:
        stalled = daemon.connect()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        read_until(stalled, b"Choose an alias")
        stalled.sendall(b"stalled\n")
        reader = join(daemon, "reader")
        sender = join(daemon, "sender")
        payload = b"p" * 1000
        received = b""
        # Sent in batches the reader keeps up with, so only the stalled client backs up.
        for batch in range(100):
            sender.sendall(
                b"".join(b"%05d " % (batch * 100 + n) + payload + b"\n" for n in range(100))
            )
            received += read_until(reader, b"<sender> %05d " % (batch * 100 + 99), timeout=30)
        lines = [line for line in received.split(b"\r\n") if line.startswith(b"<sender>")]
        assert lines == [b"<sender> %05d " % n + payload for n in range(10_000)]
        assert b"*** stalled has left (Send queue exceeded)\r\n" in received
        assert "stalled) cut off: more than 65536 bytes waiting to be read" in daemon.log_text()
    finally:
        daemon.stop()


def test_listens_on_several_ports(tmp_path: Path) -> None:
    """Repeating --port listens on each, and clients on different ports share one chat."""
    daemon = start_chatd(tmp_path, "--port", "tcp:0:interface=127.0.0.1")
    try:
        ports = daemon.wait_for_ports(2)
        alice = join(daemon, "alice")
        bob = socket.create_connection(("127.0.0.1", ports[1]), timeout=10)
        read_until(bob, b"Choose an alias")
        bob.sendall(b"bob\n")
        read_until(bob, b"Type /help")
        bob.sendall(b"over here\n")
        read_until(alice, b"<bob> over here\r\n")
    finally:
        daemon.stop()


def test_tac_file_runs_the_same_service(tmp_path: Path) -> None:
    """``twistd -n -y etc/chatd.tac`` serves chat, taking options from CHATD_OPTIONS."""
    daemon = Daemon(
        [venv_script("twistd"), "--pidfile=", "-n", "-y", str(REPO / "etc" / "chatd.tac")],
        cwd=tmp_path,
        env={"CHATD_OPTIONS": "--port tcp:0:interface=127.0.0.1 --alias-timeout 1"},
    )
    try:
        alice = join(daemon, "alice")
        idle = daemon.connect()
        assert read_to_eof(idle).endswith(b"!!! No alias chosen within 1 seconds; goodbye.\r\n")
        alice.sendall(b"/who\n")
        read_until(alice, b"*** In #lobby (1): alice\r\n")
    finally:
        daemon.stop()


def test_a_bad_option_in_chatd_options_stops_the_tac_with_one_line(tmp_path: Path) -> None:
    """etc/chatd.tac refuses a bad CHATD_OPTIONS as twistd chatd does: one line, status 1."""
    done = subprocess.run(
        [venv_script("twistd"), "--pidfile=", "-n", "-y", str(REPO / "etc" / "chatd.tac")],
        cwd=tmp_path,
        env={**os.environ, "CHATD_OPTIONS": "--max-per-ip lots"},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    output = (done.stdout + done.stderr).decode()
    assert output.strip() == "chatd.tac: CHATD_OPTIONS: --max-per-ip: not a whole number: lots"


def test_history_and_topics_survive_a_restart(tmp_path: Path) -> None:
    """Lines and topics said before a stop are replayed after a start on the same data."""
    daemon = start_chatd(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        alice = join(daemon, "alice")
        alice.sendall(b"/topic remembered\nsaid before the restart\n/me leaves a mark\n")
        read_until(alice, b"*** alice set the topic: remembered\r\n")
    finally:
        daemon.stop()
    daemon = start_chatd(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        bob = daemon.connect()
        read_until(bob, b"Choose an alias")
        bob.sendall(b"bob\n")
        seen = read_until(bob, b"*** End of history.\r\n")
        assert b"*** Topic: remembered\r\n" in seen
        assert b"Z] <alice> said before the restart\r\n" in seen
        assert b"Z] * alice leaves a mark\r\n" in seen
    finally:
        daemon.stop()


def test_history_is_on_disk_within_a_second_of_a_kill(tmp_path: Path) -> None:
    """A line relayed more than a second before SIGKILL is in the history after restart."""
    daemon = start_chatd(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        alice = join(daemon, "alice")
        bob = join(daemon, "bob")
        alice.sendall(b"durable line\n")
        read_until(bob, b"<alice> durable line\r\n")
        time.sleep(1.0)  # the documented bound: on disk within one second
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        daemon.stop()
    daemon = start_chatd(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        carol = daemon.connect()
        read_until(carol, b"Choose an alias")
        carol.sendall(b"carol\n")
        assert b"<alice> durable line\r\n" in read_until(carol, b"*** End of history.\r\n")
    finally:
        daemon.stop()


def test_registrations_bans_and_motd_survive_a_restart(tmp_path: Path) -> None:
    """A registration, an operator's ban and MOTD are all there after a real restart."""
    from chatd.passwords import hash_password_now

    options = (
        "--data-dir",
        str(tmp_path / "data"),
        "--oper",
        f"root:{hash_password_now('oper-pass')}",
    )
    daemon = start_chatd(tmp_path, *options)
    try:
        alice = join(daemon, "alice")
        alice.sendall(b"/register alice-pass\n")
        read_until(alice, b"*** Registered alice: from now on it takes this password to use it.")
        alice.sendall(b"/oper root oper-pass\n")
        read_until(alice, b"*** You are now an operator (root).\r\n")
        alice.sendall(b"/ban troll trolling\n/motd Welcome back\n")
        read_until(alice, b"*** Welcome back\r\n")
    finally:
        daemon.stop()
    daemon = start_chatd(tmp_path, *options)
    try:
        troll = daemon.connect()
        read_until(troll, b"Choose an alias")
        troll.sendall(b"troll\n")
        assert read_to_eof(troll).endswith(b"!!! You are banned from this server: trolling\r\n")
        alice = daemon.connect()
        read_until(alice, b"Choose an alias")
        alice.sendall(b"alice\n")
        read_until(alice, b"*** alice is registered. Password:\r\n")
        alice.sendall(b"wrong-pass\n")
        read_until(alice, b"!!! Wrong password for alice.\r\n")
        alice.sendall(b"alice\nalice-pass\n")
        seen = read_until(alice, b"*** Welcome back\r\n")
        assert b"*** Welcome, alice!" in seen
    finally:
        daemon.stop()


def test_a_port_in_use_stops_twistd_with_an_error(tmp_path: Path) -> None:
    """A port that cannot be bound ends twistd at once, exit 1, with one line and no traceback."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [venv_script("twistd"), "-n", "chatd", "--port", str(port)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
    finally:
        taken.close()
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 1, output
    (refusal,) = [line for line in output.splitlines() if "Address already in use" in line]
    assert f"cannot listen on tcp:{port}:interface=127.0.0.1: Couldn't listen on" in refusal
    assert "Traceback" not in output
    assert "stderr#error" not in output, output  # nothing printed after the line
    assert not (tmp_path / "twistd.pid").exists()  # no stale pidfile for the next start


@pytest.mark.parametrize(
    ("argument", "line"),
    [
        ("--config={config}", "twistd chatd: {config}: unknown key 'alias-timout'"),
        ("--max-per-ip=lots", "twistd chatd: --max-per-ip: not a whole number: lots"),
    ],
)
def test_a_refused_option_stops_twistd_with_one_line(
    tmp_path: Path, argument: str, line: str
) -> None:
    """A bad config key or option value prints one line saying which, and exits 1."""
    config = tmp_path / "chatd.toml"
    config.write_text("alias-timout = 30\n", encoding="utf-8")
    result = subprocess.run(
        [venv_script("twistd"), "--pidfile=", "-n", "chatd", argument.format(config=config)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (1, "")
    (printed,) = result.stderr.splitlines()
    assert printed.startswith(line.format(config=config))


def test_a_paste_is_slowed_not_cut_and_extra_connections_are_refused(tmp_path: Path) -> None:
    """Over real sockets: flood control delays a paste whole; --max-per-ip refuses with a line."""
    daemon = start_chatd(tmp_path, "--flood-burst", "5", "--flood-rate", "20", "--max-per-ip", "2")
    try:
        reader = join(daemon, "reader")
        paster = join(daemon, "paster")
        refused = daemon.connect()
        assert read_to_eof(refused) == b"!!! Too many connections from 127.0.0.1 (at most 2).\r\n"
        refused.close()
        started = time.monotonic()
        paster.sendall(b"".join(b"line %02d\n" % n for n in range(30)))
        received = read_until(reader, b"<paster> line 29\r\n", timeout=20)
        elapsed = time.monotonic() - started
        lines = [line for line in received.split(b"\r\n") if line.startswith(b"<paster>")]
        assert lines == [b"<paster> line %02d" % n for n in range(30)]
        assert elapsed >= 0.9  # 25 lines past the burst at 20 a second
        assert "refused 127.0.0.1:" in daemon.log_text()
    finally:
        daemon.stop()


def wait_for_log(daemon: Daemon, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.log_text():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{daemon.log_text()}"
        time.sleep(0.05)


def test_sighup_reloads_the_motd_and_config_without_dropping_anyone(tmp_path: Path) -> None:
    """SIGHUP re-reads --motd and --config; a bad file is refused and changes nothing."""
    motd = tmp_path / "motd.txt"
    motd.write_text("first message\n", encoding="utf-8")
    config = tmp_path / "chatd.toml"
    config.write_text("max-per-ip = 5\n", encoding="utf-8")
    daemon = start_chatd(tmp_path, "--motd", str(motd), "--config", str(config))
    try:
        alice = daemon.connect()
        alice.sendall(b"alice\n")
        assert b"first message" in read_until(alice, b"first message")
        motd.write_text("second message\n", encoding="utf-8")
        config.write_text("max-per-ip = 2\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        wait_for_log(daemon, "reloaded:")
        bob = daemon.connect()
        bob.sendall(b"bob\n")
        read_until(bob, b"second message")
        refused = daemon.connect()  # the third from 127.0.0.1, past the new limit
        assert read_to_eof(refused) == b"!!! Too many connections from 127.0.0.1 (at most 2).\r\n"
        config.write_text("max-per-ip = -1\n", encoding="utf-8")
        daemon.signal(signal.SIGHUP)
        wait_for_log(daemon, "reload refused, settings unchanged")
        alice.sendall(b"still here\n")
        assert b"<alice> still here" in read_until(bob, b"<alice> still here")
    finally:
        daemon.stop()


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    """With --log-format json every line twistd writes is a JSON object."""
    daemon = start_chatd(tmp_path, "--log-format", "json")
    try:
        join(daemon, "alice").close()
        wait_for_log(daemon, "alice left")
    finally:
        daemon.stop()
    records = [json.loads(line) for line in daemon.log_text().splitlines()]
    joined = [r for r in records if r.get("alias") == "alice" and "joined" in r["message"]]
    assert joined and joined[0]["level"] == "info" and joined[0]["peer"].startswith("127.0.0.1:")


def test_metrics_endpoint_is_scraped_over_http(tmp_path: Path) -> None:
    """--metrics serves the Prometheus text format over real HTTP."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    metrics_port = probe.getsockname()[1]
    probe.close()
    daemon = start_chatd(tmp_path, "--metrics", f"tcp:{metrics_port}:interface=127.0.0.1")
    try:
        alice = join(daemon, "alice")
        bob = join(daemon, "bob")
        alice.sendall(b"hello\n")
        read_until(bob, b"<alice> hello")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
    finally:
        daemon.stop()
    assert "chatd_users 2.0" in text
    assert "chatd_lines_received_total" in text
    assert "GET /metrics" not in daemon.log_text()  # scrapes are not logged


def test_kill_9_under_load_loses_nothing_older_than_a_second(tmp_path: Path) -> None:
    """SIGKILL in the middle of a flood of lines leaves a consistent database holding every
    line relayed more than a second before the kill, and every registration, ban and MOTD."""
    from chatd.moderation import MOTD_SETTING
    from chatd.passwords import hash_password_now

    data = tmp_path / "data"
    daemon = start_chatd(
        tmp_path,
        *("--data-dir", str(data), "--flood-rate", "0", "--history-keep", "1000000"),
        *("--oper", f"root:{hash_password_now('oper-pass')}"),
    )
    received: list[tuple[float, int]] = []
    stop = threading.Event()

    def send(client: socket.socket) -> None:
        n = 0
        with contextlib.suppress(OSError):
            while not stop.is_set():
                client.sendall(b"".join(b"line %07d\n" % i for i in range(n, n + 50)))
                n += 50
                time.sleep(0.005)

    def read(client: socket.socket) -> None:
        pending = b""
        client.settimeout(30)
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                lines = (pending + chunk).split(b"\r\n")
                pending = lines.pop()
                now = time.monotonic()
                received.extend(
                    (now, int(line[14:])) for line in lines if line.startswith(b"<sender>")
                )

    try:
        reader, sender, keeper = (join(daemon, alias) for alias in ("reader", "sender", "keeper"))
        threads = [
            threading.Thread(target=send, args=(sender,)),
            threading.Thread(target=read, args=(reader,)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        # One password command at a time: the second waits for the first's answer.
        keeper.sendall(b"/register keeper-pass\n")
        read_until(keeper, b"*** Registered keeper")
        keeper.sendall(b"/oper root oper-pass\n")
        read_until(keeper, b"*** You are now an operator (root).\r\n")
        keeper.sendall(b"/ban troll trolling\n/motd Under load\n")
        read_until(keeper, b"*** Under load\r\n")
        time.sleep(1.5)
        killed_at = time.monotonic()
        daemon.signal(signal.SIGKILL)
        daemon.wait(10)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        daemon.stop()
    must_be_kept = {n for at, n in received if at < killed_at - 1.0}
    assert len(must_be_kept) > 1000
    db = sqlite3.connect(data / "chatd.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {
            int(text[5:])
            for (text,) in db.execute("SELECT text FROM history WHERE alias = 'sender'")
        }
        assert must_be_kept <= stored
        assert db.execute("SELECT alias FROM accounts").fetchall() == [("keeper",)]
        assert db.execute("SELECT mask, reason FROM bans").fetchall() == [("troll", "trolling")]
        assert db.execute(
            "SELECT value FROM settings WHERE key = ?", (MOTD_SETTING,)
        ).fetchone() == ("Under load",)
    finally:
        db.close()


def test_connection_cap_and_rate_refuse_with_a_line(tmp_path: Path) -> None:
    """--max-conns and --max-conn-rate over real sockets: one line, then the close."""
    daemon = start_chatd(tmp_path, "--max-conns", "2", "--max-conn-rate", "3")
    try:
        first, second = daemon.connect(), daemon.connect()
        read_until(first, b"Choose an alias")
        read_until(second, b"Choose an alias")
        full = daemon.connect()
        assert read_to_eof(full) == b"!!! Server full: too many connections; try again later.\r\n"
        first.close()
        second.close()
        time.sleep(0.2)  # the server sees both closes
        fourth = daemon.connect()  # a free slot, and the third admitted this minute...
        read_until(fourth, b"Choose an alias")
        fourth.close()
        time.sleep(0.2)
        too_fast = daemon.connect()  # ...so a fourth is too fast (refusals take no token)
        assert read_to_eof(too_fast) == (
            b"!!! Too many new connections from 127.0.0.1; wait a minute.\r\n"
        )
    finally:
        daemon.stop()


def test_silent_clients_are_cut_off_by_the_alias_and_idle_timeouts(tmp_path: Path) -> None:
    """--alias-timeout and --idle-timeout over real sockets, each with its line and reason."""
    daemon = start_chatd(tmp_path, "--alias-timeout", "1", "--idle-timeout", "2")
    try:
        silent = daemon.connect()
        assert read_to_eof(silent).endswith(b"!!! No alias chosen within 1 seconds; goodbye.\r\n")
        idle = join(daemon, "idle")
        watcher = join(daemon, "watcher")
        started = time.monotonic()
        while time.monotonic() - started < 4:  # the watcher keeps itself alive
            watcher.sendall(b"\n")
            time.sleep(0.5)
        assert read_to_eof(idle).endswith(b"!!! Idle for more than 2 seconds; goodbye.\r\n")
        assert b"*** idle has left (Idle timeout)\r\n" in read_until(watcher, b"(Idle timeout)")
    finally:
        daemon.stop()


def test_a_tls_client_chats_with_a_plain_one(tmp_path: Path) -> None:
    """--port ssl:0 with --tls-cert/--tls-key: a TLS client and a TCP client share the room."""
    cert, key = make_certificate(tmp_path)
    daemon = start_chatd(
        tmp_path,
        *("--port", "ssl:0:interface=127.0.0.1", "--tls-cert", str(cert), "--tls-key", str(key)),
    )
    try:
        _plain_port, tls_port = daemon.wait_for_ports(2)
        context = ssl.create_default_context(cafile=str(cert))
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=10)
        secure = context.wrap_socket(raw, server_hostname="localhost")
        read_until(secure, b"Choose an alias")
        secure.sendall(b"alice\n")
        read_until(secure, b"Type /help for commands.\r\n")
        plain = join(daemon, "bob")
        secure.sendall(b"over TLS\n")
        assert b"<alice> over TLS\r\n" in read_until(plain, b"<alice> over TLS\r\n")
        plain.sendall(b"in the clear\n")
        assert b"<bob> in the clear\r\n" in read_until(secure, b"<bob> in the clear\r\n")
        assert secure.version() in ("TLSv1.2", "TLSv1.3")
        secure.close()
    finally:
        daemon.stop()


def test_websocket_clients_and_line_clients_share_a_room(tmp_path: Path) -> None:
    """--web: a JSON WebSocket client and a telnet-style client chat, with the same rules."""
    daemon = start_chatd(tmp_path, "--web", "tcp:0:interface=127.0.0.1")
    try:
        _, web_port = daemon.wait_for_ports(2)
        web = WebSocketClient(web_port, origin=f"http://127.0.0.1:{web_port}")
        assert web.until(lambda e: e["type"] == "notice")["text"].startswith("Welcome to chatd")
        web.send("bad alias!")
        assert web.until(lambda e: e["type"] == "error")["text"].startswith("Invalid alias")
        web.send("webby")
        welcome = web.until(lambda e: e["type"] == "room")
        assert welcome["welcome"] == "webby" and welcome["room"] == "#lobby"
        line = join(daemon, "liner")
        assert web.until(lambda e: e["type"] == "join") == {
            "type": "join", "alias": "liner", "room": "#lobby", "present": 2, "came_from": None
        }  # fmt: skip
        web.send("hello <b>line</b>\n/me waves")
        read_until(line, b"<webby> hello <b>line</b>\r\n* webby waves\r\n")
        line.sendall(b"hi web\n")
        assert web.until(lambda e: e["type"] == "message") == {
            "type": "message", "sender": "liner", "text": "hi web"
        }  # fmt: skip
        web.send("/who")
        assert web.until(lambda e: e["type"] == "who")["names"] == ["liner", "webby"]
        web.close()
        assert b"*** webby has left" in read_until(line, b"*** webby has left")
        for foreign in ("http://evil.example", "null"):
            with pytest.raises(WebSocketRefused, match=r"HTTP/1\.1 40[03] "):
                WebSocketClient(web_port, origin=foreign)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=10) as page:
            assert b"<title>chatd</title>" in page.read()
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    finally:
        daemon.stop()


def test_websocket_lines_meet_the_line_protocols_limits(tmp_path: Path) -> None:
    """Over the WebSocket too: an overlong line is refused, a flood is cut off."""
    daemon = start_chatd(
        tmp_path,
        *("--web", "tcp:0:interface=127.0.0.1", "--max-line-bytes", "100"),
        *("--flood-burst", "2", "--flood-rate", "1", "--flood-queue", "3"),
    )
    try:
        _, web_port = daemon.wait_for_ports(2)
        web = WebSocketClient(web_port)  # no Origin: a bot
        web.send("bot")
        web.until(lambda e: e["type"] == "room")
        web.send("x" * 101)
        assert web.until(lambda e: e["type"] == "error")["text"] == (
            "Line too long (over 100 bytes); dropped."
        )
        web.send("\n".join(f"flood {n}" for n in range(10)))
        assert web.until(lambda e: e["type"] == "error")["text"].startswith(
            "You are sending too fast"
        )
        assert web.until(lambda e: e["type"] == "error")["text"] == "Excess flood; goodbye."
        wait_for_log(daemon, "(bot) cut off: excess flood")
    finally:
        daemon.stop()


def test_megabytes_sent_during_a_password_check_are_cut_off_at_the_bound(
    tmp_path: Path,
) -> None:
    """A client that sends megabytes of lines right after a password is cut off as a flood
    while the check runs: none of it becomes an alias or chat, and the server reads on."""
    daemon = start_chatd(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        alice = join(daemon, "alice")
        alice.sendall(b"/register alice-pass\n")
        read_until(alice, b"*** Registered alice: from now on it takes this password to use it.")
        alice.sendall(b"/quit\n")
        read_to_eof(alice)
        bob = join(daemon, "bob")
        flooder = daemon.connect()
        read_until(flooder, b"Choose an alias")
        flooder.sendall(b"alice\n")
        read_until(flooder, b"*** alice is registered. Password:\r\n")

        def flood() -> None:
            with contextlib.suppress(OSError):  # the server closes mid-send
                flooder.sendall(b"wrong-pass\n" + b"spammer\n" * (4 * 1024 * 1024 // 8))

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        with contextlib.suppress(ConnectionResetError):
            assert read_to_eof(flooder).endswith(b"!!! Excess flood; goodbye.\r\n")
        sender.join(10)
        bob.sendall(b"/who *\n")
        seen = read_until(bob, b"*** Online (1): bob\r\n")
        assert b"spammer" not in seen
    finally:
        daemon.stop()
