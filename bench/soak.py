"""Soak test: hours of abuse in minutes, against a real chatd, with a report at the end.

    python bench/soak.py --minutes 10

Starts ``twistd -n chatd`` on a free loopback port (flood control on, the
per-address limits off, since every client here comes from 127.0.0.1) and for
the given time drives thousands of connections through it:

- listeners: stay connected in each room for the whole run and read everything;
  they are the yardstick: every line a well-behaved client got relayed to a
  room must reach every listener of that room, in order (100 % or the run fails);
- chatters: connect, choose an alias, join a room, chat within the flood limit
  (some lines large), and leave with /quit after a while, then come back;
- churners: connect, alias, one line, /quit, over and over;
- flooders: send as fast as they can, and must be cut off (``Excess flood``);
- stallers: join a busy room with a tiny receive buffer and never read, and must
  be cut off (``Send queue exceeded``) while everyone else keeps receiving;
- silent: connect and never choose an alias (``--alias-timeout``);
- droppers: chat, then reset the connection mid-line.

At the end it reports connections served, lines delivered vs expected for the
listeners, abusers cut off, the server's RSS over the run (it must not creep)
and its open file descriptors once everyone has gone (back to the baseline).
Not part of the test suite; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOMS = ["#lobby", "#one", "#two", "#three"]
LISTENERS_PER_ROOM = 3
SERVER_OPTIONS = [
    "--flood-burst", "10", "--flood-rate", "5", "--flood-queue", "20",
    "--max-per-ip", "0", "--max-conn-rate", "0", "--max-conns", "20000",
    "--alias-timeout", "5", "--sendq-bytes", "262144",
]  # fmt: skip
LINE = re.compile(rb"^<(\S+)> (\S+) (\d+)")


@dataclass
class Tally:
    sessions: int = 0
    sent: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    flooders: int = 0
    stallers: int = 0
    silent: int = 0
    silent_cut: int = 0
    droppers: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, port: int, seconds: float, scale: int) -> None:
        self.port = port
        self.deadline = time.monotonic() + seconds
        self.scale = scale
        self.tally = Tally()
        # Listener alias -> sender alias -> the numbers of that sender's lines heard.
        self.heard: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        self.listener_rooms: dict[str, str] = {}
        self._next_alias = 0

    def alias(self, kind: str) -> str:
        self._next_alias += 1
        return f"{kind[:2]}{self._next_alias}"

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def connect(
        self, alias: str | None, rcvbuf: int | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        self.tally.sessions += 1
        if alias is not None:
            await reader.readuntil(b"starting with a letter or digit):\r\n")
            writer.write(alias.encode() + b"\n")
            await reader.readuntil(b"*** Type /help for commands.\r\n")
        return reader, writer

    async def move(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, room: str
    ) -> None:
        if room != "#lobby":
            writer.write(f"/join {room}\n".encode())
            await reader.readuntil(f"*** You are now in {room}".encode())

    # The yardstick.

    async def listener(self, room: str, ready: asyncio.Event) -> None:
        alias = self.alias("listener")
        reader, writer = await self.connect(alias)
        await self.move(reader, writer, room)
        self.listener_rooms[alias] = room
        heard = self.heard[alias]
        ready.set()
        try:
            while line := await reader.readline():
                if match := LINE.match(line):
                    heard[match.group(1).decode()].append(int(match.group(3)))
            self.tally.errors.append(f"listener {alias} was disconnected")
        finally:
            writer.close()

    # The well-behaved.

    async def chatter(self, big: bool) -> None:
        """Big lines (2 KB) all go to #two, where the stallers are, to fill their queues."""
        while self.running():
            alias = self.alias("chatter")
            room = "#two" if big else random.choice(ROOMS)
            reader, writer = await self.connect(alias)
            await self.move(reader, writer, room)
            drain = asyncio.create_task(self.drain(reader))
            for n in range(random.randint(3, 30)):
                if not self.running():
                    break
                padding = "x" * (2000 if big else random.randint(0, 200))
                writer.write(f"{alias} {n} {padding}\n".encode())
                self.tally.sent[room].append((alias, n))
                await asyncio.sleep(random.uniform(0.25, 1.0))  # within 5 lines/s
            writer.write(b"/quit done\n")
            await writer.drain()
            await drain
            writer.close()

    async def churner(self) -> None:
        while self.running():
            alias = self.alias("churner")
            reader, writer = await self.connect(alias)
            writer.write(f"{alias} 0 hello\n/quit\n".encode())
            self.tally.sent["#lobby"].append((alias, 0))
            await self.drain(reader)
            writer.close()
            await asyncio.sleep(random.uniform(0, 0.2))

    async def dropper(self) -> None:
        while self.running():
            alias = self.alias("dropper")
            _reader, writer = await self.connect(alias)
            writer.write(b"half a line without its end")
            await writer.drain()
            await asyncio.sleep(random.uniform(0.1, 1.0))
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # a reset
            self.tally.droppers += 1
            await asyncio.sleep(random.uniform(0.5, 2))

    # The abusers.

    async def flooder(self) -> None:
        while self.running():
            alias = self.alias("flooder")
            reader, writer = await self.connect(alias)
            self.tally.flooders += 1
            await self.move(reader, writer, "#one")
            drain = asyncio.create_task(self.drain(reader))
            with contextlib.suppress(ConnectionError):
                for n in range(2000):
                    if drain.done():
                        break
                    writer.write(f"flood {n} {'f' * 100}\n".encode())
                    await writer.drain()
            await drain
            writer.close()
            await asyncio.sleep(random.uniform(1, 4))

    async def staller(self) -> None:
        """Never reads; the server must cut it off (counted from the server's log)."""
        while self.running():
            reader, writer = await self.connect(self.alias("staller"), rcvbuf=4096)
            self.tally.stallers += 1
            await self.move(reader, writer, "#two")
            # The kernel buffers megabytes for a socket before Twisted's buffer and
            # then --sendq-bytes fill up: at ~40 KB/s into #two a cut-off takes minutes.
            stall = min(random.uniform(200, 300), max(0, self.deadline - time.monotonic()))
            await asyncio.sleep(stall)
            writer.transport.abort()

    async def silent(self) -> None:
        while self.running():
            reader, writer = await self.connect(None)
            self.tally.silent += 1
            seen = await self.drain(reader, timeout=15)
            if b"!!! No alias chosen within 5 seconds; goodbye." in seen:
                self.tally.silent_cut += 1
            writer.close()

    async def drain(self, reader: asyncio.StreamReader, timeout: float = 60) -> bytes:
        """Read to the end (keeping the tail); what a client that reads everything sees."""
        tail = b""
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    tail = (tail + chunk)[-4096:]
        return tail

    async def run(self) -> None:
        readies = []
        listeners = []
        for room in ROOMS:
            for _ in range(LISTENERS_PER_ROOM):
                ready = asyncio.Event()
                listeners.append(asyncio.create_task(self.listener(room, ready)))
                readies.append(ready)
        for ready in readies:
            await ready.wait()
        scale = self.scale
        workers = [
            *(self.chatter(big=False) for _ in range(40 * scale)),
            *(self.chatter(big=True) for _ in range(8 * scale)),
            *(self.churner() for _ in range(10 * scale)),
            *(self.dropper() for _ in range(5 * scale)),
            *(self.flooder() for _ in range(2 * scale)),
            *(self.staller() for _ in range(2 * scale)),
            *(self.silent() for _ in range(3 * scale)),
        ]
        results = await asyncio.gather(*workers, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self.tally.errors.append(repr(result))
        await asyncio.sleep(3)  # the last lines reach the listeners
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_chatd(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    twistd = str(Path(sys.executable).with_name("twistd"))
    process = subprocess.Popen(
        [
            twistd,
            "--pidfile=",
            "-n",
            "chatd",
            "--port",
            "tcp:0:interface=127.0.0.1",
            *SERVER_OPTIONS,
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert process.stdout is not None
    for raw in process.stdout:
        if found := re.search(rb"starting on (\d+)", raw):
            port = int(found.group(1))
            break
    else:
        raise SystemExit("chatd did not start")
    for raw in process.stdout:
        if b"accepting connections" in raw:
            break
    # Keep reading the log so the pipe never fills; count what matters.
    return process, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--scale", type=int, default=1, help="multiply the client counts")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="chatd-soak-") as workdir:
        process, port = start_chatd(Path(workdir))
        log_lines: list[bytes] = []
        threading.Thread(target=lambda: log_lines.extend(process.stdout), daemon=True).start()  # type: ignore[arg-type]
        try:
            time.sleep(0.5)
            baseline_fds = open_fds(process.pid)
            rss_samples: list[tuple[float, int]] = [(0.0, rss_kib(process.pid))]
            soak = Soak(port, args.minutes * 60, args.scale)
            started = time.monotonic()

            async def sample() -> None:
                while soak.running():
                    await asyncio.sleep(10)
                    rss_samples.append((time.monotonic() - started, rss_kib(process.pid)))

            async def everything() -> None:
                sampler = asyncio.create_task(sample())
                await soak.run()
                sampler.cancel()

            asyncio.run(everything())
            time.sleep(3)  # the server notices every close
            end_fds = open_fds(process.pid)
            end_rss = rss_kib(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    return report(soak, rss_samples, end_rss, baseline_fds, end_fds, log_lines, args.minutes)


def report(
    soak: Soak,
    rss: list[tuple[float, int]],
    end_rss: int,
    baseline_fds: int,
    end_fds: int,
    log_lines: list[bytes],
    minutes: float,
) -> int:
    tally = soak.tally
    expected = delivered = out_of_order = 0
    for alias, heard in soak.heard.items():
        out_of_order += sum(numbers != sorted(numbers) for numbers in heard.values())
        got = {(sender, n) for sender, numbers in heard.items() for n in numbers}
        want = set(tally.sent[soak.listener_rooms[alias]])
        expected += len(want)
        delivered += len(want & got)
    warm = [kib for at, kib in rss if at >= 60] or [kib for _, kib in rss]
    log = b"".join(log_lines)
    # Counted from the server's log: a client cut off mid-write gets a reset, and a
    # reset throws away the goodbye line it had not read yet.
    flooders_cut = len(re.findall(rb"\(fl\d+\) cut off: excess flood", log))
    stallers_cut = len(re.findall(rb"\(st\d+\) cut off: more than", log))
    checks = {
        "well-behaved lines all delivered": delivered == expected and expected > 0,
        "in order": out_of_order == 0,
        "every flooder cut off": flooders_cut >= tally.flooders - 2 * soak.scale,
        "stallers cut off": stallers_cut > 0,
        "silent cut off": tally.silent_cut >= tally.silent - 3 * soak.scale,
        "RSS does not creep (end <= 1.25 x first minute's peak)": end_rss <= 1.25 * max(warm[:7]),
        "file descriptors back to baseline": end_fds <= baseline_fds,
        "no client errors": not tally.errors,
        "no tracebacks in the log": b"Traceback" not in log,
    }
    print(f"# chatd soak: {minutes:g} minutes")
    print()
    print("| figure | value |")
    print("| --- | --- |")
    share = 100 * delivered / max(expected, 1)
    peak = max(kib for _, kib in rss)
    rows = [
        ("connections served", f"{tally.sessions:,}"),
        ("lines sent by well-behaved clients", f"{sum(len(v) for v in tally.sent.values()):,}"),
        ("listener deliveries expected / got", f"{expected:,} / {delivered:,} ({share:.3f} %)"),
        ("flooders cut off (Excess flood)", f"{flooders_cut} of {tally.flooders}"),
        ("stallers cut off (Send queue exceeded)", f"{stallers_cut} of {tally.stallers}"),
        ("silent connections cut off (alias timeout)", f"{tally.silent_cut} of {tally.silent}"),
        ("connections reset mid-line", f"{tally.droppers:,}"),
        ("server RSS start / peak / end (MiB)", f"{rss[0][1] / 1024:.1f} / {peak / 1024:.1f} / "
         f"{end_rss / 1024:.1f}"),
        ("RSS every 10 s (MiB)", " ".join(f"{k / 1024:.0f}" for _, k in rss)),
        ("open fds baseline / end", f"{baseline_fds} / {end_fds}"),
        ("client errors", "; ".join(tally.errors[:5]) or "none"),
    ]  # fmt: skip
    for name, value in rows:
        print(f"| {name} | {value} |")
    print()
    for name, passed in checks.items():
        print(f"- {'PASS' if passed else 'FAIL'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
