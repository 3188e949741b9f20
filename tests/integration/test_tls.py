"""TLS on the web port through the accept-time admission wrapper, as browsers speak it."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from tests.daemon import start_chatd
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
