"""What a hostile browser or HTTP client can do to the --web and --metrics ports, on a real daemon.

Each test starts ``twistd -n chatd`` with the web page and the metrics endpoint
on loopback ports and talks to them with raw sockets or tests/wsclient.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, read_until, start_chatd
from tests.test_web import fuzz_requests
from tests.wsclient import WebSocketClient

# Two bytes of JSON per quote: ten lines of these are about 40 KiB of JSON.
QUOTES = b'"' * 2040


class Ports:
    """The daemon and its three ports: line protocol, web page, metrics."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.line, self.web, self.metrics = daemon.wait_for_ports(3)


def start(tmp_path: Path, *options: str) -> Ports:
    daemon = start_chatd(
        tmp_path,
        *("--web", "tcp:0:interface=127.0.0.1", "--metrics", "tcp:0:interface=127.0.0.1"),
        *("--data-dir", str(tmp_path / "data")),
        *options,
    )
    return Ports(daemon)


@pytest.fixture
def ports(tmp_path: Path) -> Iterator[Ports]:
    started = start(tmp_path)
    try:
        yield started
    finally:
        started.daemon.stop()


def line_user(ports: Ports, alias: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", ports.line), timeout=10)
    read_until(client, b"Choose an alias")
    client.sendall(alias.encode() + b"\n")
    read_until(client, b"Type /help for commands.\r\n")
    return client


def web_user(ports: Ports, alias: str) -> WebSocketClient:
    web = WebSocketClient(ports.web, origin=f"http://127.0.0.1:{ports.web}")
    web.send(alias)
    web.until(lambda e: e["type"] == "room")
    return web


def http(port: int, request: bytes, timeout: float = 15.0) -> bytes:
    """Send ``request`` and read until the server closes (or answers and idles)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(request)
        received = b""
        try:
            while chunk := client.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def assert_log_clean(daemon: Daemon) -> None:
    log = daemon.log_text()
    assert "Traceback" not in log and "#critical]" not in log and "#error]" not in log, log


def test_a_burst_of_long_lines_does_not_silence_a_web_user(ports: Ports) -> None:
    """Three line users' bursts of quotes in one turn reach the web user, who stays and chats."""
    web = web_user(ports, "webby")
    liners = [line_user(ports, alias) for alias in ("ann", "ben", "cat")]
    for _ in liners:
        web.until(lambda e: e["type"] == "join")
    burst = b"".join(QUOTES + b"\n" for _ in range(10))
    for liner in liners:
        liner.sendall(burst)
    for _ in range(30):
        assert web.until(lambda e: e["type"] == "message")["text"] == QUOTES.decode()
    web.send("still here")
    read_until(liners[0], b"<webby> still here\r\n")
    assert_log_clean(ports.daemon)


def test_long_lines_in_history_do_not_drop_web_users_even_after_a_restart(tmp_path: Path) -> None:
    """Twenty-five lines of quotes in history: a web user joins, /history 100 and /join work."""
    ports = start(tmp_path, "--flood-rate", "0", "--history-replay", "100")
    try:
        poster = line_user(ports, "poster")
        poster.sendall(b"".join(QUOTES + b"\n" for _ in range(25)) + b"/quit\n")
        read_until(poster, b"Goodbye")
        time.sleep(1.0)  # the store writes history every half second
    finally:
        ports.daemon.stop()
    ports = start(tmp_path, "--flood-rate", "0", "--history-replay", "100")
    try:
        for _ in range(2):  # the second is the page reconnecting, as it would
            web = WebSocketClient(ports.web, origin=f"http://127.0.0.1:{ports.web}")
            web.send("reader")
            replay = web.until(lambda e: e["type"] == "history")
            assert len(replay["entries"]) >= 20
            web.send("/history 100")
            assert len(web.until(lambda e: e["type"] == "history")["entries"]) == 25
            web.send("/join #elsewhere\n/join #lobby")
            assert web.until(lambda e: e["type"] == "history")["room"] == "#lobby"
            web.send("/who")
            assert web.until(lambda e: e["type"] == "who")["names"] == ["reader"]
            web.close()
            time.sleep(0.2)
        assert_log_clean(ports.daemon)
    finally:
        ports.daemon.stop()


@pytest.mark.parametrize("port_name", ["web", "metrics"])
def test_a_request_body_is_refused_before_it_is_sent(ports: Ports, port_name: str) -> None:
    """A POST announcing 300 MB is answered 405 and closed before a byte of the body is sent."""
    port = getattr(ports, port_name)
    answer = http(port, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    chunked = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert http(port, chunked).startswith(b"HTTP/1.1 405 ")


def test_an_http_slowloris_is_cut_off_at_the_head_deadline(ports: Ports) -> None:
    """A header a second for 9 s never completes a request head: both ports answer 408 at 10 s.

    The trickle stops before the deadline, so no byte crosses the close; the
    answer still comes well before an idle timeout counted from the last byte.
    """
    clients = []
    for port in (ports.web, ports.metrics):
        client = socket.create_connection(("127.0.0.1", port), timeout=20)
        client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        clients.append(client)
    started = time.monotonic()
    for _ in range(9):
        time.sleep(1)
        for client in clients:
            client.sendall(b"X-Slow: 1\r\n")
    for client in clients:
        assert read_until(client, b"\r\n\r\n", timeout=5).startswith(b"HTTP/1.1 408 ")
        client.settimeout(5)
        assert client.recv(1) == b""
        client.close()
    assert time.monotonic() - started < 12


def test_odd_requests_log_no_traceback_and_no_access_log(tmp_path: Path) -> None:
    """Hundreds of odd requests to both ports: each answered or closed, the log stays quiet."""
    ports = start(tmp_path, "--max-conn-rate", "0")  # hundreds of connections from one address
    try:
        fuzz_both_ports(ports)
    finally:
        ports.daemon.stop()


def fuzz_both_ports(ports: Ports) -> None:
    before = len(ports.daemon.log_text().splitlines())
    requests = list(fuzz_requests())
    for port in (ports.web, ports.metrics):
        for request in requests:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                try:
                    client.sendall(request)
                    client.shutdown(socket.SHUT_WR)  # no more: an incomplete head ends here
                    while client.recv(65536):
                        pass
                except OSError:  # closed (or reset) by the server already
                    pass
    web = web_user(ports, "survivor")  # the daemon still serves
    web.send("/who")
    assert web.until(lambda e: e["type"] == "who")["names"] == ["survivor"]
    assert_log_clean(ports.daemon)
    new_lines = ports.daemon.log_text().splitlines()[before:]
    assert len(new_lines) <= len(requests), "\n".join(new_lines)


def test_a_rebound_host_name_gets_neither_page_nor_websocket(ports: Ports) -> None:
    """DNS rebinding: evil.example resolving to this server is refused on the page and /ws."""
    host = f"evil.example:{ports.web}"
    page = http(ports.web, f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    assert page.startswith(b"HTTP/1.1 421 ")
    with pytest.raises(Exception, match=r"HTTP/1\.1 (403|421) "):
        WebSocketClient(ports.web, origin=f"http://{host}", host=host)
    own = http(ports.web, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert own.startswith(b"HTTP/1.1 200 ")


def test_closed_websockets_give_their_connection_slots_back(tmp_path: Path) -> None:
    """With --max-conns 2, WebSockets opened and closed one after another are all let in."""
    ports = start(tmp_path, "--max-conns", "2")
    try:
        for n in range(5):
            web = web_user(ports, f"visitor{n}")
            web.close()
            time.sleep(0.2)
    finally:
        ports.daemon.stop()


def test_a_websocket_that_stops_reading_is_cut_off_at_its_send_queue(tmp_path: Path) -> None:
    """A web user who never reads is cut off once its send queue passes --sendq-bytes."""
    ports = start(tmp_path, "--flood-rate", "0", "--sendq-bytes", "200000")
    try:
        stalled = WebSocketClient(ports.web)
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.send("stalled")
        talker = line_user(ports, "talker")
        line = b"x" * 2000 + b"\n"
        deadline = time.monotonic() + 20
        while "cut off: more than 200000 bytes waiting" not in ports.daemon.log_text():
            assert time.monotonic() < deadline, ports.daemon.log_text()
            talker.sendall(line * 50)
            talker.settimeout(0.05)
            try:
                while talker.recv(1 << 20):
                    pass
            except TimeoutError:
                pass
        assert "(stalled) cut off" in ports.daemon.log_text()
        assert_log_clean(ports.daemon)
    finally:
        ports.daemon.stop()
