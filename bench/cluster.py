"""Benchmark chatd's cluster mode: the fan-out of bench/run.py on one node, and on two.

    python bench/cluster.py            # full run, about five minutes
    python bench/cluster.py --quick    # under a minute and a half
    python bench/cluster.py --json cluster.json --configs single,two-nodes

Three configurations run in one invocation, each on fresh processes (and a fresh
redis-server), on run.py's fan-out scenario: 200 clients in one room, 20 of them
sending 64-byte messages open-loop at a rate that steps up.

  single     one chatd without --redis: the reference every ratio is taken against.
  one node   one chatd with --redis, every client on it: what Redis costs when nothing
             crosses nodes (a PUBLISH per reactor turn, and the node hearing it back).
  two nodes  two chatd --redis nodes on one Redis, the clients (and so the senders)
             split evenly between them: every line crosses to the other node.

Every server process (the nodes and redis-server) is pinned to the first CPU and the
load generator to the second, as run.py does: the configurations share one core for
the server side, so this measures what the cluster costs per message, not what a
second machine would gain. For each configuration it reports, per step, deliveries,
latency and the CPU the nodes and redis-server used per message and per delivery (read
from /proc by the generator from the start of the send window until the last
delivery); then, at a rate below saturation (--cost-rate), the node CPU per message
beside the single server's, whose difference is what Redis adds per message on the
node side, and the same for a probe of 2 clients and 1 sender (--probe-rate), where
that difference is not lost in the noise of 199 writes per message. Every two-node
step also checks that the clients on each node received every line, from both nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import (
    DEFAULT_SENDQ_BYTES,
    FANOUT_CLIENTS,
    FANOUT_SENDERS,
    GENERATOR_BUSY_PCT,
    LIMITS_OFF,
    MAX_P99_MS,
    MESSAGE_BYTES,
    MIN_DELIVERED_FRACTION,
    SERVER_START_TIMEOUT_SECONDS,
    BenchError,
    ChatdTarget,
    Generator,
    Placement,
    Processes,
    build_loadgen,
    classify_step,
    cpu_busy_seconds,
    environment,
    find_twistd,
    fmt_int,
    fmt_num,
    free_port,
    git_revision,
    options,
    package_version,
    proc_cpu_seconds,
    progress,
    raise_fd_limit,
    table,
    wait_idle,
)

JOIN_CONCURRENCY = 50
NODE_READY_LOG = "accepting connections on"
# Messages in one fan-out of a (non-sending) client: what a message costs to deliver.
DELIVERIES_PER_MESSAGE = FANOUT_CLIENTS - 1
# Other processes using more than this share of the servers' CPU during a step
# get a note: the step's CPU figures and maximum are then understated.
FOREIGN_CPU_PCT = 10.0
LOG_EXCERPTS = 3
NODE_NAMES = "ABCDEFGH"
# A node checks the cluster's roster once, one node TTL (chatd.cluster.node.NODE_TTL_SECONDS,
# 4 s) after it joined; measuring starts after that, in the steady state. (The check
# drops remote members who spoke or joined while it was reading: measured across it,
# a step loses every later line of those senders on the other node.)
SETTLE_SECONDS = 5.0
# The ladder steps down from a failing cost rate no further than this (msgs/s).
MIN_RATE = 5.0
# The probe: one sender and one receiver (on the other node, with two), so that what
# a message costs besides its fan-out (on a node, the PUBLISH and hearing it back) is
# not lost in the noise of 199 writes.
PROBE_CLIENTS = 2
PROBE_SENDERS = 1


@dataclass(frozen=True)
class Config:
    """One way of running chatd: how many nodes, and whether on Redis."""

    key: str
    name: str
    nodes: int
    redis: bool


CONFIGS = (
    Config("single", "single", 1, False),
    Config("one-node", "one node", 1, True),
    Config("two-nodes", "two nodes", 2, True),
)


@dataclass(frozen=True)
class Settings:
    """What one run measures; ``--quick`` and the flags pick these."""

    quick: bool
    step_seconds: float
    drain_seconds: float
    cost_rate: float
    cost_seconds: float
    cost_repeats: int
    probe_rate: float
    steps_per_decade: int
    ladder_max: float
    refine_steps: int
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
            cost_rate=args.cost_rate,
            cost_seconds=pick(args.cost_seconds, 6.0, 3.0),
            cost_repeats=pick(args.cost_repeats, 3, 1),
            probe_rate=args.probe_rate,
            # Rates cost_rate * 10^(k / steps_per_decade): full 50, 89, 158, 281,
            # 500 ...; quick 50, 158, 500, 1,581 ...
            steps_per_decade=pick(None, 4, 2),
            ladder_max=args.max_rate,
            refine_steps=pick(None, 2, 1),
            chatd_args=tuple(args.chatd_arg or ()),
            verbose=args.verbose,
        )


# Redis -------------------------------------------------------------------------------


def find_redis_server(given: str | None) -> str:
    """redis-server from --redis-server, PATH or /usr/bin."""
    if given is not None:
        if shutil.which(given) is None:
            raise BenchError(f"{given}: not an executable")
        return given
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    if found is None:
        raise BenchError("redis-server not found (apt-get install -y redis-server)")
    return found


def redis_call(port: int, *args: str, timeout: float = 5.0) -> Any:
    """One command to the benchmark's redis-server; its reply (string, int or error)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        head = reader.readline()
        if not head:
            raise OSError("redis-server closed the connection")
        kind, rest = head[:1], head[1:].strip()
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise OSError(f"redis-server: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else reader.read(size + 2)[:-2].decode()
        raise OSError(f"unexpected reply from redis-server: {head!r}")


def redis_command_stats(port: int) -> dict[str, dict[str, float]]:
    """INFO commandstats as {"publish": {"calls": N, "usec": N}, ...}."""
    stats: dict[str, dict[str, float]] = {}
    for line in redis_call(port, "INFO", "commandstats").splitlines():
        name, _, values = line.partition(":")
        if not name.startswith("cmdstat_"):
            continue
        fields = dict(pair.split("=", 1) for pair in values.split(",") if "=" in pair)
        stats[name[len("cmdstat_") :]] = {
            key: float(fields.get(key, 0)) for key in ("calls", "usec")
        }
    return stats


def redis_version(binary: str) -> str:
    """'7.0.15' from ``redis-server --version``."""
    text = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"v=(\S+)", text)
    return match.group(1) if match else "?"


# Processes -----------------------------------------------------------------------------


@dataclass
class Node:
    """One running chatd node."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_text(self) -> str:
        """What the node logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Deployment:
    """The processes of one configuration: its nodes, and redis-server if on Redis."""

    config: Config
    nodes: list[Node]
    redis: subprocess.Popen[bytes] | None = None
    redis_port: int = 0
    redis_log: Path | None = None

    @property
    def pids(self) -> list[int]:
        """Nodes first, then redis-server: the order the generator reports CPU in."""
        return [node.proc.pid for node in self.nodes] + ([self.redis.pid] if self.redis else [])

    def check_alive(self) -> None:
        """Fail with the log of whichever process has exited."""
        for node in self.nodes:
            if node.proc.poll() is not None:
                raise BenchError(
                    f"{self.config.name}: {node.name} exited with status "
                    f"{node.proc.returncode}:\n" + node.log_text()[-2000:]
                )
        if self.redis is not None and self.redis.poll() is not None:
            raise BenchError(f"{self.config.name}: redis-server exited ({self.redis.returncode})")


@dataclass
class ClusterBench:
    """One run: the settings, the generator, and every process started."""

    settings: Settings
    generator: Generator
    processes: Processes
    placement: Placement
    workdir: Path
    chatd: ChatdTarget
    redis_binary: str
    notes: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def deploy(self, config: Config) -> Iterator[Deployment]:
        """Fresh processes for one configuration, stopped (and their logs read) afterwards."""
        workdir = self.workdir / config.key
        workdir.mkdir()
        pin = self.placement.prefix(self.placement.server_cpu)
        deployment = Deployment(config, [])
        try:
            redis_url = ""
            if config.redis:
                deployment.redis_port = free_port()
                redis_dir = workdir / "redis"
                redis_dir.mkdir()
                deployment.redis_log = redis_dir / "redis.log"
                with deployment.redis_log.open("wb") as log:
                    deployment.redis = self.processes.start(
                        [
                            *pin,
                            self.redis_binary,
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                            "--port",
                            str(deployment.redis_port),
                            "--bind",
                            "127.0.0.1",
                            "--dir",
                            str(redis_dir),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=redis_dir,
                    )
                wait_redis(deployment)
                redis_url = f"redis://127.0.0.1:{deployment.redis_port}/0"
            for index in range(config.nodes):
                port = free_port()
                node_dir = workdir / f"node-{NODE_NAMES[index]}"
                node_dir.mkdir()
                log_path = node_dir / "node.log"
                command = self.chatd.command(port, node_dir)
                if redis_url:
                    command += ["--redis", redis_url]
                with log_path.open("wb") as log:
                    proc = self.processes.start(
                        [*pin, *command],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=node_dir,
                        env=self.chatd.environment(),
                    )
                name = f"node {NODE_NAMES[index]}" if config.nodes > 1 else "node"
                deployment.nodes.append(Node(name, proc, port, log_path))
            for node in deployment.nodes:
                wait_node(deployment, node)
            yield deployment
        finally:
            before_stop = {node.name: len(node.log_text()) for node in deployment.nodes}
            for node in reversed(deployment.nodes):
                self.processes.stop(node.proc)
            if deployment.redis is not None:
                self.processes.stop(deployment.redis)
            for node in deployment.nodes:
                text = node.log_text()
                cut = before_stop[node.name]
                for finding in log_findings(self.chatd, text[:cut]):
                    self.notes.append(f"{config.name}, {node.name}, during the run: {finding}")
                for finding in log_findings(self.chatd, text[cut:]):
                    self.notes.append(f"{config.name}, {node.name}, at shutdown: {finding}")
            if deployment.redis_log is not None:
                for finding in redis_log_findings(deployment.redis_log):
                    self.notes.append(f"{config.name}, redis-server: {finding}")


def wait_redis(deployment: Deployment) -> None:
    """Wait until redis-server answers PING."""
    assert deployment.redis is not None
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while True:
        deployment.check_alive()
        try:
            if redis_call(deployment.redis_port, "PING", timeout=1.0) == "PONG":
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(
                f"redis-server did not answer within {SERVER_START_TIMEOUT_SECONDS} s"
            )
        time.sleep(0.05)


def wait_node(deployment: Deployment, node: Node) -> None:
    """Wait until the node logs that it accepts connections (in the cluster, if on Redis)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while NODE_READY_LOG not in node.log_text():
        deployment.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{deployment.config.name}: {node.name} not ready within "
                f"{SERVER_START_TIMEOUT_SECONDS:.0f} s:\n" + node.log_text()[-2000:]
            )
        time.sleep(0.05)


WARNING_LINE = re.compile(r"^.*#(?:warn|error|critical)\].*$", re.MULTILINE)


def log_findings(chatd: ChatdTarget, log: str) -> list[str]:
    """run.py's checks of a chatd log, plus its warnings and errors with a few excerpts."""
    found = chatd.log_findings(log)
    warnings = WARNING_LINE.findall(log)
    if warnings:
        excerpts = "; ".join(f"`{line[:300]}`" for line in warnings[:LOG_EXCERPTS])
        found.append(f"{len(warnings)} warning/error line(s), first: {excerpts}")
    return found


def redis_log_findings(path: Path) -> list[str]:
    """Subscribers redis-server dropped for their output buffer, and other trouble."""
    try:
        log = path.read_text(errors="replace")
    except OSError:
        return []
    found = []
    dropped = [
        line
        for line in log.splitlines()
        if "output buffer limits" in line or "scheduled to be closed ASAP" in line
    ]
    if dropped:
        found.append(
            f"{len(dropped)} client(s) closed for their output buffer, first: `{dropped[0][:300]}`"
        )
    return found


# Measuring -----------------------------------------------------------------------------


def processes_cpu_seconds(pids: Sequence[int]) -> list[float]:
    """utime + stime of each pid (run.py's reading of /proc)."""
    return [proc_cpu_seconds(pid) for pid in pids]


def publish_stats(deployment: Deployment) -> tuple[float, float]:
    """PUBLISH calls and their microseconds so far (inside scripts too), or zeros."""
    if deployment.redis is None:
        return 0.0, 0.0
    publish = redis_command_stats(deployment.redis_port).get("publish", {})
    return publish.get("calls", 0.0), publish.get("usec", 0.0)


def measure_step(
    bench: ClusterBench,
    deployment: Deployment,
    rate: float | None,
    seconds: float,
    label: str,
    clients: int = FANOUT_CLIENTS,
    senders: int = FANOUT_SENDERS,
) -> dict[str, Any]:
    """One generator run against ``deployment``, with CPU read around it as well.

    ``rate=None`` is the empty step: the clients join, synchronise and leave, and
    nobody sends. What the processes use in it is what every other step also pays
    apart from its messages.
    """
    settings = bench.settings
    pids = deployment.pids
    nodes = len(deployment.nodes)
    args = options(
        mode="fanout",
        proto="chatd",
        port=",".join(str(node.port) for node in deployment.nodes),
        server_pid=",".join(str(pid) for pid in pids),
        clients=clients,
        senders=senders,
        msg_bytes=MESSAGE_BYTES,
        # The generator wants a positive rate: one far too low to send in the window.
        rate=f"{rate:.0f}" if rate is not None else "0.001",
        duration=f"{seconds:g}" if rate is not None else "1",
        drain=f"{settings.drain_seconds:g}",
        concurrency=JOIN_CONCURRENCY,
        alias_prefix=label,
        timeout=120,
    )
    cpu0 = processes_cpu_seconds(pids)
    busy0 = cpu_busy_seconds(bench.placement.server_cpu)
    publish0 = publish_stats(deployment)
    wall0 = time.monotonic()
    result = bench.generator.run(args, timeout=seconds + settings.drain_seconds + 180)
    deployment.check_alive()
    for pid in pids:
        wait_idle(pid)
    cpu1 = processes_cpu_seconds(pids)
    busy1 = cpu_busy_seconds(bench.placement.server_cpu)
    publish1 = publish_stats(deployment)
    wall = time.monotonic() - wall0

    # Around the whole run: joins, sync, messages, drain, and the leaves after it.
    around = [after - before for before, after in zip(cpu0, cpu1, strict=True)]
    result["around_s"] = round(wall, 3)
    result["around_nodes_cpu_s"] = sum(around[:nodes])
    result["around_redis_cpu_s"] = around[nodes] if deployment.redis else None
    result["around_node_cpu_s"] = around[:nodes]
    result["publish_calls"] = publish1[0] - publish0[0]
    result["publish_usec"] = publish1[1] - publish0[1]
    if busy0 is not None and busy1 is not None:
        # Other processes on the servers' CPU.
        foreign = max(0.0, (busy1 - busy0) - sum(around))
        result["foreign_cpu_pct"] = 100 * foreign / wall
    # From the start of the send window until the last delivery (or the drain's end).
    drained = result.get("pid_cpu_drained_s") or []
    window = result.get("pid_cpu_s") or []
    if len(drained) == len(pids) and len(window) == len(pids):
        duration = result.get("duration_s") or 1.0
        result["nodes_cpu_s"] = sum(drained[:nodes])
        result["redis_cpu_s"] = drained[nodes] if deployment.redis else None
        result["node_cpu_pct"] = [100 * cpu / duration for cpu in window[:nodes]]
        result["nodes_cpu_pct"] = sum(result["node_cpu_pct"])
        result["redis_cpu_pct"] = 100 * window[nodes] / duration if deployment.redis else None
    if rate is None:
        result["offered"] = 0
        return result
    result["offered"] = round(rate)
    classify_step(result)
    sent, delivered = result.get("sent") or 0, result.get("delivered") or 0
    for who in ("nodes", "redis"):
        cpu = result.get(f"{who}_cpu_s")
        result[f"{who}_us_per_msg"] = 1e6 * cpu / sent if cpu is not None and sent else None
        result[f"{who}_us_per_delivery"] = (
            1e6 * cpu / delivered if cpu is not None and delivered else None
        )
    if result["nodes_us_per_msg"] is not None:
        result["total_us_per_msg"] = result["nodes_us_per_msg"] + (
            result["redis_us_per_msg"] or 0.0
        )
    if "port_expected" in result:
        result["ports_complete"] = [
            got == want
            for got, want in zip(result["port_delivered"], result["port_expected"], strict=True)
        ]
    return result


def add_baseline(step: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    """Whole-step figures less the empty step's: what the messages cost, counted the other way."""
    sent = step.get("sent") or 0
    if baseline is None or not sent:
        return
    nodes = step["around_nodes_cpu_s"] - baseline["around_nodes_cpu_s"]
    step["around_nodes_us_per_msg"] = 1e6 * nodes / sent
    if step.get("around_redis_cpu_s") is not None:
        redis = step["around_redis_cpu_s"] - baseline["around_redis_cpu_s"]
        step["around_redis_us_per_msg"] = 1e6 * redis / sent
        publishes = step["publish_calls"] - baseline["publish_calls"]
        step["msg_publishes"] = publishes
        step["msgs_per_publish"] = sent / publishes if publishes > 0 else None
        step["publish_usec_per_call"] = (
            step["publish_usec"] / step["publish_calls"] if step["publish_calls"] else None
        )


def step_line(config: Config, result: dict[str, Any]) -> str:
    """One progress line for a step."""
    redis = result.get("redis_cpu_pct")
    line = (
        f"  {config.name} {result['offered']:>7,} msg/s: "
        f"{result.get('deliveries_per_s', 0):>11,.0f} deliveries/s, "
        f"{result['fraction']:.2%}, p99 {result.get('lat_p99_ms', -1):.1f} ms, "
        f"nodes {result.get('nodes_cpu_pct', -1):.0f}%"
        + (f" redis {redis:.0f}%" if redis is not None else "")
        + f" gen {result.get('gen_cpu_pct', -1):.0f}%"
    )
    if result.get("port_expected"):
        line += " per node " + "/".join(
            "ok" if ok else "MISSING" for ok in result.get("ports_complete", [])
        )
    if not result["passed"]:
        line += f"  FAIL: {result['why']}"
    if result["gen_bound"]:
        line += "  GENERATOR-BOUND"
    return line


def run_configuration(bench: ClusterBench, config: Config) -> dict[str, Any]:
    """The empty step, the cost steps, then the rate ladder, on fresh processes."""
    settings = bench.settings
    steps: list[dict[str, Any]] = []
    cost_steps: list[dict[str, Any]] = []
    probe_steps: list[dict[str, Any]] = []
    letter = config.key[0]
    with bench.deploy(config) as deployment:
        placement = [
            {
                "process": node.name,
                "pid": node.proc.pid,
                "port": node.port,
                "cpus": sorted(os.sched_getaffinity(node.proc.pid)),
            }
            for node in deployment.nodes
        ]
        if deployment.redis is not None:
            placement.append(
                {
                    "process": "redis-server",
                    "pid": deployment.redis.pid,
                    "port": deployment.redis_port,
                    "cpus": sorted(os.sched_getaffinity(deployment.redis.pid)),
                }
            )
        if config.redis:
            progress(f"  {config.name}: waiting {SETTLE_SECONDS:g} s for the nodes' roster check")
            time.sleep(SETTLE_SECONDS)
        progress(f"  {config.name}: empty step (join, sync, leave; nothing sent)")
        baseline = measure_step(bench, deployment, None, 1.0, f"{letter}e")

        def step(rate: float, seconds: float) -> dict[str, Any]:
            label = f"{letter}{len(steps) + len(cost_steps):02d}u"
            result = measure_step(bench, deployment, rate, seconds, label)
            add_baseline(result, baseline)
            progress(step_line(config, result))
            return result

        for _ in range(settings.cost_repeats):
            cost_steps.append(step(settings.cost_rate, settings.cost_seconds))
        for index in range(settings.cost_repeats):
            result = measure_step(
                bench,
                deployment,
                settings.probe_rate,
                settings.cost_seconds,
                f"{letter}p{index}u",
                clients=PROBE_CLIENTS,
                senders=PROBE_SENDERS,
            )
            progress(step_line(config, result) + "  (probe: 2 clients)")
            probe_steps.append(result)
        # The ladder: the cost steps are its first rung.
        factor = 10 ** (1 / settings.steps_per_decade)
        last_pass: float | None = None
        first_fail: float | None = None
        generator_bound_in_a_row = 0
        if all(s["passed"] for s in cost_steps):
            last_pass = settings.cost_rate
            rate = settings.cost_rate * factor
            while rate <= settings.ladder_max:
                result = step(rate, settings.step_seconds)
                steps.append(result)
                if not result["passed"]:
                    first_fail = rate
                    break
                last_pass = rate
                generator_bound_in_a_row = (
                    generator_bound_in_a_row + 1 if result["gen_bound"] else 0
                )
                if generator_bound_in_a_row >= 2:
                    break
                rate *= factor
        else:
            # The cost rate is already too much: step down until a step passes.
            first_fail = settings.cost_rate
            rate = settings.cost_rate / factor
            while rate >= MIN_RATE:
                result = step(rate, settings.step_seconds)
                steps.append(result)
                if result["passed"]:
                    last_pass = rate
                    break
                first_fail = rate
                rate /= factor
        if last_pass is not None and first_fail is not None:
            for _ in range(settings.refine_steps):
                if first_fail / last_pass < 1.05:
                    break
                middle = math.sqrt(last_pass * first_fail)
                result = step(middle, settings.step_seconds)
                steps.append(result)
                if result["passed"]:
                    last_pass = middle
                else:
                    first_fail = middle
    steps.sort(key=lambda s: s["offered"])
    candidates = [*cost_steps, *steps]
    good = [s for s in candidates if s["passed"] and not s["gen_bound"]]
    best = max(good, key=lambda s: s["deliveries_per_s"]) if good else None
    return {
        "placement": placement,
        "baseline": baseline,
        "cost_steps": cost_steps,
        "probe_steps": probe_steps,
        "steps": steps,
        "max_sustained_deliveries_per_s": best["deliveries_per_s"] if best else None,
        "max_sustained_offered": best["offered"] if best else None,
        "invalid_steps": sum(1 for s in candidates if s["gen_bound"]),
        "ended_by": (
            "generator"
            if generator_bound_in_a_row >= 2
            else "max-rate"
            if first_fail is None
            else "failure"
        ),
    }


# Report ------------------------------------------------------------------------------


def fmt_us(value: float | None) -> str:
    """Microseconds with sensible precision, or n/a."""
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def fmt_ratio(value: float | None, reference: float | None) -> str:
    """value / reference as '0.86x', with two significant digits below 0.1x; or n/a."""
    if value is None or reference is None or reference <= 0:
        return "n/a"
    quotient = value / reference
    return f"{quotient:.2f}x" if quotient >= 0.1 else f"{quotient:.2g}x"


def fmt_pct(value: float | None) -> str:
    """42% or n/a."""
    return "n/a" if value is None else f"{value:.0f}%"


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that exist."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def spread(values: Sequence[float | None]) -> tuple[float, float] | None:
    """(min, max) of several values, or None for fewer than two."""
    present = [v for v in values if v is not None]
    return (min(present), max(present)) if len(present) >= 2 else None


def verdict(step: dict[str, Any]) -> str:
    """ok / FAIL: why, with the generator-bound flag."""
    text = "ok" if step["passed"] else f"FAIL: {step['why']}"
    if step["gen_bound"]:
        text = f"INVALID: generator >{GENERATOR_BUSY_PCT:.0f}% CPU; " + text
    return text


def all_steps(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The cost steps, the probe steps (both tagged), then the ladder."""
    return (
        [{**s, "tag": "cost"} for s in res.get("cost_steps", [])]
        + [{**s, "tag": "probe, 2 clients"} for s in res.get("probe_steps", [])]
        + res.get("steps", [])
    )


def step_label(step: dict[str, Any]) -> str:
    """'50 (cost)', '200 (probe, 2 clients)' or '1,000'."""
    tag = step.get("tag")
    return fmt_int(step["offered"]) + (f" ({tag})" if tag else "")


def cost_summary(res: dict[str, Any], which: str = "cost_steps") -> dict[str, Any]:
    """Medians (and spreads) of the cost (or probe) steps' per-message figures."""
    steps = res.get(which, [])
    out: dict[str, Any] = {"passed": bool(steps) and all(s["passed"] for s in steps)}
    for key in (
        "nodes_us_per_msg",
        "nodes_us_per_delivery",
        "redis_us_per_msg",
        "total_us_per_msg",
        "around_nodes_us_per_msg",
        "nodes_cpu_pct",
        "msgs_per_publish",
        "lat_p50_ms",
        "lat_p99_ms",
    ):
        values = [s.get(key) for s in steps]
        out[key] = median(values)
        out[f"{key}_spread"] = spread(values)
    return out


def render(report: dict[str, Any]) -> str:
    """The markdown report."""
    settings = report["settings"]
    env = report["environment"]
    results: dict[str, Any] = report["results"]
    names = {c.key: c.name for c in CONFIGS}
    cost_rate = settings["cost_rate"]
    out = [
        f"# chatd cluster benchmark ({'quick' if settings['quick'] else 'full'} run)",
        "",
        f"{env['date']} | {env['cpu']} x{env['cpus']} | Linux {env['kernel']} | "
        f"Python {env['python']} | chatd {report['versions']['chatd']} | "
        f"redis-server {report['versions']['redis']}",
        "",
        f"Fan-out as in bench/run.py: {FANOUT_CLIENTS} clients in one room, "
        f"{FANOUT_SENDERS} of them sending {MESSAGE_BYTES}-byte messages open-loop; each "
        f"message should reach the {DELIVERIES_PER_MESSAGE} others. A step passes with >= "
        f"{MIN_DELIVERED_FRACTION:.1%} delivered and p99 <= {MAX_P99_MS:.0f} ms. chatd runs "
        "with `" + " ".join(report["chatd_options"]) + "` (plus `--redis redis://...` on "
        "Redis); each configuration gets fresh nodes and a fresh `redis-server --save '' "
        "--appendonly no`. Ladder steps last "
        f"{settings['step_seconds']:g} s; the cost steps at {cost_rate:,.0f} msg/s "
        f"{settings['cost_seconds']:g} s (x{settings['cost_repeats']}).",
        "",
        "**This machine has "
        f"{env['cpus']} cores: every server process (both nodes and redis-server) shares "
        "one of them, and the load generator has the other. Two nodes here cannot show a "
        "scale-out gain; the two-node figures measure what the cluster costs per message. "
        "Only a run with each node (and Redis) on cores of its own, on a bigger machine, "
        "would show the gain.**",
    ]

    place_rows = []
    for key, res in results.items():
        for item in res.get("placement", []):
            place_rows.append(
                [
                    names[key],
                    item["process"],
                    str(item["port"]),
                    ",".join(map(str, item["cpus"])),
                ]
            )
    if place_rows:
        out += [
            "",
            "## Where each process ran",
            "",
            table(["configuration", "process", "port", "CPUs allowed"], place_rows),
            "",
            f"Load generator and this script: {report['generator_cpus']}. "
            + report["placement_note"],
        ]

    rows = []
    for key, res in results.items():
        for s in all_steps(res):
            rows.append(
                [
                    names[key],
                    step_label(s),
                    fmt_int(s.get("deliveries_per_s")),
                    f"{s['fraction']:.2%}",
                    fmt_num(s.get("lat_p50_ms")),
                    fmt_num(s.get("lat_p99_ms")),
                    fmt_pct(s.get("nodes_cpu_pct")),
                    fmt_pct(s.get("redis_cpu_pct")),
                    fmt_pct(s.get("gen_cpu_pct")),
                    fmt_us(s.get("nodes_us_per_msg")),
                    fmt_us(s.get("nodes_us_per_delivery")),
                    fmt_us(s.get("redis_us_per_msg")),
                    fmt_us(s.get("redis_us_per_delivery")),
                    verdict(s),
                ]
            )
    if rows:
        out += [
            "",
            "## Fan-out steps",
            "",
            "CPU %: over the send window, all nodes together (on one core, so at most "
            "100% between nodes and redis-server). µs per message sent and per delivery: "
            "CPU from the start of the send window until the last delivery arrived, read "
            "from /proc/PID/task/*/schedstat by the generator, divided by the messages sent "
            "and the deliveries. Once a core is saturated chatd batches more per reactor "
            "turn, so above that rate the per-message figures fall as 1 core / rate and "
            "say nothing about cost; they are only comparable where CPU is below 100%.",
            "",
            table(
                [
                    "configuration",
                    "offered msg/s",
                    "deliveries/s",
                    "delivered",
                    "p50 ms",
                    "p99 ms",
                    "nodes CPU",
                    "redis CPU",
                    "gen CPU",
                    "nodes µs/msg",
                    "nodes µs/delivery",
                    "redis µs/msg",
                    "redis µs/delivery",
                    "result",
                ],
                rows,
            ),
        ]

    two = results.get("two-nodes")
    if two and all_steps(two):
        rows = []
        for s in all_steps(two):
            if "port_expected" not in s:
                continue
            cells = []
            for got, want in zip(s["port_delivered"], s["port_expected"], strict=True):
                cells.append(
                    f"{got:,.0f} of {want:,.0f}"
                    + ("" if got == want else f" ({got - want:+,.0f})")
                )
            rows.append(
                [
                    step_label(s),
                    *cells,
                    f"{fmt_num(s.get('lat_local_p50_ms'))} / {fmt_num(s.get('lat_local_p99_ms'))}",
                    f"{fmt_num(s.get('lat_cross_p50_ms'))} / {fmt_num(s.get('lat_cross_p99_ms'))}",
                    " / ".join(fmt_pct(v) for v in s.get("node_cpu_pct", [])),
                    "ok" if s["passed"] else "FAIL",
                ]
            )
        if rows:
            out += [
                "",
                "## Two nodes: every line on both nodes",
                "",
                "Client i (and sender i) goes to node i % 2, so each node has 100 clients and "
                "10 senders (in the probe, the sender is on node A and its one receiver on "
                "node B). Expected for a node: every message sent, times its clients, less "
                "the sender's own copy. Same-node latency: sender and receiver on one node; "
                "cross-node: the line went through Redis to the other node.",
                "",
                table(
                    [
                        "offered msg/s",
                        "node A clients got",
                        "node B clients got",
                        "same-node p50 / p99 ms",
                        "cross-node p50 / p99 ms",
                        "CPU node A / B",
                        "step",
                    ],
                    rows,
                ),
            ]

    rows = []
    for key, res in results.items():
        base = res.get("baseline")
        if base:
            rows.append(
                [
                    names[key],
                    "empty (join+leave)",
                    f"{base['around_nodes_cpu_s'] * 1000:,.0f} ms",
                    "n/a"
                    if base.get("around_redis_cpu_s") is None
                    else f"{base['around_redis_cpu_s'] * 1000:,.0f} ms",
                    fmt_int(base.get("publish_calls")) if key != "single" else "n/a",
                    "",
                    "",
                    "",
                ]
            )
        for s in all_steps(res):
            rows.append(
                [
                    names[key],
                    step_label(s),
                    f"{s['around_nodes_cpu_s']:.2f} s",
                    "n/a"
                    if s.get("around_redis_cpu_s") is None
                    else f"{s['around_redis_cpu_s']:.2f} s",
                    fmt_int(s.get("publish_calls")) if key != "single" else "n/a",
                    fmt_us(s.get("around_nodes_us_per_msg")),
                    fmt_num(s.get("msgs_per_publish")),
                    fmt_num(s.get("publish_usec_per_call")),
                ]
            )
    if rows:
        out += [
            "",
            "## Whole steps, measured around each generator run",
            "",
            "CPU of the nodes and redis-server from /proc/PID/stat before the generator "
            "starts and after the servers are idle again: joins, sync, messages, drain and "
            "the 200 departures. The empty step does all of it but send. Less the empty "
            "step and per message sent, it cross-checks the nodes µs/msg above (10 ms "
            "clock ticks: rough at low rates). PUBLISH calls include those Lua scripts "
            "make (joins and leaves); messages per PUBLISH counts only the step's extra "
            "PUBLISHes over the empty step's; µs per PUBLISH is Redis's own accounting "
            "(INFO commandstats, command execution only).",
            "",
            table(
                [
                    "configuration",
                    "offered msg/s",
                    "nodes CPU",
                    "redis CPU",
                    "PUBLISH calls",
                    "nodes µs/msg (less empty)",
                    "msgs per PUBLISH",
                    "µs per PUBLISH",
                ],
                rows,
            ),
        ]

    out += ["", "## Summary", "", summary_table(results, cost_rate), ""]
    out.append(summary_text(results, cost_rate))
    if any(res.get("probe_steps") for res in results.values()):
        out += [
            "",
            f"### Per message without the fan-out: {PROBE_CLIENTS} clients, {PROBE_SENDERS} "
            f"sender, {settings['probe_rate']:,.0f} msg/s",
            "",
            probe_table(results),
            "",
            "The same measurement with one receiver, so that a message costs about one "
            "write instead of 199 and the run-to-run noise of the fan-out does not hide "
            "what Redis adds per message. With two nodes the sender is on node A and the "
            "receiver on node B: every message crosses.",
        ]
    if report["notes"]:
        out += ["", "Notes:"] + [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


def summary_text(results: dict[str, Any], cost_rate: float) -> str:
    """How to read the summary, with this run's own figures where they help."""
    rate = f"{cost_rate:,.0f}"
    text = [
        "Max sustained: the highest deliveries/s of a passing step; `vs single` is the "
        "ratio to the single server measured in this run. µs/msg: the median of the cost "
        f"steps at {rate} msg/s (range of the repeats in brackets), CPU from the start of "
        "the send window until the last delivery, per message sent. "
        f"{rate} msg/s is below saturation: chatd writes about one message per reactor "
        "turn there, so this is what a message costs; at higher rates chatd batches "
        "several per turn and each costs less. `nodes: added vs single` is the per-message "
        "overhead on the node side: for one node, what Redis adds (the PUBLISH, the node "
        "hearing its own batch back, history kept in Redis); for two nodes, also the "
        "second node's handling of every message (each node parses and fans out every "
        "line to its own half of the room). redis-server's own cost is its column; a "
        "difference smaller than the range of the repeats is noise.",
    ]
    names = {c.key: c.name for c in CONFIGS}
    busy = []
    for key, res in results.items():
        cost = cost_summary(res)
        if cost.get("nodes_cpu_pct") is not None:
            busy.append(f"{names[key]} {cost['nodes_cpu_pct']:.0f}%")
    if busy:
        text.append(f"The nodes' share of the core at {rate} msg/s: " + ", ".join(busy) + ".")
    two = results.get("two-nodes")
    if two and two.get("cost_steps"):
        local = median([s.get("lat_local_p50_ms") for s in two["cost_steps"]])
        cross = median([s.get("lat_cross_p50_ms") for s in two["cost_steps"]])
        local99 = median([s.get("lat_local_p99_ms") for s in two["cost_steps"]])
        cross99 = median([s.get("lat_cross_p99_ms") for s in two["cost_steps"]])
        text.append(
            f"Two nodes at {rate} msg/s: p50 / p99 {fmt_num(local)} / {fmt_num(local99)} ms "
            f"when sender and receiver share a node, {fmt_num(cross)} / {fmt_num(cross99)} ms "
            "across nodes."
        )
    return " ".join(text)


def probe_table(results: dict[str, Any]) -> str:
    """One row per configuration: the probe's CPU per message and its latency."""
    names = {c.key: c.name for c in CONFIGS}
    single = cost_summary(results["single"], "probe_steps") if "single" in results else None
    rows = []
    for key, res in results.items():
        probe = cost_summary(res, "probe_steps")
        reference = single if key != "single" else None
        failed = [s for s in res.get("probe_steps", []) if not s["passed"]]
        rows.append(
            [
                names[key],
                with_spread(probe, "nodes_us_per_msg"),
                delta(probe, reference, "nodes_us_per_msg"),
                with_spread(probe, "redis_us_per_msg") if key != "single" else "n/a",
                with_spread(probe, "total_us_per_msg"),
                delta(probe, reference, "total_us_per_msg"),
                f"{fmt_num(probe.get('lat_p50_ms'))} / {fmt_num(probe.get('lat_p99_ms'))}",
                "; ".join(f"FAIL: {s['why']}" for s in failed) or "ok",
            ]
        )
    return table(
        [
            "configuration",
            "nodes µs/msg",
            "nodes: added vs single",
            "redis-server µs/msg",
            "nodes+redis µs/msg",
            "nodes+redis: added vs single",
            "p50 / p99 ms",
            "result",
        ],
        rows,
    )


def with_spread(summary: dict[str, Any], name: str) -> str:
    """A cost figure, with the range of the repeats in brackets."""
    text = fmt_us(summary.get(name))
    extra = summary.get(f"{name}_spread")
    return f"{text} ({fmt_us(extra[0])}-{fmt_us(extra[1])})" if extra else text


def delta(summary: dict[str, Any], reference: dict[str, Any] | None, name: str) -> str:
    """A cost figure less the reference's, signed."""
    if reference is None:
        return ""
    mine, theirs = summary.get(name), reference.get(name)
    if mine is None or theirs is None:
        return "n/a"
    text = f"{mine - theirs:+,.1f}"
    widths = [
        hi - lo
        for lo, hi in filter(
            None, (summary.get(f"{name}_spread"), reference.get(f"{name}_spread"))
        )
    ]
    if widths and abs(mine - theirs) <= max(widths):
        text += " (within the repeats' spread: noise)"
    return text


def summary_table(results: dict[str, Any], cost_rate: float) -> str:
    """One row per configuration: max sustained, ratio to single, cost per message."""
    names = {c.key: c.name for c in CONFIGS}
    single = results.get("single", {})
    single_max = single.get("max_sustained_deliveries_per_s")
    single_bound = single.get("ended_by") in ("generator", "max-rate")
    single_cost = cost_summary(single) if single else None
    rows = []
    for key, res in results.items():
        value = res.get("max_sustained_deliveries_per_s")
        bound = res.get("ended_by") in ("generator", "max-rate") and value is not None
        quotient = fmt_ratio(value, single_max) if key != "single" else "1.00x"
        if key != "single" and quotient.endswith("x") and (bound or single_bound):
            quotient = (
                "n/a (both bounds)"
                if bound and single_bound
                else ((">=" if bound else "<=") + quotient)
            )
        cost = cost_summary(res)
        reference = single_cost if key != "single" else None

        complete = ""
        if res.get("config_nodes", 1) > 1:
            checked = [s for s in all_steps(res) if "ports_complete" in s]
            passed = [s for s in checked if s["passed"]]
            whole = [s for s in passed if all(s["ports_complete"])]
            complete = f"{len(whole)} of {len(passed)} passing steps"
            failed_short = [s for s in checked if not all(s["ports_complete"])]
            if failed_short:
                complete += (
                    "; short at "
                    + ", ".join(f"{s['offered']:,}" for s in failed_short)
                    + " msg/s (late or lost)"
                )
        rows.append(
            [
                names[key],
                (">=" if bound else "") + fmt_int(value),
                quotient,
                with_spread(cost, "nodes_us_per_msg"),
                delta(cost, reference, "nodes_us_per_msg"),
                with_spread(cost, "redis_us_per_msg") if key != "single" else "n/a",
                fmt_us(cost.get("total_us_per_msg")),
                delta(cost, reference, "total_us_per_msg"),
                fmt_us(cost.get("nodes_us_per_delivery")),
                "" if cost["passed"] else "cost step FAILED",
                complete,
            ]
        )
    rate = f"{cost_rate:,.0f}"
    return table(
        [
            "configuration",
            "max sustained deliveries/s",
            "vs single",
            f"nodes µs/msg @{rate}",
            "nodes: added vs single",
            f"redis-server µs/msg @{rate}",
            "nodes+redis µs/msg",
            "nodes+redis: added vs single",
            "nodes µs/delivery",
            "cost step",
            "every line reached both nodes",
        ],
        rows,
    )


# Main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(
        description="Benchmark chatd's cluster mode: one node, one on Redis, two on Redis.",
        epilog="Extra chatd options: --chatd-arg=--some-option=value (repeatable).",
    )
    parser.add_argument("--quick", action="store_true", help="a run of under a minute and a half")
    parser.add_argument(
        "--configs",
        default=",".join(c.key for c in CONFIGS),
        help="comma-separated: " + ",".join(c.key for c in CONFIGS) + " (default: all)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--chatd-arg", action="append", metavar="ARG", help="extra option for twistd chatd"
    )
    parser.add_argument(
        "--cost-rate",
        type=float,
        default=50.0,
        help="msgs/s of the cost steps, below saturation (default 50)",
    )
    parser.add_argument("--cost-seconds", type=float, help="length of one cost (and probe) step")
    parser.add_argument(
        "--probe-rate",
        type=float,
        default=200.0,
        help="msgs/s of the probe: 2 clients, 1 sender (default 200)",
    )
    parser.add_argument("--cost-repeats", type=int, help="cost steps per configuration")
    parser.add_argument("--step-seconds", type=float, help="length of one ladder step")
    parser.add_argument("--max-rate", type=float, default=200_000.0, help="ladder ceiling")
    parser.add_argument("--redis-server", help="the redis-server binary (default: on PATH)")
    parser.add_argument("--verbose", action="store_true", help="show generator commands")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the report goes to stdout, progress to stderr."""
    args = parse_args(argv)
    settings = Settings.from_args(args)
    wanted = [name.strip() for name in args.configs.split(",") if name.strip()]
    known = {c.key: c for c in CONFIGS}
    if set(wanted) - set(known):
        raise SystemExit(
            f"unknown configuration(s): {', '.join(sorted(set(wanted) - set(known)))}"
        )
    configs = [c for c in CONFIGS if c.key in wanted]

    # As in run.py: SIGTERM and SIGHUP clean up just as Ctrl-C does.
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, terminate)

    processes = Processes()
    try:
        chatd = ChatdTarget(
            name="chatd",
            proto="chatd",
            join_concurrency=JOIN_CONCURRENCY,
            twistd=find_twistd(),
            sendq_bytes=DEFAULT_SENDQ_BYTES,
            extra_args=settings.chatd_args,
        )
        redis_binary = find_redis_server(args.redis_server)
        fd_limit = raise_fd_limit()
        placement = Placement.choose()
        placement.pin_self()
        notes: list[str] = []
        if placement.server_cpu is None:
            notes.append(placement.note)
        binary = build_loadgen()
        report: dict[str, Any] = {
            "settings": {
                **{k: v for k, v in vars(settings).items() if k != "chatd_args"},
                "chatd_args": list(settings.chatd_args),
            },
            "environment": environment(placement, fd_limit),
            "versions": {
                "chatd": f"{package_version('chatd')} ({git_revision()})",
                "redis": redis_version(redis_binary),
                "twisted": package_version("twisted"),
            },
            "chatd_options": [
                "--sendq-bytes",
                str(DEFAULT_SENDQ_BYTES),
                *LIMITS_OFF,
                *settings.chatd_args,
            ],
            "placement_note": (
                "Not pinned."
                if placement.server_cpu is None
                else f"Nodes and redis-server pinned to CPU {placement.server_cpu} "
                f"(`taskset -c {placement.server_cpu}`), the generator to CPU "
                f"{placement.generator_cpu}."
            ),
            "generator_cpus": (
                "not pinned"
                if placement.generator_cpu is None
                else f"CPU {placement.generator_cpu}"
            ),
            "results": {},
            "notes": notes,
        }
        with tempfile.TemporaryDirectory(prefix="chatd-cluster-bench-") as tmp:
            bench = ClusterBench(
                settings=settings,
                generator=Generator(binary, processes, placement, settings.verbose),
                processes=processes,
                placement=placement,
                workdir=Path(tmp),
                chatd=chatd,
                redis_binary=redis_binary,
                notes=notes,
            )
            started = time.monotonic()
            for config in configs:
                progress(
                    f"{config.name}: {config.nodes} node(s)"
                    + (" on Redis" if config.redis else "")
                )
                try:
                    result = run_configuration(bench, config)
                except BenchError as problem:
                    notes.append(f"{config.name} failed: {problem}")
                    progress(f"  FAILED: {problem}")
                    continue
                result["config_nodes"] = config.nodes
                report["results"][config.key] = result
                if result["ended_by"] == "generator":
                    notes.append(
                        f"{config.name}: the ladder stopped at two generator-bound steps in a "
                        "row; its maximum is a lower bound"
                    )
                elif result["ended_by"] == "max-rate":
                    notes.append(f"{config.name}: passed every step up to --max-rate")
                if result["invalid_steps"]:
                    notes.append(
                        f"{config.name}: {result['invalid_steps']} step(s) ran with the "
                        f"generator above {GENERATOR_BUSY_PCT:.0f}% CPU; flagged INVALID, "
                        "not counted"
                    )
                busy = [
                    s
                    for s in [result["baseline"], *all_steps(result)]
                    if (s.get("foreign_cpu_pct") or 0) > FOREIGN_CPU_PCT
                ]
                if busy:
                    notes.append(
                        f"{config.name}: other processes used more than {FOREIGN_CPU_PCT:.0f}% "
                        "of the servers' CPU during "
                        + ", ".join(
                            (
                                f"the {s['offered']:,} msg/s step"
                                if s["offered"]
                                else "the empty step"
                            )
                            + f" ({s['foreign_cpu_pct']:.0f}%)"
                            for s in busy
                        )
                        + "; those figures are understated"
                    )
            report["elapsed_s"] = round(time.monotonic() - started, 1)
        notes.append(f"wall time {report['elapsed_s']:.0f} s")
        print(render(report), end="")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        return 0
    except BenchError as problem:
        print(f"cluster bench: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cluster bench: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()


if __name__ == "__main__":
    sys.exit(main())
