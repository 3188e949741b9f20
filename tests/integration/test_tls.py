"""TLS on the web port through the accept-time admission wrapper, as browsers speak it."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from chatd.session import CLOSE_GRACE_SECONDS
from tests.daemon import read_until, start_chatd
from tests.tls import make_certificate


def test_a_browser_like_tls_client_offering_alpn_gets_the_web_page(tmp_path: Path) -> None:
    """--web ssl: negotiates http/1.1 over ALPN (browsers always offer it) and serves the page."""
    cert, key = make_certificate(tmp_path)
    web = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    daemon = start_chatd(tmp_path, "--web", web)
    try:
        _, web_port = daemon.wait_for_ports(2)
        context = ssl.create_default_context(cafile=str(cert))
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", web_port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as secure:
            assert secure.selected_alpn_protocol() == "http/1.1"
            secure.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := secure.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"<html" in answer.lower()
    finally:
        daemon.stop()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_silent_connections_to_a_tls_port_cannot_pile_up(tmp_path: Path) -> None:
    """TCP connections that never start TLS: refused ones close at once, admitted ones
    after the alias timeout and the close's grace period, so descriptors come back."""
    cert, key = make_certificate(tmp_path)
    tls = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    daemon = start_chatd(
        tmp_path,
        "--port",
        tls,
        "--max-per-ip",
        "3",
        "--max-conn-rate",
        "0",
        "--alias-timeout",
        "1",
    )
    try:
        plain_port, tls_port = daemon.wait_for_ports(2)
        # Once a chat has gone through, the store and its threads hold their descriptors.
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as probe:
            read_until(probe, b"Choose an alias")
            probe.sendall(b"probe\n/quit\n")
            read_until(probe, b"Goodbye.")
        baseline = open_fds(daemon.process.pid) + 1  # the probe's, if not yet closed
        silent = [socket.create_connection(("127.0.0.1", tls_port)) for _ in range(40)]
        admitted = silent[:3]
        assert all(closed_within(sock, 5) for sock in silent[3:])
        assert open_fds(daemon.process.pid) <= baseline + 3 + 2
        assert all(closed_within(sock, 1 + CLOSE_GRACE_SECONDS + 10) for sock in admitted)
        assert open_fds(daemon.process.pid) <= baseline + 1
        for sock in silent:
            sock.close()
    finally:
        daemon.stop()
