"""A real ``twistd -n chatd`` with every front end on, under every known attack at once.

Two honest line users, alice and bob, chat in #lobby the whole time (a line
every 50 ms each) while the attacks of :mod:`tests.adversarial.attacks` run
from threads, each from its own loopback address. Every check is collected
and the test fails listing all that failed, so one run shows every hole still
open; the full PASS/FAIL list is printed (``pytest -s``, or on failure).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.adversarial.attacks import (
    FLOOD_BURST,
    FLOOD_RATE,
    MAX_PER_IP,
    SECRETS,
    SENDQ_BYTES,
    Target,
    attack_burst,
    attack_escape_command,
    attack_huge_post,
    attack_idle_flood,
    attack_line_garbage,
    attack_poisoned_history,
    attack_slowloris,
    attack_ssh_garbage,
    attack_ssh_silent,
    attack_stalled_reader,
)
from tests.adversarial.clients import (
    Findings,
    LineClient,
    WebWatcher,
    front_end_ports,
    open_fds,
    status_kib,
)
from tests.daemon import Daemon, start_chatd
from tests.wsclient import WebSocketClient

LOOPBACK = "tcp:0:interface=127.0.0.1"
CHAT_INTERVAL_SECONDS = 0.05
# Every attack gives up by itself well within this (the longest waits 30 s).
ATTACKS_TIMEOUT_SECONDS = 50.0
# Open fds allowed above the baseline once the attackers have gone (the baseline
# counts the store, the listening ports, alice, bob and the #lobby watcher).
FD_SLACK = 5
# twistd with every front end loaded (twisted.web, conch, autobahn, cryptography,
# prometheus_client) sits at about 60-70 MB. Everything a connection may hold is
# bounded: --sendq-bytes (256 KiB) out, --max-line-bytes in, a refused body
# never read; with some 60 connections at once that is under 20 MB. Unbounded
# buffering of what the attacks send (a 1 MB line, a 1 GB body, a flood to a
# reader that never reads, 300 connections) would pass this many times over.
PEAK_RSS_LIMIT_KIB = 200 * 1024
SHUTDOWN_WITHIN_SECONDS = 10.0
MAX_LOG_BYTES = 1_000_000


def test_every_attack_at_once_leaves_honest_users_chatting(tmp_path: Path) -> None:
    """Under every attack at once, on every front end, two users still get each other's
    lines all and in order, memory and fds stay bounded, nothing is logged as a crash,
    and the daemon still lets newcomers in and stops cleanly on SIGTERM."""
    daemon = start_chatd(
        tmp_path,
        *("--web", LOOPBACK, "--ssh", LOOPBACK, "--metrics", LOOPBACK),
        *("--data-dir", str(tmp_path / "data"), "--sendq-bytes", str(SENDQ_BYTES)),
        # Attackers come from addresses of their own, so the rate limit would only
        # hide the per-address cap this checks.
        *("--max-per-ip", str(MAX_PER_IP), "--max-conn-rate", "0"),
        *("--flood-burst", str(FLOOD_BURST), "--flood-rate", str(FLOOD_RATE)),
    )
    findings = Findings()
    honest: list[Any] = []
    try:
        ports = front_end_ports(daemon)
        assert "chatd_users" in scrape(ports.metrics)  # the port mapping is right
        pid = daemon.process.pid
        alice, bob = LineClient(ports.line, "alice"), LineClient(ports.line, "bob")
        lobby = WebWatcher(ports.web, "watcher")
        honest += [alice, bob, lobby]
        bob.wait_for(b"*** watcher has joined #lobby")
        time.sleep(0.5)  # the probe's close has been seen
        baseline_fds, baseline_rss = open_fds(pid), status_kib(pid, "VmRSS")
        target = Target(ports, pid, alice, bob, lobby, baseline_fds, daemon.log_text)

        stop_chat = threading.Event()
        sent: dict[str, int] = {}
        chatters = [start(chat, findings, c, stop_chat, sent) for c in (alice, bob)]
        attacks = start_attacks(target, findings)
        deadline = time.monotonic() + ATTACKS_TIMEOUT_SECONDS
        for attack in attacks:
            attack.join(max(0.0, deadline - time.monotonic()))
        unfinished = [attack.name for attack in attacks if attack.is_alive()]
        findings.check("every attack ends in time", not unfinished, f"still running: {unfinished}")
        stop_chat.set()
        for chatter in chatters:
            chatter.join(10)

        check_every_line_arrived_in_order(findings, alice, bob, sent)
        check_every_line_arrived_in_order(findings, bob, alice, sent)
        leaked = [line for line in alice.lines() if any(s in line for s in SECRETS.values())]
        findings.check(
            "escape then command: the room never sees the secret", not leaked, f"{leaked}"
        )
        findings.check(
            "the WebSocket user in #lobby stays connected", lobby.lost is None, f"{lobby.lost}"
        )
        check_fds_back_to_baseline(findings, pid, baseline_fds)
        peak = status_kib(pid, "VmHWM")
        findings.check(
            f"peak RSS stays under {PEAK_RSS_LIMIT_KIB // 1024} MB",
            peak < PEAK_RSS_LIMIT_KIB,
            f"peak {peak // 1024} MB, {baseline_rss // 1024} MB before the attacks",
        )
        check_newcomers_get_in(findings, ports.line, ports.web, ports.metrics, alice)
        check_sigterm_stops_it(findings, daemon)
        check_log_is_clean(findings, daemon.log_text())
    finally:
        for client in honest:
            with contextlib.suppress(OSError):
                client.close()
        daemon.stop()
        print(findings.report())
    failures = findings.failures()
    assert not failures, "\n".join(failures)


def start(function: Callable[..., None], findings: Findings, *args: Any) -> threading.Thread:
    """Run ``function(*args)`` in a thread; an exception it raises becomes a failed check."""

    def run() -> None:
        try:
            function(*args)
        except Exception as problem:
            findings.check(f"{function.__name__} runs to its end", False, repr(problem))

    thread = threading.Thread(target=run, name=function.__name__, daemon=True)
    thread.start()
    return thread


def start_attacks(target: Target, findings: Findings) -> list[threading.Thread]:
    """Every attack in a thread of its own, all at once."""
    return [
        start(attack_burst, findings, target, findings),
        start(attack_poisoned_history, findings, target, findings),
        start(attack_idle_flood, findings, target, findings),
        start(attack_slowloris, findings, target, findings, "web", "127.0.0.5"),
        start(attack_slowloris, findings, target, findings, "metrics", "127.0.0.5"),
        start(attack_huge_post, findings, target, findings, "web", "127.0.0.6"),
        start(attack_huge_post, findings, target, findings, "metrics", "127.0.0.6"),
        start(attack_ssh_silent, findings, target, findings),
        start(attack_ssh_garbage, findings, target, findings),
        start(attack_escape_command, findings, target, findings),
        start(attack_stalled_reader, findings, target, findings),
        start(attack_line_garbage, findings, target, findings),
    ]


def chat(client: LineClient, stop: threading.Event, sent: dict[str, int]) -> None:
    """Say a numbered line every CHAT_INTERVAL_SECONDS until ``stop``; count them in ``sent``."""
    n = 0
    while not stop.is_set():
        client.send(b"%s says %05d\n" % (client.alias.encode(), n))
        n += 1
        sent[client.alias] = n
        time.sleep(CHAT_INTERVAL_SECONDS)


def check_every_line_arrived_in_order(
    findings: Findings, speaker: LineClient, listener: LineClient, sent: dict[str, int]
) -> None:
    """``listener`` got each of ``speaker``'s numbered lines once, in order, and the last."""
    alias = speaker.alias.encode()
    speaker.send(b"%s says done\n" % alias)
    listener.wait_for(b"<%s> %s says done\r\n" % (alias, alias), 20)
    prefix = b"<%s> %s says " % (alias, alias)
    got = [line[len(prefix) :] for line in listener.lines() if line.startswith(prefix)]
    expected = [b"%05d" % n for n in range(sent.get(speaker.alias, 0))] + [b"done"]
    first_wrong = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    findings.check(
        f"{listener.alias} receives every line of {speaker.alias}, in order",
        got == expected and len(expected) > 100,
        f"{len(got)} received of {len(expected)}; first difference at {first_wrong}",
    )


def check_fds_back_to_baseline(findings: Findings, pid: int, baseline: int) -> None:
    """Once the attackers have closed, the daemon's fds come back near where they were."""
    deadline = time.monotonic() + 20
    while (fds := open_fds(pid)) > baseline + FD_SLACK and time.monotonic() < deadline:
        time.sleep(0.5)
    findings.check(
        "open fds come back to the baseline after the attackers close",
        fds <= baseline + FD_SLACK,
        f"{fds} open, {baseline} before the attacks",
    )


def check_newcomers_get_in(
    findings: Findings, line_port: int, web_port: int, metrics_port: int, alice: LineClient
) -> None:
    """After it all, a new line user and a new WebSocket user join and chat, and a scrape works."""
    try:
        carol = LineClient(line_port, "carol")
        carol.send(b"hello after the storm\n")
        findings.check(
            "a new line user gets in and is heard",
            alice.wait_for(b"<carol> hello after the storm\r\n", 10),
        )
        carol.close()
    except OSError as problem:
        findings.check("a new line user gets in and is heard", False, repr(problem))
    try:
        dave = WebSocketClient(web_port)
        dave.send("dave")
        findings.check(
            "a new WebSocket user gets in",
            dave.until(lambda e: e["type"] == "room", timeout=10)["welcome"] == "dave",
        )
        dave.close()
    except OSError as problem:
        findings.check("a new WebSocket user gets in", False, repr(problem))
    try:
        findings.check("metrics are still served", "chatd_users" in scrape(metrics_port))
    except OSError as problem:
        findings.check("metrics are still served", False, repr(problem))


def check_sigterm_stops_it(findings: Findings, daemon: Daemon) -> None:
    """SIGTERM stops the daemon within seconds, with exit status 0."""
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    try:
        code: int | None = daemon.wait(SHUTDOWN_WITHIN_SECONDS)
    except subprocess.TimeoutExpired:
        code = None
    findings.check(
        f"SIGTERM stops it within {SHUTDOWN_WITHIN_SECONDS:g} s, exit status 0",
        code == 0,
        f"exit status {code} after {time.monotonic() - started:.1f} s",
    )


def check_log_is_clean(findings: Findings, log: str) -> None:
    """No traceback, unhandled error or critical event in the log, and no flood of it."""
    for marker in ("Traceback", "Unhandled", "CRITICAL", "#critical]"):
        where = [m.start() for m in re.finditer(re.escape(marker), log)]
        findings.check(
            f"the log has no {marker!r}",
            not where,
            f"{len(where)} times; first: {log[where[0] : where[0] + 300]!r}" if where else "",
        )
    findings.check(
        f"the log stays under {MAX_LOG_BYTES} bytes", len(log) < MAX_LOG_BYTES, f"{len(log)} bytes"
    )


def scrape(port: int) -> str:
    """The text of the metrics endpoint on ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()  # type: ignore[no-any-return]
