"""Benchmark chatd's fan-out against reference servers, all in one invocation.

    python bench/run.py            # full run, a few minutes
    python bench/run.py --quick    # under a minute
    python bench/run.py --only chatd,reference --json results.json
    python bench/run.py --from-json results.json --plot results.svg

Absolute numbers depend on the machine, so every run also measures reference servers
on the same machine in the same invocation and reports chatd as a ratio to them: a
minimal Twisted fan-out server (bench/reference_server.py, always), the same in one C
epoll loop (bench/cserver.c, when gcc is there, which it must be for the generator),
and ngircd and InspIRCd (when they are installed). Each server is started here on a
free loopback port, pinned to one CPU, and driven by a load generator
(bench/loadgen.c, compiled with gcc into a cache directory on first use) pinned to
another, so the generator never competes with the server for a core. Three scenarios:

  fanout    200 clients in one room, 20 of them sending 64-byte messages open-loop at
            a total rate that steps up until deliveries fall below 99.9 % or the p99
            latency passes 200 ms; reports the highest sustained deliveries/s.
  capacity  N idle users (10,000; --quick fewer): server RSS per connection, and the
            time one line takes to reach all of them.
  churn     sessions/s of connect, alias, one line, quit, wait for close, with 50 in
            flight.

A step measured while the generator's own CPU was above 90 % says more about the
generator than the server; such steps are flagged and never count as a result.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LOADGEN_SOURCE = BENCH_DIR / "loadgen.c"
CSERVER_SOURCE = BENCH_DIR / "cserver.c"
REFERENCE_SERVER = BENCH_DIR / "reference_server.py"

FANOUT_CLIENTS = 200
FANOUT_SENDERS = 20
MESSAGE_BYTES = 64
MIN_DELIVERED_FRACTION = 0.999
MAX_P99_MS = 200.0
GENERATOR_BUSY_PCT = 90.0
CHURN_CONCURRENCY = 50
DEFAULT_SENDQ_BYTES = 16 * 1024 * 1024
SERVER_START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
IDLE_CPU_PCT = 5.0
# The light load whose latency the documentation quotes (msg/s into the fan-out room).
LIGHT_RATE = 1000.0
# chatd's --max-conns default: more idle users need a --chatd-arg raising it.
CHATD_MAX_CONNS = 20_000
# Descriptors beyond one per idle user: listeners, logs, the database, pipes.
FD_SLACK = 1024
# Loopback connections from one source address to one server port, well inside the
# ~28,000 ephemeral ports of Linux's default ip_local_port_range; more users connect
# from 127.0.0.2, 127.0.0.3, ... too (loadgen --source-addrs).
USERS_PER_SOURCE_ADDRESS = 20_000
IRC_OPER = ("bench", "bench-oper-password")


class BenchError(Exception):
    """A failure that ends the run (or one target's scenario) with a message, not a trace."""


@dataclass(frozen=True)
class Settings:
    """What one run measures; ``--quick`` and the flags pick these."""

    quick: bool
    step_seconds: float
    drain_seconds: float
    ladder_start: float
    ladder_factor: float
    ladder_max: float
    refine_steps: int
    idle_users: int
    irc_idle_cap: int
    churn_seconds: float
    sendq_bytes: int
    chatd_args: tuple[str, ...]
    verbose: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Defaults of the full or the quick run, overridden by explicit flags."""
        quick = args.quick

        def pick(value: Any, full: Any, fast: Any) -> Any:
            if value is not None:
                return value
            return fast if quick else full

        return cls(
            quick=quick,
            step_seconds=pick(args.step_seconds, 4.0, 1.0),
            drain_seconds=pick(None, 5.0, 2.0),
            ladder_start=pick(args.ladder_start, 100.0, 200.0),
            ladder_factor=pick(args.ladder_factor, 1.5, 2.5),
            ladder_max=args.max_rate,
            refine_steps=pick(None, 2, 1),
            idle_users=pick(args.idle_users, 10_000, 1_000),
            # ngircd's joins cost O(members) each with a large constant (2,000 users
            # take ~40 s, 4,000 ~2 min on a 2-core VM), so it gets fewer idle users.
            irc_idle_cap=pick(args.irc_idle_cap, 1_000, 500),
            churn_seconds=pick(args.churn_seconds, 5.0, 1.0),
            sendq_bytes=args.sendq_bytes,
            chatd_args=tuple(args.chatd_arg or ()),
            verbose=args.verbose,
        )


# Processes ---------------------------------------------------------------------------


class Processes:
    """Every process this run started, so that all of them are stopped however it ends.

    Children get a session of their own: Ctrl-C in the terminal then reaches only this
    program, which stops them in order instead of leaving a half-stopped server behind.
    """

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session and remember it."""
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, then SIGKILL to its process group after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self._running:
            self._running.remove(proc)

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop tracking a process that has exited by itself."""
        if proc in self._running:
            self._running.remove(proc)

    def stop_all(self) -> None:
        """Stop everything still running, newest first (generators before servers)."""
        for proc in reversed(list(self._running)):
            self.stop(proc)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 if the kernel does not say)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_busy_seconds(cpu: int | None) -> float | None:
    """user + nice + system time of one CPU from /proc/stat, in seconds (None: unpinned)."""
    if cpu is None:
        return None
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == f"cpu{cpu}":
            return sum(int(value) for value in fields[1:4]) / os.sysconf("SC_CLK_TCK")
    return None


def wait_idle(pid: int, max_wait: float = 10.0) -> None:
    """Wait until ``pid`` has finished the work the previous step left behind.

    Closing a step's 200 clients makes the server announce 200 departures; the next
    step should not pay for that.
    """
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        before = proc_cpu_seconds(pid)
        time.sleep(0.2)
        if (proc_cpu_seconds(pid) - before) / 0.2 * 100 < IDLE_CPU_PCT:
            return


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit(wanted: int = 0) -> int:
    """Raise RLIMIT_NOFILE to the hard limit; children (servers, generator) inherit it.

    If ``wanted`` descriptors are more than the hard limit allows, try to raise the
    hard limit too, as far as the kernel's ``fs.nr_open``: only root (CAP_SYS_RESOURCE)
    may, so anyone else keeps the hard limit and the capacity scenario is capped by it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if wanted > hard:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            ceiling = hard
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, ceiling),) * 2)
            return min(wanted, ceiling)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# CPU placement -------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which CPU the server and the generator run on (None: not pinned)."""

    server_cpu: int | None
    generator_cpu: int | None
    note: str

    @classmethod
    def choose(cls) -> Placement:
        """Server on the first allowed CPU, generator on the second, if taskset exists."""
        cpus = sorted(os.sched_getaffinity(0))
        if shutil.which("taskset") is None:
            return cls(None, None, "taskset not found: server and generator are NOT pinned")
        if len(cpus) < 2:
            return cls(None, None, "only one CPU available: server and generator share it")
        return cls(cpus[0], cpus[1], f"server pinned to CPU {cpus[0]}, generator to {cpus[1]}")

    def prefix(self, cpu: int | None) -> list[str]:
        """The ``taskset -c N`` prefix for a command, or nothing."""
        return [] if cpu is None else ["taskset", "-c", str(cpu)]

    def pin_self(self) -> None:
        """Keep this (mostly sleeping) program off the server's CPU too."""
        if self.generator_cpu is not None:
            os.sched_setaffinity(0, {self.generator_cpu})


# Load generator ----------------------------------------------------------------------


def cache_dir() -> Path:
    """Where the compiled generator lives between runs (never in the repository)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chatd-bench"


def build_loadgen() -> Path:
    """The load generator, compiled from bench/loadgen.c."""
    return build_c(LOADGEN_SOURCE)


def c_compiler() -> str | None:
    """The C compiler bench/'s programs are built with, if there is one."""
    return shutil.which("gcc") or shutil.which("cc")


def system_program(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin (where Debian puts daemons, off a user's PATH)."""
    sbin = Path("/usr/sbin") / name
    return shutil.which(name) or (str(sbin) if sbin.exists() else None)


def build_c(source_path: Path) -> Path:
    """Compile one of bench/'s C programs once per source version; the hash is in the
    file name, so an edited source is rebuilt and an old binary never runs."""
    source = source_path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    binary = cache_dir() / f"{source_path.stem}-{digest}"
    if binary.exists():
        return binary
    gcc = c_compiler()
    if gcc is None:
        raise BenchError(f"gcc not found: it is needed to build {source_path}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=binary.parent, prefix=f"{source_path.stem}-", delete=False
    ) as tmp:
        partial = Path(tmp.name)
    try:
        result = subprocess.run(
            [gcc, "-O2", "-Wall", "-o", str(partial), str(source_path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BenchError(f"compiling {source_path} failed:\n{result.stderr}")
        partial.chmod(0o755)
        partial.replace(binary)
    finally:
        partial.unlink(missing_ok=True)
    return binary


def options(**values: object) -> list[str]:
    """``--some-flag value`` pairs for the generator, from ``some_flag=value``."""
    argv: list[str] = []
    for name, value in values.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


@dataclass
class Generator:
    """Runs the compiled load generator, one measurement per run, on its own CPU."""

    binary: Path
    processes: Processes
    placement: Placement
    verbose: bool

    def run(self, args: Sequence[str], timeout: float) -> dict[str, Any]:
        """Run one measurement and return the JSON object it prints."""
        argv = [*self.placement.prefix(self.placement.generator_cpu), str(self.binary), *args]
        if self.verbose:
            argv.append("--progress")
            print("   $", " ".join(argv), file=sys.stderr)
        proc = self.processes.start(
            argv, stdout=subprocess.PIPE, stderr=None if self.verbose else subprocess.PIPE
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.processes.stop(proc, grace=1.0)
            raise BenchError(f"load generator did not finish within {timeout:.0f} s") from None
        self.processes.forget(proc)
        lines = out.decode(errors="replace").strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            message = (err or b"").decode(errors="replace").strip()
            raise BenchError(f"load generator failed (exit {proc.returncode}): {message}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result


# Servers -----------------------------------------------------------------------------


@dataclass
class Server:
    """A running server under test."""

    target: Target
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        """The server's pid (taskset execs the server, so it is the same process)."""
        return self.proc.pid

    def log_text(self) -> str:
        """What the server logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Target:
    """A server to benchmark: how to start it and how the generator talks to it."""

    name: str
    proto: str
    join_concurrency: int
    version: str = ""
    idle_cap: int | None = None
    generator_args: tuple[str, ...] = ()

    def command(self, port: int, workdir: Path) -> list[str]:
        """The command line that runs this server in the foreground on ``port``."""
        raise NotImplementedError

    def log_findings(self, log: str) -> list[str]:
        """Anything in the server's log worth a note (clients cut off, errors)."""
        return []

    def environment(self) -> dict[str, str] | None:
        """The server's environment (None: this program's)."""
        return None


LIMITS_OFF = ("--flood-rate", "0", "--max-per-ip", "0", "--max-conn-rate", "0")


@dataclass
class ChatdTarget(Target):
    """chatd itself, run the way the README runs it, from this working tree."""

    twistd: str = ""
    sendq_bytes: int = DEFAULT_SENDQ_BYTES
    extra_args: tuple[str, ...] = ()

    def command(self, port: int, workdir: Path) -> list[str]:
        return [
            self.twistd,
            "--pidfile=",
            "-n",
            "chatd",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--sendq-bytes",
            str(self.sendq_bytes),
            # The terms: defaults, but flood control and the per-address
            # limits off, since every simulated user comes from 127.0.0.1.
            *LIMITS_OFF,
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """This working tree's chatd first on the path.

        twistd runs in the scenario's temporary directory, so that whatever chatd
        writes relative to where it runs (its database) lands there and not in the
        repository; the path makes it load this tree's code all the same.
        """
        paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}

    def log_findings(self, log: str) -> list[str]:
        found = []
        cut_off = log.count(" cut off: ")
        if cut_off:
            found.append(f"chatd cut off {cut_off} client(s) for its send queue")
        tracebacks = log.count("Traceback (most recent call last)")
        if tracebacks:
            found.append(f"chatd logged {tracebacks} traceback(s)")
        dropped = sum(int(n) for n in re.findall(r"history buffer full.*?(\d+) oldest", log))
        if dropped:
            found.append(f"chatd's history writer fell behind and dropped {dropped:,} line(s)")
        return found


@dataclass
class ReferenceTarget(Target):
    """bench/reference_server.py: plain Twisted fan-out, nothing else."""

    def command(self, port: int, workdir: Path) -> list[str]:
        return [sys.executable, str(REFERENCE_SERVER), "--port", str(port)]


@dataclass
class CServerTarget(Target):
    """bench/cserver.c: the reference's protocol in one C epoll loop, the physical limit."""

    binary: Path = CSERVER_SOURCE

    def command(self, port: int, workdir: Path) -> list[str]:
        return [str(build_c(self.binary)), "--port", str(port)]


NGIRCD_CONFIG = """\
# Written by chatd's bench/run.py for one benchmark run; not for real use.
[Global]
\tName = bench.invalid
\tInfo = chatd benchmark reference
\tAdminInfo1 = chatd benchmark
\tAdminInfo2 = loopback only
\tAdminEMail = nobody@bench.invalid
\tListen = 127.0.0.1
\tPorts = {port}
\tMotdPhrase = bench
[Limits]
\tMaxConnections = 0
\tMaxConnectionsIP = 0
\tMaxJoins = 0
\tMaxNickLength = 20
\tMaxPenaltyTime = 0
\tPingTimeout = 600
\tPongTimeout = 600
[Options]
\tDNS = no
\tIdent = no
\tPAM = no
\tIncludeDir = {include_dir}
\tOperCanUseMode = yes
[Operator]
\tName = {oper_name}
\tPassword = {oper_password}
"""


@dataclass
class NgircdTarget(Target):
    """ngircd, a single-threaded C IRC server, with flood protection relaxed.

    ``MaxPenaltyTime = 0`` turns off penalty times; the senders also OPER and set user
    mode +F, which exempts them from throttling and lets ngircd read 10 instead of 3
    commands per loop from them. That is as far as its configuration goes.
    """

    binary: str = "ngircd"

    def command(self, port: int, workdir: Path) -> list[str]:
        include_dir = workdir / "ngircd.conf.d"
        include_dir.mkdir(exist_ok=True)
        config = workdir / "ngircd.conf"
        config.write_text(
            NGIRCD_CONFIG.format(
                port=port,
                include_dir=include_dir,
                oper_name=IRC_OPER[0],
                oper_password=IRC_OPER[1],
            )
        )
        workdir.chmod(0o755)
        config.chmod(0o644)
        return [self.binary, "--nodaemon", "--passive", "--config", str(config)]

    def log_findings(self, log: str) -> list[str]:
        found = []
        for needle in ("Write buffer space exhausted", "Receive buffer space exhausted"):
            count = log.count(needle)
            if count:
                found.append(f"ngircd: {needle} ({count}x)")
        return found


INSPIRCD_CONFIG = """\
# Written by chatd's bench/run.py for one benchmark run; not for real use.
<server name="bench.invalid" description="chatd benchmark reference" network="bench">
<admin name="chatd benchmark" nick="bench" email="nobody@bench.invalid">
<path configdir="{workdir}" datadir="{workdir}" logdir="{workdir}">
<bind address="127.0.0.1" port="{port}" type="clients">
<connect name="bench" allow="*" maxchans="20" timeout="600" pingfreq="10m"
         hardsendq="{sendq_bytes}" softsendq="{sendq_bytes}" recvq="1048576"
         threshold="1000000000" commandrate="1000000000" fakelag="no"
         localmax="1000000" globalmax="1000000" maxconnwarn="no" limit="1000000"
         resolvehostnames="no" useident="no">
<performance netbuffersize="65536" somaxconn="4096" softlimit="1000000"
             clonesonconnect="no" quietbursts="yes">
<security hideserver="" userstats="Pu" customversion="" flatlinks="no" hidesplits="no"
          hideulines="no" hidebans="no" maxtargets="20">
<options prefixquit="Quit: " syntaxhints="no" announcets="no" hostintopic="no"
         pingwarning="15" splitwhois="no" exemptchanops="">
<channels users="20" opers="60">
<dns timeout="1">
<files motd="{motd}">
"""


@dataclass
class InspircdTarget(Target):
    """InspIRCd, a single-threaded C++ IRC server, with every flood limit off.

    Its connect class allows any rate (``commandrate`` and ``threshold`` of a billion,
    no fakelag), any number of connections per address, send queues as large as
    chatd's, and no DNS or ident lookups; no optional module is loaded. That leaves
    nothing for the senders to OPER for. It refuses to run as root without
    ``--runasroot``, which the benchmark passes, since everything here runs as
    whoever started it.
    """

    binary: str = "inspircd"
    sendq_bytes: int = DEFAULT_SENDQ_BYTES

    def command(self, port: int, workdir: Path) -> list[str]:
        motd = workdir / "motd"
        motd.write_text("chatd benchmark\n")
        config = workdir / "inspircd.conf"
        config.write_text(
            INSPIRCD_CONFIG.format(
                port=port, workdir=workdir, motd=motd, sendq_bytes=self.sendq_bytes
            )
        )
        argv = [self.binary, "--nofork", "--nopid", "--config", str(config)]
        if os.geteuid() == 0:
            argv.append("--runasroot")
        return argv


def find_twistd() -> str:
    """twistd next to the running Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("twistd")
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if found is None:
        raise BenchError("twistd not found next to sys.executable or on PATH")
    return found


def package_version(name: str) -> str:
    """An installed distribution's version, or '?'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def git_revision() -> str:
    """The commit being benchmarked, with '+dirty' for uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "chatd"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")


def available_targets(settings: Settings) -> tuple[list[Target], list[str]]:
    """Every target that can run here, and a note for each that cannot."""
    notes: list[str] = []
    targets: list[Target] = [
        ChatdTarget(
            name="chatd",
            proto="chatd",
            join_concurrency=50,
            version=f"{package_version('chatd')} ({git_revision()})",
            twistd=find_twistd(),
            sendq_bytes=settings.sendq_bytes,
            extra_args=settings.chatd_args,
        ),
        ReferenceTarget(
            name="reference",
            proto="ref",
            join_concurrency=16,
            version=f"Twisted {package_version('twisted')}",
        ),
    ]
    ngircd = system_program("ngircd")
    if ngircd is None:
        notes.append("ngircd skipped: not installed (apt-get install -y ngircd)")
    else:
        version = subprocess.run(
            [ngircd, "--version"], capture_output=True, text=True
        ).stdout.splitlines()
        targets.append(
            NgircdTarget(
                name="ngircd",
                proto="irc",
                # ngircd listens with a backlog of 10: more connects in flight get reset.
                join_concurrency=8,
                version=version[0].split("-")[0] if version else "?",
                idle_cap=settings.irc_idle_cap,
                generator_args=("--oper", f"{IRC_OPER[0]}:{IRC_OPER[1]}"),
                binary=ngircd,
            )
        )
    inspircd = system_program("inspircd")
    if inspircd is None:
        notes.append("inspircd skipped: not installed (apt-get install -y inspircd)")
    else:
        version = subprocess.run(
            [inspircd, "--version"], capture_output=True, text=True
        ).stdout.split()
        targets.append(
            InspircdTarget(
                name="inspircd",
                proto="irc",
                # It completes registrations in a once-a-second sweep, so each join
                # takes up to a second: only many in flight keep joins from taking
                # ages (100: 1,000 users in 10 s; more in flight raise its RSS per user, the
                # high-water mark of many NAMES replies at once). Churn keeps its 50 in
                # flight: that wait is part of a session there.
                join_concurrency=100,
                version=version[0].split("-")[1] if version and "-" in version[0] else "?",
                # Each join answers with the channel's NAMES, O(members) as on ngircd.
                idle_cap=settings.irc_idle_cap,
                binary=inspircd,
                sendq_bytes=settings.sendq_bytes,
            )
        )
    if c_compiler() is not None:
        targets.append(
            CServerTarget(
                name="cserver", proto="ref", join_concurrency=16, version="bench/cserver.c"
            )
        )
    else:
        notes.append("cserver skipped: no C compiler (it is built from bench/cserver.c)")
    return targets, notes


@dataclass
class Bench:
    """One benchmark run: the settings, the generator, and every process started."""

    settings: Settings
    generator: Generator
    processes: Processes
    placement: Placement
    workdir: Path
    notes: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def server(self, target: Target, scenario: str) -> Iterator[Server]:
        """A fresh server for one scenario, stopped (and its log checked) afterwards.

        Fresh, so that one scenario's leftovers (memory, half-closed sockets) do not
        show up in the next one's numbers.
        """
        port = free_port()
        workdir = self.workdir / f"{target.name}-{scenario}"
        workdir.mkdir()
        log_path = workdir / "server.log"
        with log_path.open("wb") as log:
            proc = self.processes.start(
                [
                    *self.placement.prefix(self.placement.server_cpu),
                    *target.command(port, workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=target.environment(),
            )
        server = Server(target, proc, port, log_path)
        try:
            wait_listening(server)
            yield server
        finally:
            self.processes.stop(proc)
            for finding in target.log_findings(server.log_text()):
                self.notes.append(f"{target.name} {scenario}: {finding}")


def wait_listening(server: Server) -> None:
    """Wait until the server accepts connections, or fail with its log."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while True:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.target.name} exited with status {server.proc.returncode}:\n"
                + server.log_text()[-2000:]
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{server.target.name} did not listen on {server.port} within "
                    f"{SERVER_START_TIMEOUT_SECONDS:.0f} s:\n" + server.log_text()[-2000:]
                ) from None
            time.sleep(0.05)


# Scenarios ---------------------------------------------------------------------------


def classify_step(step: dict[str, Any]) -> None:
    """Add the verdict of one fan-out step: passed, generator-bound, and why not."""
    expected = step.get("expected_if_all_sent") or 0
    step["fraction"] = step.get("delivered", 0) / expected if expected else 0.0
    step["gen_bound"] = step.get("gen_cpu_pct", 0.0) > GENERATOR_BUSY_PCT
    reasons = []
    if step.get("disconnects"):
        reasons.append(f"{step['disconnects']} client(s) disconnected")
    elif step.get("error"):
        reasons.append(step["error"])
    if step["fraction"] < MIN_DELIVERED_FRACTION:
        reasons.append(f"delivered {step['fraction']:.2%}")
    if step.get("lat_p99_ms", 0.0) > MAX_P99_MS:
        reasons.append(f"p99 {step['lat_p99_ms']:.0f} ms")
    step["passed"] = not reasons
    step["why"] = "; ".join(reasons)


def run_fanout(bench: Bench, target: Target) -> dict[str, Any]:
    """Step the offered rate up until the server stops keeping up."""
    settings = bench.settings
    steps: list[dict[str, Any]] = []
    with bench.server(target, "fanout") as server:

        def step(rate: float) -> dict[str, Any]:
            prefix = f"s{len(steps):02d}u"
            args = options(
                mode="fanout",
                proto=target.proto,
                port=server.port,
                server_pid=server.pid,
                clients=FANOUT_CLIENTS,
                senders=FANOUT_SENDERS,
                msg_bytes=MESSAGE_BYTES,
                rate=f"{rate:.0f}",
                duration=f"{settings.step_seconds:g}",
                drain=f"{settings.drain_seconds:g}",
                concurrency=target.join_concurrency,
                alias_prefix=prefix,
                timeout=120,
            )
            busy0 = cpu_busy_seconds(bench.placement.server_cpu)
            own0, wall0 = proc_cpu_seconds(server.pid), time.monotonic()
            result = bench.generator.run(
                [*args, *target.generator_args],
                timeout=settings.step_seconds + settings.drain_seconds + 180,
            )
            busy1 = cpu_busy_seconds(bench.placement.server_cpu)
            if busy0 is not None and busy1 is not None:
                # Others on the server's core (the machine may be shared): what its
                # latency figures owe to them rather than to the server.
                foreign = (busy1 - busy0) - (proc_cpu_seconds(server.pid) - own0)
                result["foreign_cpu_pct"] = round(
                    max(0.0, 100 * foreign / (time.monotonic() - wall0)), 1
                )
            result["offered"] = round(rate)
            classify_step(result)
            steps.append(result)
            progress(
                f"  {target.name} fanout {rate:>7.0f} msg/s: "
                f"{result.get('deliveries_per_s', 0):>11,.0f} deliveries/s, "
                f"{result['fraction']:.2%}, p99 {result.get('lat_p99_ms', -1):.1f} ms, "
                f"server {result.get('server_cpu_pct', -1):.0f}% "
                f"others {fmt_pct(result.get('foreign_cpu_pct'))} "
                f"gen {result.get('gen_cpu_pct', -1):.0f}%"
                + ("" if result["passed"] else f"  FAIL: {result['why']}")
                + ("  GENERATOR-BOUND" if result["gen_bound"] else "")
            )
            if server.proc.poll() is not None:
                raise BenchError(f"{target.name} died during the fan-out step")
            wait_idle(server.pid)
            return result

        # A generator-bound step proves nothing either way, so the ladder goes on past
        # it (servers that write a few lines per socket per loop cost the generator
        # most at middling rates), but not past two in a row.
        rate = settings.ladder_start
        last_pass: float | None = None
        first_fail: float | None = None
        generator_bound_in_a_row = 0
        while rate <= settings.ladder_max:
            result = step(rate)
            if not result["passed"]:
                first_fail = rate
                break
            last_pass = rate
            generator_bound_in_a_row = generator_bound_in_a_row + 1 if result["gen_bound"] else 0
            if generator_bound_in_a_row >= 2:
                break
            rate *= settings.ladder_factor
        if last_pass is not None and first_fail is not None:
            for _ in range(settings.refine_steps):
                if first_fail / last_pass < 1.05:
                    break
                middle = math.sqrt(last_pass * first_fail)
                if step(middle)["passed"]:
                    last_pass = middle
                else:
                    first_fail = middle
    steps.sort(key=lambda s: s["offered"])
    good = [s for s in steps if s["passed"] and not s["gen_bound"]]
    best = max(good, key=lambda s: s["deliveries_per_s"]) if good else None
    return {
        "steps": steps,
        "max_sustained_deliveries_per_s": best["deliveries_per_s"] if best else None,
        "max_sustained_offered": best["offered"] if best else None,
        "invalid_steps": sum(1 for s in steps if s["gen_bound"]),
        "ended_by": (
            "generator"
            if generator_bound_in_a_row >= 2
            else "max-rate"
            if first_fail is None
            else "failure"
        ),
    }


def run_capacity(bench: Bench, target: Target, fd_limit: int) -> dict[str, Any]:
    """N idle users: RSS per connection and the time for one line to reach them all."""
    users = bench.settings.idle_users
    capped_by = ""
    if target.idle_cap is not None and users > target.idle_cap:
        users, capped_by = target.idle_cap, f"capped at {target.idle_cap} (slow joins)"
    if users + FD_SLACK > fd_limit:
        users = fd_limit - FD_SLACK
        capped_by = f"capped at {users} by RLIMIT_NOFILE"
    if (
        isinstance(target, ChatdTarget)
        and users > CHATD_MAX_CONNS
        and not any(arg.startswith("--max-conns") for arg in target.extra_args)
    ):
        raise BenchError(
            f"chatd takes at most {CHATD_MAX_CONNS:,} connections by default: "
            f"add --chatd-arg=--max-conns={users + FD_SLACK} for {users:,} idle users"
        )
    with bench.server(target, "capacity") as server:
        time.sleep(0.5)  # let the server finish starting before taking its base RSS
        args = options(
            mode="idle",
            proto=target.proto,
            port=server.port,
            server_pid=server.pid,
            clients=users,
            senders=1,
            msg_bytes=MESSAGE_BYTES,
            concurrency=target.join_concurrency,
            alias_prefix="i",
            timeout=900,
            settle=0.5 if bench.settings.quick else 1,
        )
        if users > USERS_PER_SOURCE_ADDRESS:
            args += options(source_addrs=math.ceil(users / USERS_PER_SOURCE_ADDRESS))
        result = bench.generator.run(args, timeout=1000)
    result["capped_by"] = capped_by
    progress(
        f"  {target.name} capacity {users} users:"
        f" joined in {result.get('join_drain_s', -1):.1f} s,"
        f" {result.get('rss_per_conn_kib', -1):.2f} KiB/conn,"
        f" broadcast {result.get('broadcast_all_ms', -1):.1f} ms"
        + (f"  ERROR: {result['error']}" if result.get("error") else "")
    )
    return result


def run_churn(bench: Bench, target: Target) -> dict[str, Any]:
    """Whole sessions per second, CHURN_CONCURRENCY at a time."""
    with bench.server(target, "churn") as server:
        args = options(
            mode="churn",
            proto=target.proto,
            port=server.port,
            server_pid=server.pid,
            msg_bytes=MESSAGE_BYTES,
            concurrency=CHURN_CONCURRENCY,
            duration=f"{bench.settings.churn_seconds:g}",
            drain=10,
            alias_prefix="c",
        )
        result = bench.generator.run(args, timeout=bench.settings.churn_seconds + 60)
    result["gen_bound"] = result.get("gen_cpu_pct", 0.0) > GENERATOR_BUSY_PCT
    progress(
        f"  {target.name} churn: {result.get('sessions_per_s', 0):,.0f} sessions/s,"
        f" p99 {result.get('session_p99_ms', -1):.1f} ms, failed {result.get('failed', 0)}"
        + ("  GENERATOR-BOUND" if result["gen_bound"] else "")
    )
    return result


def run_profile(bench: Bench, target: Target, rate: float, output: Path) -> dict[str, Any]:
    """One extra fan-out step at ``rate`` with py-spy sampling chatd; top functions.

    A separate step, so that the sampler's own cost never touches the ladder above.
    The caller picks a rate well below the maximum: py-spy shares the generator's CPU
    and costs chatd some time, and at the edge the step would profile an overload.
    """
    py_spy = Path(sys.executable).with_name("py-spy")
    spy = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
    if spy is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    seconds = max(bench.settings.step_seconds, 5.0)
    with bench.server(target, "profile") as server:
        recorder = bench.processes.start(
            [
                *bench.placement.prefix(bench.placement.generator_cpu),
                spy,
                "record",
                "--pid",
                str(server.pid),
                "--format",
                "raw",
                "--output",
                str(output),
                "--rate",
                "250",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        args = options(
            mode="fanout",
            proto=target.proto,
            port=server.port,
            server_pid=server.pid,
            clients=FANOUT_CLIENTS,
            senders=FANOUT_SENDERS,
            msg_bytes=MESSAGE_BYTES,
            rate=f"{rate:.0f}",
            duration=f"{seconds:g}",
            alias_prefix="p",
        )
        step = bench.generator.run(args, timeout=seconds + 120)
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            recorder.wait(15)
        finally:
            bench.processes.stop(recorder)
    if not output.exists():
        return {"error": "py-spy wrote no profile"}
    return {"rate": rate, "step": step, **summarise_profile(output)}


def summarise_profile(path: Path, top: int = 10) -> dict[str, Any]:
    """Top functions by own (leaf) samples and by inclusive samples, from py-spy raw."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short_frame(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "own": [(name, count / total) for name, count in own.most_common(top)] if total else [],
        "inclusive": (
            [(name, count / total) for name, count in inclusive.most_common(top + 8)]
            if total
            else []
        ),
    }


def short_frame(frame: str) -> str:
    """'send (chatd/protocol.py:99)' with the path cut down to package/module."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    parts = Path(path).parts
    for anchor in ("chatd", "twisted"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            path = "/".join(parts[index:])
            break
    else:
        path = Path(path).name
    return f"{name} ({path}:{line})" if path else name


# Report ------------------------------------------------------------------------------


def progress(text: str) -> None:
    """A line of progress on stderr, so stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)


def fmt_int(value: float | None) -> str:
    """1,234,567 or n/a."""
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_num(value: float | None) -> str:
    """A time or size with three significant-ish digits, or n/a."""
    if value is None or value < 0:
        return "n/a"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_pct(value: float | None) -> str:
    """12% or n/a."""
    return "n/a" if value is None else f"{value:.0f}%"


def ratio(chatd: float | None, other: float | None) -> str:
    """chatd / other as '0.42x', or n/a."""
    if chatd is None or other is None or other <= 0 or chatd < 0:
        return "n/a"
    return f"{chatd / other:.2f}x"


def first_line(text: str | None) -> str:
    """The first line of an error, for a table cell (the notes below have all of it)."""
    return (text or "").strip().split("\n", 1)[0]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append(
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The plain-text / markdown report printed at the end."""
    settings = report["settings"]
    env = report["environment"]
    out = [
        f"# chatd fan-out benchmark ({'quick' if settings['quick'] else 'full'} run)",
        "",
        f"{env['date']} | {env['cpu']} x{env['cpus']} | Linux {env['kernel']} | "
        f"Python {env['python']} | {env['placement']}",
        "Servers: " + ", ".join(f"{t['name']} {t['version']}" for t in report["targets"]),
    ]
    if settings["chatd_args"]:
        out.append("Extra chatd options: " + " ".join(settings["chatd_args"]))
    results = report["results"]
    notes = list(report["notes"])  # drawn again from a saved run, it must not grow

    fan_rows = []
    for name, res in results.items():
        fanout = res.get("fanout")
        if not fanout or "steps" not in fanout:
            continue
        for s in fanout["steps"]:
            verdict = "ok" if s["passed"] else f"FAIL: {s['why']}"
            if s["gen_bound"]:
                verdict = "INVALID: generator >90% CPU; " + verdict
            fan_rows.append(
                [
                    name,
                    fmt_int(s["offered"]),
                    fmt_int(s.get("deliveries_per_s")),
                    f"{s['fraction']:.2%}",
                    fmt_num(s.get("lat_p50_ms")),
                    fmt_num(s.get("lat_p99_ms")),
                    fmt_num(s.get("lat_max_ms")),
                    f"{s.get('server_cpu_pct', -1):.0f}%",
                    fmt_pct(s.get("foreign_cpu_pct")),
                    f"{s.get('gen_cpu_pct', -1):.0f}%",
                    f"{s.get('server_rss_kib', 0) / 1024:.1f}",
                    verdict,
                ]
            )
    if fan_rows:
        out += [
            "",
            f"## Fan-out: {FANOUT_CLIENTS} clients in one room, {FANOUT_SENDERS} senders, "
            f"{MESSAGE_BYTES}-byte messages, {settings['step_seconds']:g} s per step",
            "",
            f"Each message should reach the {FANOUT_CLIENTS - 1} other clients. A step passes "
            f"with >= {MIN_DELIVERED_FRACTION:.1%} delivered and p99 <= {MAX_P99_MS:.0f} ms; "
            "latency is measured on every delivery. Others' CPU: what other processes "
            "used of the server's core during the step (the machine may be shared); "
            "latency figures of a step where that is high say little about the server.",
            "",
            table(
                [
                    "server",
                    "offered msg/s",
                    "deliveries/s",
                    "delivered",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "server CPU",
                    "others' CPU",
                    "gen CPU",
                    "RSS MiB",
                    "result",
                ],
                fan_rows,
            ),
        ]

    capacity = capacity_table(results)
    if capacity:
        out += [
            "",
            "## Capacity: idle users who chose an alias (and, on IRC, joined #bench)",
            "",
            capacity,
        ]
    churn = churn_table(results)
    if churn:
        out += [
            "",
            f"## Churn: connect, alias, one line, quit, wait for close; "
            f"{CHURN_CONCURRENCY} sessions in flight",
            "",
            churn,
        ]

    out += [
        "",
        "## Summary: chatd as a ratio to each reference",
        "",
        summary_table(results),
        "",
        summary_footnote(results),
    ]

    profile = results.get("chatd", {}).get("profile")
    if profile and profile.get("own"):
        step = profile["step"]
        classify_step(step)
        out += [
            "",
            f"## Profile: chatd at {profile['rate']:,.0f} msg/s, half its max sustained rate "
            f"(py-spy, {profile['samples']} samples)",
            "",
            f"The step under py-spy: {fmt_int(step.get('deliveries_per_s'))} deliveries/s, "
            f"{step['fraction']:.2%} delivered, p50 {fmt_num(step.get('lat_p50_ms'))} ms, "
            f"p99 {fmt_num(step.get('lat_p99_ms'))} ms, server CPU "
            f"{step.get('server_cpu_pct', -1):.0f}%" + (f"; {step['why']}" if step["why"] else ""),
            "",
            table(
                ["own %", "function"],
                [[f"{share:.1%}", name] for name, share in profile["own"]],
            ),
        ]
    elif profile and profile.get("error"):
        notes.append(f"profile: {profile['error']}")

    if notes:
        out += ["", "Notes:"] + [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"


def capacity_table(results: dict[str, Any]) -> str:
    """One row per target of the capacity scenario ('' if none ran it)."""
    cap_rows = []
    for name, res in results.items():
        cap = res.get("capacity")
        if not cap:
            continue
        cap_rows.append(
            [
                name,
                fmt_int(cap.get("clients")),
                fmt_num(cap.get("join_drain_s")),
                f"{cap.get('rss_before_kib', 0) / 1024:.1f}",
                f"{cap.get('rss_after_kib', 0) / 1024:.1f}",
                f"{cap.get('rss_per_conn_kib', -1):.2f}",
                fmt_num(cap.get("broadcast_p50_ms")),
                fmt_num(cap.get("broadcast_all_ms")),
                "; ".join(x for x in (cap.get("capped_by"), first_line(cap.get("error"))) if x),
            ]
        )
    if not cap_rows:
        return ""
    return table(
        [
            "server",
            "users",
            "join s",
            "RSS before MiB",
            "RSS after MiB",
            "KiB/conn",
            "bcast p50 ms",
            "bcast all ms",
            "note",
        ],
        cap_rows,
    )


def churn_table(results: dict[str, Any]) -> str:
    """One row per target of the churn scenario ('' if none ran it)."""
    churn_rows = []
    for name, res in results.items():
        ch = res.get("churn")
        if not ch:
            continue
        churn_rows.append(
            [
                name,
                fmt_int(ch.get("sessions_per_s")),
                fmt_int(ch.get("completed")),
                str(ch.get("failed", "n/a")),
                fmt_num(ch.get("session_p50_ms")),
                fmt_num(ch.get("session_p99_ms")),
                f"{ch.get('server_cpu_pct', -1):.0f}%",
                f"{ch.get('gen_cpu_pct', -1):.0f}%",
                ("INVALID: generator >90% CPU " if ch.get("gen_bound") else "")
                + first_line(ch.get("error")),
            ]
        )
    if not churn_rows:
        return ""
    return table(
        [
            "server",
            "sessions/s",
            "sessions",
            "failed",
            "p50 ms",
            "p99 ms",
            "server CPU",
            "gen CPU",
            "note",
        ],
        churn_rows,
    )


def fanout_table(results: dict[str, Any]) -> str:
    """Per target: the ladder's best passing step, and the step nearest 1,000 msg/s.

    The short form of the per-step table, for the documentation beside the plot:
    the maximum, and the latency at a light load (the step whose offered rate is
    nearest LIGHT_RATE on a log scale, as the ladder's rates are not round).
    """
    rows = []
    for name, res in results.items():
        fanout = res.get("fanout") or {}
        steps = [s for s in fanout.get("steps", []) if s.get("offered")]
        if not steps:
            continue
        for step in steps:
            classify_step(step)
        good = [s for s in steps if s["passed"] and not s["gen_bound"]]
        best = max(good, key=lambda s: s["deliveries_per_s"]) if good else None
        light = min(steps, key=lambda s: abs(math.log(s["offered"] / LIGHT_RATE)))
        bound = ">=" if fanout.get("ended_by") in ("generator", "max-rate") else ""
        rows.append(
            [
                name,
                bound + fmt_int(best["deliveries_per_s"]) if best else "n/a",
                fmt_int(best["offered"]) if best else "n/a",
                fmt_num(best.get("lat_p99_ms")) if best else "n/a",
                fmt_int(light["offered"]),
                fmt_num(light.get("lat_p50_ms")),
                fmt_num(light.get("lat_p99_ms")),
                f"{light.get('server_cpu_pct', -1):.0f}%",
                fmt_pct(light.get("foreign_cpu_pct")),
            ]
        )
    if not rows:
        return ""
    return table(
        [
            "server",
            "max deliveries/s",
            "at msg/s",
            "p99 ms there",
            "light step msg/s",
            "p50 ms",
            "p99 ms",
            "server CPU",
            "others' CPU",
        ],
        rows,
    )


def render_doc(report: dict[str, Any], image: str) -> str:
    """The block of docs/performance.md that a run fills in (see --update-doc)."""
    settings = report["settings"]
    env = report["environment"]
    results = report["results"]
    out = [
        f"Run of {env['date']} ({'quick' if settings['quick'] else 'full'}): "
        f"{env['cpu']} x{env['cpus']}, Linux {env['kernel']}, Python {env['python']}; "
        f"{env['placement']}.",
        "",
        "Servers: " + ", ".join(f"{t['name']} {t['version']}" for t in report["targets"]) + ".",
        "",
        f"![The run: fan-out ladders, capacity and churn]({image})",
        "",
        summary_table(results),
        "",
        summary_footnote(results),
    ]
    sections = [
        (
            f"Fan-out ({FANOUT_CLIENTS} clients in one room, {FANOUT_SENDERS} senders, "
            f"{MESSAGE_BYTES}-byte lines): the best step that passed, and the step nearest "
            f"{LIGHT_RATE:,.0f} msg/s",
            fanout_table(results),
        ),
        (
            "Capacity (idle users who chose an alias; on IRC, who joined #bench)",
            capacity_table(results),
        ),
        (
            "Churn (connect, alias, one line, quit, wait for close; "
            f"{CHURN_CONCURRENCY} in flight)",
            churn_table(results),
        ),
    ]
    for title, text in sections:
        if text:
            out += ["", title + ":", "", text]
    if report["notes"]:
        out += ["", "Notes of the run:", ""] + [f"- {first_line(n)}" for n in report["notes"]]
    return "\n".join(out) + "\n"


DOC_BEGIN = "<!-- figures of bench/run.py: begin -->"
DOC_END = "<!-- figures of bench/run.py: end -->"


def update_doc(report: dict[str, Any], doc: Path, image: Path | None) -> None:
    """Replace what stands between the markers in ``doc`` with this run's figures."""
    text = doc.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise BenchError(f"{doc} has no {DOC_BEGIN} ... {DOC_END} block to fill in")
    link = os.path.relpath(image, doc.parent) if image else "performance.svg"
    block = render_doc(report, link)
    doc.write_text(text[: begin + len(DOC_BEGIN)] + "\n" + block + text[end:])


def summary_footnote(results: dict[str, Any]) -> str:
    """How to read the summary: bounds, and figures that are not like-for-like."""
    text = (
        ">=: the generator was above 90% CPU (or the ladder reached its ceiling), so the "
        "figure only bounds that server from below. The reference server and cserver send "
        "no prompt, welcome or join notice, so their join and churn figures are for less "
        "work than chatd's."
    )
    if "inspircd" in results:
        text += (
            " InspIRCd completes registrations in a sweep once a second: its churn (50 in "
            "flight) and join figures measure that wait, not its work."
        )
    return text


def summary_table(results: dict[str, Any]) -> str:
    """One row per headline metric, chatd beside each reference and the ratio.

    A figure from a generator-bound run (or a ladder that ended on the generator or
    the rate ceiling) only bounds the server from below; it is shown as ``>=N`` and
    the ratio as a bound in the direction that follows.
    """
    others = [name for name in results if name != "chatd"]

    def get(name: str, scenario: str, key: str) -> float | None:
        value = results.get(name, {}).get(scenario, {}).get(key)
        return None if value is None or (isinstance(value, (int, float)) and value < 0) else value

    def lower_bound(name: str, scenario: str) -> bool:
        data = results.get(name, {}).get(scenario, {})
        if scenario == "fanout":
            return data.get("ended_by") in ("generator", "max-rate")
        return bool(data.get("gen_bound"))

    def same_n(name: str) -> bool:
        return get("chatd", "capacity", "clients") == get(name, "capacity", "clients")

    metrics: list[tuple[str, str, str, bool, Any]] = [
        (
            "max sustained deliveries/s (higher is better)",
            "fanout",
            "max_sustained_deliveries_per_s",
            False,
            fmt_int,
        ),
        (
            "RSS per idle connection, KiB (lower is better)",
            "capacity",
            "rss_per_conn_kib",
            False,
            lambda v: "n/a" if v is None else f"{v:.2f}",
        ),
        (
            "one line to all idle users, ms (lower is better)",
            "capacity",
            "broadcast_all_ms",
            True,
            fmt_num,
        ),
        ("joining all idle users, s (lower is better)", "capacity", "join_drain_s", True, fmt_num),
        ("churn sessions/s (higher is better)", "churn", "sessions_per_s", False, fmt_int),
    ]
    header = ["metric", "chatd"]
    for name in others:
        header += [name, f"chatd/{name}"]
    rows = []
    for label, scenario, key, needs_same_n, fmt in metrics:
        chatd_value = get("chatd", scenario, key)
        chatd_bound = lower_bound("chatd", scenario) and chatd_value is not None
        row = [label, (">=" if chatd_bound else "") + fmt(chatd_value)]
        for name in others:
            value = get(name, scenario, key)
            bound = lower_bound(name, scenario) and value is not None
            comparable = not needs_same_n or same_n(name)
            cell = (">=" if bound else "") + fmt(value)
            if not comparable:
                cell += f" (N={fmt_int(get(name, scenario, 'clients'))})"
            quotient = ratio(chatd_value, value) if comparable else "n/a (other N)"
            if quotient.endswith("x") and (chatd_bound or bound):
                # chatd >= shown raises the ratio; the other >= shown lowers it.
                quotient = (
                    "n/a (both bounds)"
                    if chatd_bound and bound
                    else ((">=" if chatd_bound else "<=") + quotient)
                )
            row += [cell, quotient]
        rows.append(row)
    return table(header, rows)


# Main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        description="Benchmark chatd's fan-out against reference servers.",
        epilog="Extra chatd options: --chatd-arg=--flood-rate=0 (repeatable).",
    )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute")
    parser.add_argument(
        "--only",
        help="comma-separated targets: chatd,reference,ngircd,inspircd,cserver (default: all)",
    )
    parser.add_argument(
        "--scenarios", default="fanout,capacity,churn", help="comma-separated scenarios"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--chatd-arg",
        action="append",
        metavar="ARG",
        help="extra option for twistd chatd, e.g. --chatd-arg=--flood-rate=0",
    )
    parser.add_argument(
        "--sendq-bytes",
        type=int,
        default=DEFAULT_SENDQ_BYTES,
        help="chatd --sendq-bytes (large, so the ladder cuts nobody off)",
    )
    parser.add_argument("--step-seconds", type=float, help="length of one fan-out step")
    parser.add_argument("--ladder-start", type=float, help="first offered rate, msgs/s")
    parser.add_argument("--ladder-factor", type=float, help="rate multiplier per step")
    parser.add_argument("--max-rate", type=float, default=200_000.0, help="ladder ceiling")
    parser.add_argument("--idle-users", type=int, help="users in the capacity scenario")
    parser.add_argument("--irc-idle-cap", type=int, help="at most this many idle IRC users")
    parser.add_argument("--churn-seconds", type=float, help="length of the churn run")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="also profile chatd with py-spy at its max sustained rate; raw stacks go to FILE",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.svg",
        help="also draw the run (fan-out ladders, capacity and churn bars) into this SVG "
        "(needs matplotlib: pip install -r bench/requirements.txt)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="RUN.json",
        help="measure nothing: print the report of a run saved with --json (and --plot it)",
    )
    parser.add_argument(
        "--update-doc",
        type=Path,
        metavar="FILE.md",
        help="also write the run's tables (and a link to the --plot image) into FILE.md, "
        f"between the lines {DOC_BEGIN} and {DOC_END}",
    )
    parser.add_argument("--verbose", action="store_true", help="show generator commands")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the report goes to stdout, progress to stderr."""
    args = parse_args(argv)
    if args.from_json:
        return report_saved_run(args.from_json, args.plot, args.update_doc)
    if args.plot:
        check_plotting()
    if args.update_doc and DOC_BEGIN not in args.update_doc.read_text():
        raise SystemExit(f"{args.update_doc} has no {DOC_BEGIN} line to write after")
    settings = Settings.from_args(args)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - {"fanout", "capacity", "churn"}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    # SIGTERM and SIGHUP clean up just as Ctrl-C does. SIGINT is set explicitly too:
    # started in the background by a non-interactive shell, Python would ignore it.
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, terminate)

    processes = Processes()
    try:
        targets, notes = available_targets(settings)
        if args.only:
            wanted = {name.strip() for name in args.only.split(",") if name.strip()}
            known = {t.name for t in targets} | {"ngircd", "inspircd", "cserver"}
            if wanted - known:
                raise SystemExit(f"unknown target(s): {', '.join(sorted(wanted - known))}")
            targets = [t for t in targets if t.name in wanted]
            notes = [n for n in notes if n.split()[0] in wanted]
        if not any(t.name == "chatd" for t in targets):
            notes.append("chatd not selected: no ratios")
        # Each server gets one descriptor per idle user; so does the generator.
        fd_limit = raise_fd_limit(settings.idle_users + FD_SLACK)
        placement = Placement.choose()
        placement.pin_self()
        if placement.server_cpu is None:
            notes.append(placement.note)
        binary = build_loadgen()
        report: dict[str, Any] = {
            "settings": {
                **{k: v for k, v in vars(settings).items() if k != "chatd_args"},
                "chatd_args": list(settings.chatd_args),
            },
            "environment": environment(placement, fd_limit),
            "fanout": {
                "clients": FANOUT_CLIENTS,
                "senders": FANOUT_SENDERS,
                "msg_bytes": MESSAGE_BYTES,
                "max_p99_ms": MAX_P99_MS,
            },
            "targets": [{"name": t.name, "version": t.version} for t in targets],
            "results": {},
            "notes": notes,
        }
        with tempfile.TemporaryDirectory(prefix="chatd-bench-") as tmp:
            bench = Bench(
                settings=settings,
                generator=Generator(binary, processes, placement, settings.verbose),
                processes=processes,
                placement=placement,
                workdir=Path(tmp),
                notes=notes,
            )
            started = time.monotonic()
            for target in targets:
                results: dict[str, Any] = report["results"].setdefault(target.name, {})
                for scenario in scenarios:
                    progress(f"{target.name}: {scenario}")
                    try:
                        if scenario == "fanout":
                            results["fanout"] = run_fanout(bench, target)
                        elif scenario == "capacity":
                            results["capacity"] = run_capacity(bench, target, fd_limit)
                        else:
                            results["churn"] = run_churn(bench, target)
                    except BenchError as problem:
                        notes.append(f"{target.name} {scenario} failed: {problem}")
                        progress(f"  FAILED: {problem}")
                        results[scenario] = {"error": str(problem)}
                fanout = results.get("fanout") or {}
                if target.name == "chatd" and args.profile and fanout.get("max_sustained_offered"):
                    progress("chatd: profile")
                    try:
                        results["profile"] = run_profile(
                            bench, target, fanout["max_sustained_offered"] / 2, args.profile
                        )
                    except BenchError as problem:
                        results["profile"] = {"error": str(problem)}
                rss = [
                    s["server_rss_kib"] for s in fanout.get("steps", []) if s.get("server_rss_kib")
                ]
                if rss and max(rss) > 2 * rss[0] and max(rss) - rss[0] > 64 * 1024:
                    grown_at = next(
                        s["offered"]
                        for s in fanout["steps"]
                        if s.get("server_rss_kib") == max(rss)
                    )
                    notes.append(
                        f"{target.name}: RSS grew from {rss[0] / 1024:.0f} MiB to "
                        f"{max(rss) / 1024:.0f} MiB during the fan-out ladder "
                        f"(highest after the {grown_at:,} msg/s step)"
                    )
                if fanout.get("ended_by") == "generator":
                    notes.append(
                        f"{target.name}: the ladder stopped at two generator-bound steps in a "
                        "row; its maximum is a lower bound"
                    )
                elif fanout.get("ended_by") == "max-rate":
                    notes.append(f"{target.name}: passed every step up to --max-rate")
                if fanout.get("invalid_steps"):
                    notes.append(
                        f"{target.name}: {fanout['invalid_steps']} fan-out step(s) ran with the "
                        f"generator above {GENERATOR_BUSY_PCT:.0f}% CPU; they are flagged "
                        "INVALID and not counted"
                    )
            report["elapsed_s"] = round(time.monotonic() - started, 1)
        notes.append(f"wall time {report['elapsed_s']:.0f} s")
        text = render(report)
        print(text, end="")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        publish(report, args.plot, args.update_doc)
        return 0
    except BenchError as problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()


def check_plotting() -> None:
    """Fail before measuring, not after minutes of it, when --plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib: pip install -r bench/requirements.txt"
        ) from None


def publish(report: dict[str, Any], plot_path: Path | None, doc: Path | None) -> None:
    """Draw the run (--plot) and write its tables into the documentation (--update-doc)."""
    if plot_path:
        check_plotting()
        import plot

        plot.write_svg(report, plot_path)
        progress(f"plot written to {plot_path}")
    if doc:
        update_doc(report, doc, plot_path)
        progress(f"tables written into {doc}")


def report_saved_run(path: Path, plot_path: Path | None, doc: Path | None) -> int:
    """Print the report of a run saved with ``--json`` and, with ``--plot``, draw it.

    So the documentation's tables and picture can be made again from the run they
    came from, after a change to how they are drawn, without measuring again.
    """
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as problem:
        print(f"bench: cannot read {path}: {problem}", file=sys.stderr)
        return 1
    print(render(report), end="")
    try:
        publish(report, plot_path, doc)
    except BenchError as problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 1
    return 0


def environment(placement: Placement, fd_limit: int) -> dict[str, Any]:
    """Where the numbers come from."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "placement": placement.note,
        "fd_limit": fd_limit,
    }


if __name__ == "__main__":
    sys.exit(main())
