"""The attacks, one small function each, run from threads against one live daemon.

Each records what it proves in :class:`~tests.adversarial.clients.Findings`
instead of raising, so a run reports every hole that is still open, not only
the first. Each comes from its own loopback address (see clients.py).
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.adversarial.clients import (
    Findings,
    FrontEnds,
    LineClient,
    WebWatcher,
    closes_within,
    connect_from,
    deleted_files,
    open_fds,
)
from tests.wsclient import WebSocketClient

MAX_PER_IP = 40
SENDQ_BYTES = 256 * 1024
# Flood control lets the honest users (20 lines a second each) and the flooders
# (FLOOD_LINES_PER_WRITE a second each) through undelayed.
FLOOD_BURST = 40
FLOOD_RATE = 40

BURST_LINE = b'"' * 2040  # each '"' becomes '\\"' in JSON: twice the bytes for the web
BURST_USERS = 4
BURST_LINES = 10
BURST_ROUNDS = 2
IDLE_FLOOD_PER_PORT = 100
# Connections the other attacks hold at once, at most (for the fd bound during the flood).
OTHER_ATTACK_CONNECTIONS = 40
SLOWLORIS_HEADER_EVERY_SECONDS = 2.0
# A deadline for the head of a request is "seconds": 10 s, and 5 more to take the 408.
SLOWLORIS_CLOSED_WITHIN_SECONDS = 20.0
# chatd gives an SSH client 30 s to log in, then a few to take its disconnect message.
SSH_PRE_AUTH_CLOSED_WITHIN_SECONDS = 40.0
SSH_GARBAGE_CLOSED_WITHIN_SECONDS = 10.0
# Enough to fill the stalled reader's send queue and the kernel buffers (some 2-4 MB on
# loopback) well within STALLED_CUT_OFF_WITHIN_SECONDS.
FLOODERS = 4
FLOOD_LINES_PER_WRITE = 40
FLOOD_LINE = b"f" * 1990
STALLED_CUT_OFF_WITHIN_SECONDS = 25.0
SECRETS = {
    b"\x1b[A/msg bob secret-arrow\n": b"secret-arrow",
    b"\x0c/msg bob secret-formfeed\n": b"secret-formfeed",
    b"   /msg bob secret-spaces\n": b"secret-spaces",
    b"\x1b[2K\r/msg bob secret-return\n": b"secret-return",
}
# Lines of at most 2,040 bytes that upset a JSON encoder, a terminal or a page.
POISON = [
    b'"' * 2040,
    b"\\" * 2040,
    b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc" * 180,  # invalid UTF-8
    b"\xed\xa0\x80\xed\xbf\xbf" * 300,  # UTF-8 encoded surrogates
    b"\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1bP+q\x1b\\" * 50,
    "line\u2028break\u2029para\u202eevil".encode() * 50,
    b"x\x00y\x7f\x9b\x85z" * 250,
    b"</script><img src=x onerror=alert(1)>" * 50,
    ("z" + "\u0301" * 600).encode(),
    ("\U0001f469\u200d\U0001f4bb" * 180).encode(),
]


@dataclass
class Target:
    """The daemon under attack, and the honest users the attacks must not disturb."""

    ports: FrontEnds
    pid: int
    alice: LineClient
    bob: LineClient
    lobby: WebWatcher
    baseline_fds: int
    log_text: Callable[[], str]


def attack_burst(target: Target, findings: Findings) -> None:
    """Several line users each paste 10 lines of 2,040 '"' in one write, at the same moment,
    while a WebSocket user sits in #lobby: everyone in #lobby gets every line."""
    bursters = [
        LineClient(target.ports.line, f"burst{n}", "127.0.0.3") for n in range(BURST_USERS)
    ]
    paste = (BURST_LINE + b"\n") * BURST_LINES
    expected = BURST_USERS * BURST_LINES * BURST_ROUNDS
    for _ in range(BURST_ROUNDS):
        for burster in bursters:
            burster.send(paste)
        time.sleep(3)
    seen = target.alice.wait_until(
        lambda received: received.count(b"> " + BURST_LINE + b"\r\n") >= expected, 20
    )
    findings.check("burst: alice receives every burst line", seen)
    deadline = time.monotonic() + 20
    while (web_seen := _burst_events(target.lobby)) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    findings.check(
        "burst: the WebSocket user in #lobby receives every burst line",
        web_seen == expected,
        f"{web_seen} of {expected}; connection lost: {target.lobby.lost}",
    )
    for burster in bursters:
        burster.close()


def _burst_events(lobby: WebWatcher) -> int:
    return sum(
        1
        for event in lobby.events()
        if event.get("type") == "message" and str(event.get("sender")).startswith("burst")
    )


def attack_poisoned_history(target: Target, findings: Findings) -> None:
    """A room's history is filled with hostile lines; a WebSocket user then joins it and asks
    for /history 100: they get all of it, cleaned, and can still chat."""
    poisoner = LineClient(target.ports.line, "poisoner", "127.0.0.4")
    poisoner.send(b"/join #poison\n")
    poisoner.wait_for(b"You are now in #poison")
    lines = [POISON[n % len(POISON)] for n in range(100)]
    for start in range(0, len(lines), 20):  # within the flood burst
        poisoner.send(b"".join(line + b"\n" for line in lines[start : start + 20]))
        time.sleep(1)
    historian = WebSocketClient(target.ports.web)
    try:
        historian.send("historian")
        historian.until(lambda e: e["type"] == "room", timeout=15)
        historian.send("/join #poison")
        historian.until(lambda e: e["type"] == "room" and e["room"] == "#poison", timeout=15)
        historian.send("/history 100")
        history = historian.until(
            lambda e: e["type"] == "history" and len(e["entries"]) >= 100, timeout=15
        )
        texts = [entry["text"] for entry in history["entries"]]
        findings.check(
            "poisoned history: /history 100 over WebSocket returns all 100 lines",
            len(texts) == 100,
            f"{len(texts)} lines",
        )
        unclean = [text[:40] for text in texts if any(_shown_raw(char) for char in text)]
        findings.check(
            "poisoned history: the lines come back without controls",
            not unclean,
            f"{len(unclean)} unclean, e.g. {unclean[:2]!r}",
        )
        historian.send("still chatting after the history")
        findings.check(
            "poisoned history: the WebSocket user can still chat",
            poisoner.wait_for(b"<historian> still chatting after the history\r\n"),
        )
    except (OSError, TimeoutError) as problem:
        findings.check(
            "poisoned history: the WebSocket user gets its history", False, repr(problem)
        )
    finally:
        historian.close()
        poisoner.close()


def _shown_raw(char: str) -> bool:
    """Whether ``char`` is one a terminal would act on, or that splits a line."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in "\u2028\u2029\u202e"


def attack_idle_flood(target: Target, findings: Findings) -> None:
    """One address opens 100 idle connections to each of the web, SSH and metrics ports:
    past --max-per-ip they are refused at once, and the daemon's fds stay bounded."""
    ports = {"web": target.ports.web, "ssh": target.ports.ssh, "metrics": target.ports.metrics}
    held: list[tuple[str, socket.socket]] = []
    try:
        for _ in range(IDLE_FLOOD_PER_PORT):
            for name, port in ports.items():
                held.append((name, connect_from(port, "127.0.0.2")))
        time.sleep(3)  # long enough for every refusal to be answered and closed
        open_now = {name: 0 for name in ports}
        for name, sock in held:
            if not _closed_by_server(sock):
                open_now[name] += 1
        admitted = sum(open_now.values())
        findings.check(
            f"idle flood: at most --max-per-ip ({MAX_PER_IP}) of {len(held)} admitted",
            admitted <= MAX_PER_IP,
            f"still open per port: {open_now}",
        )
        for name in ports:
            findings.check(
                f"idle flood: the {name} port refuses past --max-per-ip",
                open_now[name] < IDLE_FLOOD_PER_PORT,
                f"{open_now[name]} of {IDLE_FLOOD_PER_PORT} still open",
            )
        fds = open_fds(target.pid)
        bound = target.baseline_fds + MAX_PER_IP + OTHER_ATTACK_CONNECTIONS
        findings.check(
            "idle flood: the daemon's open fds stay bounded while it lasts",
            fds <= bound,
            f"{fds} open, bound {bound} (baseline {target.baseline_fds})",
        )
        time.sleep(3)
    finally:
        for _, sock in held:
            sock.close()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (what it said before is read and dropped)."""
    sock.setblocking(False)
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except OSError:
        return True
    return False


def attack_slowloris(target: Target, findings: Findings, front_end: str, source: str) -> None:
    """An HTTP client sends its request head one header line every few seconds:
    the web and metrics ports close it within seconds, not when it is done."""
    port = getattr(target.ports, front_end)
    sock = connect_from(port, source)
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = False
    n = 0
    try:
        while time.monotonic() - started < SLOWLORIS_CLOSED_WITHIN_SECONDS:
            closed, _ = closes_within(sock, SLOWLORIS_HEADER_EVERY_SECONDS)
            if closed:
                break
            n += 1
            sock.sendall(b"X-Slow-%d: still coming\r\n" % n)
    except OSError:  # the server closed while we wrote
        closed = True
    findings.check(
        f"slowloris: the {front_end} port closes a trickled request head within"
        f" {SLOWLORIS_CLOSED_WITHIN_SECONDS:g} s",
        closed,
        f"{n} header lines over {time.monotonic() - started:.1f} s",
    )
    sock.close()


def attack_huge_post(target: Target, findings: Findings, front_end: str, source: str) -> None:
    """Requests announcing a huge body (by length, and chunked) on the web and metrics ports
    are refused from the head alone, before any body is sent, and nothing is spooled."""
    port = getattr(target.ports, front_end)
    heads = {
        "Content-Length": b"Content-Length: 1073741824\r\n",
        "chunked": b"Transfer-Encoding: chunked\r\n",
    }
    for how, header in heads.items():
        sock = connect_from(port, source)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n")
        closed, answer = closes_within(sock, 10)
        spooled = deleted_files(target.pid)
        status = answer.split(b"\r\n", 1)[0]
        findings.check(
            f"huge POST ({how}): the {front_end} port refuses it before the body, and closes",
            closed and status.startswith(b"HTTP/1.1 4"),
            f"answer {status!r}, closed: {closed}",
        )
        findings.check(
            f"huge POST ({how}): the {front_end} port spools nothing",
            not spooled,
            f"unnamed files open: {spooled}",
        )
        sock.close()


def attack_ssh_silent(target: Target, findings: Findings) -> None:
    """An SSH client that opens TCP and then sends nothing is closed by a pre-auth deadline."""
    sock = connect_from(target.ports.ssh, "127.0.0.7")
    started = time.monotonic()
    closed, _ = closes_within(sock, SSH_PRE_AUTH_CLOSED_WITHIN_SECONDS)
    findings.check(
        f"ssh: a silent client is closed within {SSH_PRE_AUTH_CLOSED_WITHIN_SECONDS:g} s",
        closed,
        f"after {time.monotonic() - started:.1f} s",
    )
    sock.close()


def attack_ssh_garbage(target: Target, findings: Findings) -> None:
    """Garbage instead of a version string, and garbage packets after one, close the
    SSH connection at once."""
    rng = random.Random(12)
    garbage = bytes(rng.randrange(256) for _ in range(16 * 1024))
    attempts = {
        "garbage instead of a version": garbage,
        "garbage packets after a version": b"SSH-2.0-attacker\r\n" + b"\xff" * 4096 + garbage,
    }
    for what, data in attempts.items():
        sock = connect_from(target.ports.ssh, "127.0.0.7")
        with contextlib.suppress(OSError):  # closed while we wrote: what we want
            sock.sendall(data)
        closed, _ = closes_within(sock, SSH_GARBAGE_CLOSED_WITHIN_SECONDS)
        findings.check(f"ssh: {what} closes the connection", closed)
        sock.close()


def attack_escape_command(target: Target, findings: Findings) -> None:
    """Lines that start with an escape sequence, a control or blanks before ``/msg bob ...``
    run the command: bob gets the whisper, and the room never sees it."""
    sneak = LineClient(target.ports.line, "sneak", "127.0.0.8")
    for line in SECRETS:
        sneak.send(line)
        time.sleep(0.2)
    for line, secret in SECRETS.items():
        findings.check(
            f"escape then command: {line[:12]!r}... runs /msg (bob gets the whisper)",
            target.bob.wait_for(b"*sneak* " + secret + b"\r\n", 10),
        )
    sneak.close()


def attack_stalled_reader(target: Target, findings: Findings) -> None:
    """A user who never reads sits in a room that others flood: it is cut off by its send
    queue, and the flooders (who read) stay."""
    flooders = [
        LineClient(target.ports.line, f"flooder{n}", "127.0.0.10") for n in range(FLOODERS)
    ]
    for flooder in flooders:
        flooder.send(b"/join #flood\n")
        flooder.wait_for(b"You are now in #flood")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.bind(("127.0.0.9", 0))
    stalled.connect(("127.0.0.1", target.ports.line))
    stalled.sendall(b"stalled\n/join #flood\n")
    flooders[0].wait_for(b"*** stalled has joined #flood")
    started = time.monotonic()
    cut_off = b"*** stalled has left (Send queue exceeded)\r\n"
    sent = 0
    while time.monotonic() - started < STALLED_CUT_OFF_WITHIN_SECONDS:
        if cut_off in flooders[0].received():
            break
        for flooder in flooders:
            flooder.send(
                b"".join(
                    b"%06d " % (sent + n) + FLOOD_LINE + b"\n"
                    for n in range(FLOOD_LINES_PER_WRITE)
                )
            )
            sent += FLOOD_LINES_PER_WRITE
        time.sleep(1)
    findings.check(
        "stalled reader: cut off by its send queue while the room is flooded",
        flooders[0].wait_for(cut_off, 5),
        f"after {sent} lines of {len(FLOOD_LINE)} bytes in {time.monotonic() - started:.1f} s",
    )
    findings.check(
        "stalled reader: the cut-off is logged with its reason",
        f"(stalled) cut off: more than {SENDQ_BYTES} bytes waiting" in target.log_text(),
    )
    findings.check(
        "stalled reader: the flooders, who read, are still connected",
        not any(flooder.closed for flooder in flooders),
    )
    stalled.close()
    for flooder in flooders:
        flooder.close()


def attack_line_garbage(target: Target, findings: Findings) -> None:
    """Invalid UTF-8, NUL bytes, telnet IAC noise and a 1 MB line on the line port: each gets
    its answer, and the sender can still chat."""
    source = "127.0.0.11"
    garbler = _join_through_telnet_noise(target.ports.line, source)
    garbler.send(b"bad \xc3\x28 utf8 \xed\xa0\x80 \xf8\x88\x80\x80\x80 here\n")
    garbler.send(b"nul\x00in\x00the\x00middle\n")
    garbler.send(b"\xff\xfb\x01\xff\xfd\x03\xff\xf4\xff\xff iac noise\n")
    garbler.send(b"x" * 1_000_000)
    garbler.send(b"\ngarbler still here\n")
    findings.check(
        "line garbage: a 1 MB line is refused with an error",
        garbler.wait_for(b"!!! Line too long", 15),
    )
    findings.check(
        "line garbage: the garbler can still chat after all of it",
        target.alice.wait_for(b"<garbler> garbler still here\r\n", 15),
    )
    findings.check(
        "line garbage: NUL and invalid UTF-8 reach the room cleaned",
        target.alice.wait_for(b"<garbler> nulinthemiddle\r\n", 15)
        and b"<garbler> bad \xef\xbf\xbd( utf8" in target.alice.received(),
    )
    garbler.close()
    _send_and_leave(target.ports.line, source, b"endless\n" + b"y" * 1_000_000)
    _send_and_leave(target.ports.line, source, b"\xff\xfa\x18" + bytes(range(256)) * 4096)
    _send_and_leave(target.ports.line, source, random.Random(7).randbytes(256 * 1024))


def _join_through_telnet_noise(port: int, source: str) -> LineClient:
    """Telnet option negotiation before the alias and an IAC NOP inside it: still "garbler"."""
    negotiation = b"\xff\xfb\x1f\xff\xfd\x01\xff\xfa\x18\x00xterm\xff\xf0"
    return LineClient(port, "garbler", source, alias_line=negotiation + b"gar\xff\xf1bler\r\n")


def _send_and_leave(port: int, source: str, data: bytes) -> None:
    """Connect, send ``data`` without reading a byte, and close."""
    sock = connect_from(port, source)
    with contextlib.suppress(OSError):  # the server gave up on us first
        sock.sendall(data)
    sock.close()
