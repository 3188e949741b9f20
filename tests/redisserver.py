"""A throwaway redis-server for tests: loopback only, no persistence, stoppable and restartable.

Tests of the Redis store run against the real server rather than a fake, since
the point is what Redis does with the commands and scripts. A missing
redis-server is an error, not a skip: the tests must not pass by not running.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
PING_INTERVAL_SECONDS = 0.01


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers_ping(port: int) -> bool:
    """Whether a Redis on ``port`` answers PING now (a plain socket, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on a free loopback port; :meth:`start` after :meth:`stop` restarts it.

    The port stays the same across restarts, so clients reconnect to the same
    address, as to a Redis that was restarted. With ``--save ''`` and no
    append-only file a restart also forgets everything, like a real outage of an
    unpersisted Redis would.
    """

    def __init__(self, executable: str = "redis-server") -> None:
        found = shutil.which(executable)
        if found is None:
            raise RuntimeError(
                f"{executable} is not installed (apt-get install redis-server): "
                "the Redis store tests need a real Redis"
            )
        self.executable = found
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = tempfile.TemporaryDirectory(prefix="chatd-redis-")
        self.log_path = Path(self._directory.name) / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it answers PING."""
        if self._process is not None:
            raise RuntimeError("redis-server is running already")
        # redis-server only binds while it runs; a port taken in between is reported below.
        self._process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._directory.name,
                "--logfile",
                str(self.log_path),
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start:\n{self._log()}")
            time.sleep(PING_INTERVAL_SECONDS)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers); harmless if it is not running."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._directory.cleanup()

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
