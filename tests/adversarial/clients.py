"""What the adversarial suite drives the daemon with, and how it watches the daemon.

Honest users connect from 127.0.0.1; each attack comes from an address of its
own in 127.0.0.0/8 (all of it is loopback on Linux), so --max-per-ip counts
every attacker apart, as it would count strangers on the Internet, and an
attack that fills its address's quota cannot lock out the honest users.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.daemon import Daemon, read_until
from tests.wsclient import WebSocketClient

HONEST_SOURCE = "127.0.0.1"
JOIN_TIMEOUT_SECONDS = 15.0
TEXT, CLOSE, PING, PONG = 1, 8, 9, 10  # WebSocket opcodes
_LISTENING = re.compile(rb"\] (\w+) starting on (\d+)")


def connect_from(port: int, source: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the daemon's ``port`` on 127.0.0.1, from loopback address ``source``."""
    return socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))


def closes_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read ``sock`` until the peer closes it or ``seconds`` pass: (closed, what was read)."""
    deadline = time.monotonic() + seconds
    received = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:  # reset: the server aborted the connection
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


@dataclass(frozen=True)
class FrontEnds:
    """The port of each listener the daemon logged."""

    line: int
    web: int
    ssh: int
    metrics: int


def front_end_ports(daemon: Daemon) -> FrontEnds:
    """Which port is which, from the factory names in the daemon's "starting on" lines.

    The line front end's factory is LineFactory and SSH's a conch factory (ConchFactory,
    or chatd's own ...SSHFactory); both web sites are twisted.web sites (...Site),
    bound in the order chatd.tap adds them: --web, then --metrics.
    """
    daemon.wait_for_ports(4)
    started = [
        (name.decode(), int(port)) for name, port in _LISTENING.findall(bytes(daemon.output))
    ]
    line = [port for name, port in started if name == "LineFactory"]
    ssh = [port for name, port in started if "Conch" in name or "SSH" in name]
    sites = [port for name, port in started if name.endswith("Site")]
    assert len(line) == 1 and len(ssh) == 1 and len(sites) == 2, started
    return FrontEnds(line=line[0], web=sites[0], ssh=ssh[0], metrics=sites[1])


class LineClient:
    """A line-protocol user that has chosen its alias, with a thread keeping all it receives.

    It always reads, so the server never has a reason to cut it off.
    """

    def __init__(
        self, port: int, alias: str, source: str = HONEST_SOURCE, alias_line: bytes | None = None
    ) -> None:
        """Connect from ``source`` and take ``alias``, sending ``alias_line`` if given."""
        self.alias = alias
        self.sock = connect_from(port, source)
        read_until(self.sock, b"Choose an alias", JOIN_TIMEOUT_SECONDS)
        self.sock.sendall(alias.encode() + b"\n" if alias_line is None else alias_line)
        welcome = read_until(self.sock, b"Type /help for commands.\r\n", JOIN_TIMEOUT_SECONDS)
        self.sock.settimeout(None)
        self._received = bytearray(welcome)
        self._changed = threading.Condition()
        self.closed = False
        self._reader = threading.Thread(target=self._read, name=f"read-{alias}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                with self._changed:
                    self._received += chunk
                    self._changed.notify_all()
        except OSError:
            pass
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def received(self) -> bytes:
        """Everything received so far."""
        with self._changed:
            return bytes(self._received)

    def lines(self) -> list[bytes]:
        """The complete lines received so far, without their CRLF."""
        return self.received().split(b"\r\n")[:-1]

    def wait_until(self, done: Callable[[bytearray], bool], timeout: float) -> bool:
        """Wait until ``done(everything received)`` holds; False if it did not in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self._received):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return False
                self._changed.wait(remaining)
        return True

    def wait_for(self, marker: bytes, timeout: float = 15.0) -> bool:
        """Wait until ``marker`` has been received; False if it was not in time."""
        searched = 0

        def found(received: bytearray) -> bool:
            nonlocal searched
            start, searched = max(0, searched - len(marker)), len(received)
            return received.find(marker, start) >= 0

        return self.wait_until(found, timeout)

    def close(self) -> None:
        """Close from this side; the reader thread ends at the EOF."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self.sock.close()


class WebWatcher:
    """A WebSocket user that has chosen its alias, with a thread keeping every event."""

    def __init__(self, port: int, alias: str) -> None:
        self.client = WebSocketClient(port)
        self.client.send(alias)
        self.client.until(lambda e: e["type"] == "room", timeout=JOIN_TIMEOUT_SECONDS)
        self.client.sock.settimeout(None)
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = list(self.client.events)
        # Why the connection ended, if it ended before close() was called.
        self.lost: str | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read, name=f"ws-{alias}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                opcode, payload = self.client.frame()
                if opcode == CLOSE:
                    raise ConnectionError(f"closed by the server: {payload!r}")
                if opcode == PING:
                    self._pong(payload)
                if opcode == TEXT:
                    events = [json.loads(line) for line in payload.decode().splitlines()]
                    with self._lock:
                        self._events.extend(events)
        except (OSError, ValueError) as problem:
            if not self._closing:
                self.lost = repr(problem)

    def _pong(self, payload: bytes) -> None:
        """Answer the server's keep-alive ping, as browsers do (a ping carries <= 125 bytes)."""
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.client.sock.sendall(bytes([0x80 | PONG, 0x80 | len(masked)]) + mask + masked)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.client.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(10)
        self.client.close()


@dataclass
class Findings:
    """Every check of the run, passed or failed, so one run reports all of them at once."""

    results: list[tuple[str, bool, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        with self._lock:
            self.results.append((name, passed, detail))
        return passed

    def failures(self) -> list[str]:
        with self._lock:
            return [f"{name}: {detail}" for name, passed, detail in self.results if not passed]

    def report(self) -> str:
        with self._lock:
            return "\n".join(
                f"{'PASS' if passed else 'FAIL'} {name}" + (f" ({detail})" if detail else "")
                for name, passed, detail in self.results
            )


def status_kib(pid: int, field_name: str) -> int:
    """A memory figure of process ``pid`` from /proc/PID/status (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field_name:
                return int(value.split()[0])
    raise LookupError(f"{field_name} not in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def deleted_files(pid: int) -> list[str]:
    """Files process ``pid`` holds open that have no name: anonymous temporary files.

    twisted.web spools a request body of over 100 KB into one of these.
    """
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    # SQLite's own temporary files (etilqs_*) are not a request's.
    return [t for t in targets if t.endswith(" (deleted)") and "etilqs_" not in t]
