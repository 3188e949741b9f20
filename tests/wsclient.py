"""A small blocking WebSocket client for tests (RFC 6455: handshake, masked frames).

The framing helpers (``upgrade_request``, ``client_frame``, ``split_frames``) are
shared with the in-memory tests, which feed the same bytes to the server directly.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10


class WebSocketRefused(Exception):
    """The server answered the upgrade with something other than 101."""


def upgrade_request(host: str, origin: str | None = None, path: str = "/ws") -> bytes:
    """The request that asks for a WebSocket, as a browser (with an origin) or a bot sends it."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        headers.append(f"Origin: {origin}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One frame as a client must send it (masked)."""
    mask = os.urandom(4)
    header = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete (unmasked, server-sent) frames at the start of ``data``, and the rest."""
    frames = []
    while len(data) >= 2:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            if len(data) < 4:
                break
            (length,), start = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            if len(data) < 10:
                break
            (length,), start = struct.unpack("!Q", data[2:10]), 10
        if len(data) < start + length:
            break
        frames.append((data[0] & 0x0F, data[start : start + length]))
        data = data[start + length :]
    return frames, data


class WebSocketClient:
    def __init__(
        self,
        port: int,
        origin: str | None = None,
        timeout: float = 10.0,
        host: str | None = None,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(upgrade_request(host or f"127.0.0.1:{port}", origin))
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketRefused(self.buffer.decode(errors="replace"))
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise WebSocketRefused(head.decode(errors="replace"))
        self.events: list[dict[str, Any]] = []
        self._unread = 0  # events before this index were matched or passed over

    def send(self, text: str) -> None:
        self.send_frame(TEXT, text.encode())

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.sock.sendall(client_frame(opcode, payload, fin))

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The next event that matches ``predicate`` (all are kept in .events)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._unread < len(self.events):
                event = self.events[self._unread]
                self._unread += 1
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching event; got {self.events}")
            opcode, payload = self.frame()
            if opcode == CLOSE:
                raise ConnectionError(f"closed by the server: {payload!r}")
            if opcode == TEXT:
                self.events.extend(json.loads(line) for line in payload.decode().splitlines())

    def close(self) -> None:
        self.sock.close()
