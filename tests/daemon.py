"""A real ``twistd -n chatd`` in a subprocess, for integration and end-to-end tests.

The daemon listens on ``tcp:0`` (a port the kernel picks, so tests never collide)
and the port is read from the line Twisted logs when it starts listening.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

STARTUP_TIMEOUT_SECONDS = 20.0
_LISTENING = re.compile(rb"starting on (\d+)")


def venv_script(name: str) -> str:
    """The path of a console script installed beside the running Python."""
    return str(Path(sys.executable).with_name(name))


class Daemon:
    """A running chatd process and what it has logged so far."""

    def __init__(self, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            list(args),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = bytearray()
        self._ports: list[int] = []
        self._port_seen = threading.Event()
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if not self._port_seen.wait(STARTUP_TIMEOUT_SECONDS):
            self.stop()
            raise RuntimeError(f"chatd did not start listening:\n{self.log_text()}")
        self.host = "127.0.0.1"
        self.port = self._ports[0]

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output += line
            found = _LISTENING.search(line)
            if found:
                self._ports.append(int(found.group(1)))
                self._port_seen.set()

    def wait_for_ports(self, count: int, timeout: float = STARTUP_TIMEOUT_SECONDS) -> list[int]:
        """The first ``count`` ports the daemon listens on, once it has logged them all."""
        deadline = time.monotonic() + timeout
        while len(self._ports) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self._ports} listening:\n{self.log_text()}")
            time.sleep(0.05)
        return self._ports[:count]

    def log_text(self) -> str:
        """Everything the daemon has logged, decoded for assertion messages."""
        return self.output.decode("utf-8", "replace")

    def connect(self, timeout: float = 10.0) -> socket.socket:
        """A raw client socket connected to the daemon."""
        client = socket.create_connection((self.host, self.port), timeout=timeout)
        return client

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the daemon process."""
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit status."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> None:
        """Stop the daemon if it still runs (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)


def start_chatd(cwd: Path, *options: str) -> Daemon:
    """Start ``twistd -n chatd --port tcp:0:interface=127.0.0.1 OPTIONS`` in ``cwd``.

    ``cwd`` should be a temporary directory: run from the repository root, twistd
    would find the plugin through the working directory rather than the install.
    """
    args = [
        venv_script("twistd"),
        "--pidfile=",
        "-n",
        "chatd",
        "--port",
        "tcp:0:interface=127.0.0.1",
        *options,
    ]
    return Daemon(args, cwd)


def read_until(client: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    """Read from ``client`` until ``marker`` has arrived; return all that was read."""
    deadline = time.monotonic() + timeout
    received = b""
    while marker not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{marker!r} not received; got {received!r}")
        client.settimeout(remaining)
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}; got {received!r}")
        received += chunk
    return received
