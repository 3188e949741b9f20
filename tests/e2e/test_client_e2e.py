"""End-to-end: the installed chatd-client talks to a raw socket client through a real daemon.

The client runs as the real console script, once with pipes (the scripting mode) and
once in a pseudo-terminal (the line editor), against ``twistd -n chatd`` on loopback.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.daemon import Daemon, read_until, start_chatd, venv_script
from tests.tls import make_certificate

TIMEOUT_SECONDS = 15.0
# What a terminal would interpret: CSI and OSC sequences, charset and keypad switches.
_TERMINAL_CODES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b.")
_CURSOR_POSITION_REQUEST = b"\x1b[6n"


def client_command(daemon: Daemon, *args: str) -> list[str]:
    """The chatd-client command line for ``daemon``."""
    return [venv_script("chatd-client"), "--host", daemon.host, "--port", str(daemon.port), *args]


class Output:
    """Bytes some reader thread collects, with a way to wait for a marker."""

    def __init__(self) -> None:
        self.data = b""
        self._changed = threading.Condition()

    def add(self, chunk: bytes) -> None:
        with self._changed:
            self.data += chunk
            self._changed.notify_all()

    def wait_for(self, found: Callable[[bytes], bool], what: str) -> None:
        """Wait until ``found(data)`` holds; fail naming ``what`` after TIMEOUT_SECONDS."""
        with self._changed:
            if not self._changed.wait_for(lambda: found(self.data), TIMEOUT_SECONDS):
                raise AssertionError(f"{what} not in {self.data!r}")

    def expect(self, marker: bytes, start: int = 0) -> int:
        """Wait until ``marker`` appears at or after ``start``; return where it ends."""
        self.wait_for(lambda data: data.find(marker, start) >= 0, repr(marker))
        return self.data.find(marker, start) + len(marker)


class PipedClient:
    """chatd-client with its standard streams on pipes, as a script would run it."""

    def __init__(self, command: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stdout = Output()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(65536):
            self.stdout.add(chunk)

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def end_input(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def wait(self) -> tuple[int, str]:
        """The exit status and everything written to stderr, once stdout is all read."""
        status = self.process.wait(TIMEOUT_SECONDS)
        self._reader.join(TIMEOUT_SECONDS)
        assert self.process.stderr is not None
        return status, self.process.stderr.read().decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT_SECONDS)


@pytest.fixture
def bob(chatd: Daemon) -> Iterator[socket.socket]:
    """A raw socket client that has joined as bob."""
    client = chatd.connect(timeout=TIMEOUT_SECONDS)
    try:
        read_until(client, b"Choose an alias")
        client.sendall(b"bob\n")
        read_until(client, b"*** Type /help for commands.\r\n")
        yield client
    finally:
        client.close()


@pytest.fixture
def piped_alice(chatd: Daemon, bob: socket.socket) -> Iterator[PipedClient]:
    """chatd-client on pipes, joined as alice, with bob already told so."""
    alice = PipedClient(client_command(chatd, "--alias", "alice"))
    try:
        alice.stdout.expect(b"*** Welcome, alice! You are in #lobby (2): alice, bob\n")
        read_until(bob, b"*** alice has joined #lobby (2 here)\r\n")
        yield alice
    finally:
        alice.kill()


def test_piped_client_chats_both_ways_and_exits_zero_at_eof(
    piped_alice: PipedClient, bob: socket.socket
) -> None:
    """Lines flow both ways; at EOF the client quits, the server closes, and it exits 0."""
    bob.sendall(b"hi alice\n")
    piped_alice.stdout.expect(b"<bob> hi alice\n")
    piped_alice.type("hello bob")
    read_until(bob, b"<alice> hello bob\a\r\n")  # it mentions bob: his bell
    piped_alice.type("/me waves")
    read_until(bob, b"* alice waves\r\n")
    piped_alice.end_input()
    status, stderr = piped_alice.wait()
    assert (status, stderr) == (0, "")
    read_until(bob, b"*** alice has left (Quit)\r\n")
    assert piped_alice.stdout.data.endswith(b"*** Goodbye.\n")
    assert b"\r" not in piped_alice.stdout.data


def test_piped_script_lines_all_arrive_before_quit(chatd: Daemon, bob: socket.socket) -> None:
    """printf 'alias\\nline\\n...' | chatd-client delivers every line, in order, then quits."""
    script = b"carol\nline one\nline two\n/me is done"
    result = subprocess.run(
        client_command(chatd), input=script, capture_output=True, timeout=TIMEOUT_SECONDS
    )
    assert (result.returncode, result.stderr) == (0, b"")
    heard = read_until(bob, b"*** carol has left (Quit)\r\n")
    assert re.search(
        rb"<carol> line one\r\n<carol> line two\r\n\* carol is done\r\n\*\*\* carol has left",
        heard,
    ), heard
    # Standard output holds only what the server sent, without CRs.
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("*** Welcome to chatd ")
    assert "*** Welcome, carol! You are in #lobby (2): bob, carol" in lines
    assert lines[-1] == "*** Goodbye."
    assert all(line.startswith(("*** ", "!!! ")) for line in lines), lines


def test_piped_client_exits_one_when_server_closes_first(
    chatd: Daemon, piped_alice: PipedClient
) -> None:
    """When the server goes away before we said /quit, the client says so and exits 1."""
    chatd.stop()
    piped_alice.stdout.expect(b"*** Server shutting down.\n")
    status, stderr = piped_alice.wait()
    assert status == 1
    assert stderr == "chatd-client: the server closed the connection\n"


def test_client_exits_two_with_message_when_nothing_listens() -> None:
    """Connecting to a port nobody listens on prints the reason and exits 2."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    # The port is closed again: connecting to it is refused.
    command = [venv_script("chatd-client"), "--host", "127.0.0.1", "--port", str(port)]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_SECONDS
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"chatd-client: cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in result.stderr.lower()
    assert result.stdout == ""


class Terminal:
    """chatd-client in a pseudo-terminal of 24x100, answering cursor position requests."""

    def __init__(self, command: Sequence[str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color"}
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.output = Output()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the program has exited and closed the terminal
                return
            if not chunk:
                return
            # A real terminal answers "where is the cursor?"; prompt_toolkit asks.
            for _ in range(chunk.count(_CURSOR_POSITION_REQUEST)):
                os.write(self.master, b"\x1b[1;1R")
            self.output.add(chunk)

    @staticmethod
    def without_controls(data: bytes) -> bytes:
        """What was written, without terminal control sequences and carriage returns."""
        return _TERMINAL_CODES.sub(b"", data).replace(b"\r", b"")

    def expect(self, text: bytes, start: int = 0) -> int:
        """Wait until ``text`` shows (ignoring control sequences); return where it ends."""
        self.output.wait_for(
            lambda data: self.without_controls(data).find(text, start) >= 0, repr(text)
        )
        return self.without_controls(self.output.data).find(text, start) + len(text)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self) -> int:
        """The exit status; on a time-out the failure shows what the terminal got."""
        try:
            return self.process.wait(TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running; terminal got {self.output.data!r}") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT_SECONDS)
        os.close(self.master)


def test_interactive_client_in_a_terminal(chatd: Daemon, bob: socket.socket) -> None:
    """On a terminal, incoming lines show above the prompt, typing survives them, Ctrl-D quits."""
    alice = Terminal(client_command(chatd, "--alias", "alice"))
    try:
        shown = alice.expect(b"*** Type /help for commands.")
        read_until(bob, b"*** alice has joined #lobby (2 here)\r\n")
        shown = alice.expect(b"alice>", shown)  # the prompt is up: the editor has the keys
        alice.type(b"hel")
        shown = alice.expect(b"hel", shown)
        bob.sendall(b"hi alice\n")
        shown = alice.expect(b"<bob> hi alice", shown)
        # The half-typed line is drawn again below the incoming one, and still there.
        alice.expect(b"alice> hel", shown)
        alice.type(b"lo bob\r")
        read_until(bob, b"<alice> hello bob\a\r\n")  # it mentions bob: his bell
        alice.expect(b"<alice> hello bob", shown)  # the local echo of our own line
        alice.type(b"\x04")  # Ctrl-D on an empty line
        assert alice.wait() == 0
        read_until(bob, b"*** alice has left (Quit)\r\n")
        alice.expect(b"*** Goodbye.")
    finally:
        alice.close()


def test_piped_client_over_tls_checks_the_certificate(tmp_path: Path) -> None:
    """chatd-client --tls --ca-file talks through an ssl: port; against an untrusted
    certificate the handshake fails, and the client says so and exits 1."""
    cert, key = make_certificate(tmp_path)
    daemon = start_chatd(
        tmp_path,
        "--port",
        "ssl:0:interface=127.0.0.1",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    try:
        _plain, tls_port = daemon.wait_for_ports(2)
        command = [
            venv_script("chatd-client"),
            "--host",
            "localhost",
            "--port",
            str(tls_port),
            "--tls",
        ]
        result = subprocess.run(
            [*command, "--ca-file", str(cert)],
            input=b"dana\nsecret hello\n",
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
        )
        assert (result.returncode, result.stderr) == (0, b"")
        assert b"*** Welcome, dana!" in result.stdout
        untrusted = subprocess.run(
            command, input=b"erin\n", capture_output=True, timeout=TIMEOUT_SECONDS
        )
        assert untrusted.returncode == 1
        assert b"certificate verify failed" in untrusted.stderr
        assert untrusted.stdout == b""  # nothing from the server was shown
    finally:
        daemon.stop()


def register(daemon: Daemon, alias: str, password: str) -> None:
    """Register ``alias`` from a raw socket client, which then leaves."""
    owner = daemon.connect(timeout=TIMEOUT_SECONDS)
    try:
        read_until(owner, b"Choose an alias")
        owner.sendall(f"{alias}\n/register {password}\n".encode())
        read_until(owner, f"*** Registered {alias}".encode())
        owner.sendall(b"/quit\n")
        read_until(owner, b"*** Goodbye.\r\n")
    finally:
        owner.close()


def test_piped_client_logs_a_registered_alias_in_with_a_password_option(
    chatd: Daemon, bob: socket.socket, tmp_path: Path
) -> None:
    """Piped with --alias of a registered alias, the password comes from --password-file or
    CHATD_PASSWORD and every piped line is chat; without one the client says how and
    exits 1, and no piped line reaches anyone."""
    register(chatd, "rosa", "rosa-secret-pass")
    secret = tmp_path / "password"
    secret.write_text("rosa-secret-pass\n")
    with_file = subprocess.run(
        client_command(chatd, "--alias", "rosa", "--password-file", str(secret)),
        input=b"first line\n",
        capture_output=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert (with_file.returncode, with_file.stderr) == (0, b"")
    read_until(bob, b"<rosa> first line\r\n")
    with_variable = subprocess.run(
        client_command(chatd, "--alias", "rosa"),
        input=b"by the variable\n",
        capture_output=True,
        timeout=TIMEOUT_SECONDS,
        env={**os.environ, "CHATD_PASSWORD": "rosa-secret-pass"},
    )
    assert with_variable.returncode == 0
    read_until(bob, b"<rosa> by the variable\r\n")
    without = subprocess.run(
        client_command(chatd, "--alias", "rosa"),
        input=b"rosa-secret-pass?\nnot chat\n",
        capture_output=True,
        timeout=TIMEOUT_SECONDS,
        env={k: v for k, v in os.environ.items() if k != "CHATD_PASSWORD"},
    )
    assert without.returncode == 1
    assert b"--password-file FILE or the CHATD_PASSWORD environment variable" in without.stderr
    bob.sendall(b"/who\n")
    said = read_until(bob, b"*** In #lobby (1): bob\r\n")
    assert b"not chat" not in said and b"rosa-secret" not in said


def test_interactive_password_is_masked_and_not_kept(chatd: Daemon) -> None:
    """At the Password: prompt the interactive client masks what is typed, and the up
    arrow does not bring the password back."""
    register(chatd, "ines", "ines-secret-pass")
    ines = Terminal(client_command(chatd, "--alias", "ines"))
    try:
        shown = ines.expect(b"*** ines is registered. Password:")
        shown = ines.expect(b"password>", shown)
        ines.type(b"ines-secret-pass")
        shown = ines.expect(b"*" * 16, shown)
        ines.type(b"\r")
        shown = ines.expect(b"*** Type /help for commands.", shown)
        shown = ines.expect(b"ines>", shown)
        ines.type(b"\x1b[A/who\r")  # the up arrow: nothing in the history to bring back
        ines.expect(b"*** In #lobby (1): ines", shown)
        ines.type(b"\x04")
        assert ines.wait() == 0
    finally:
        ines.close()
    assert b"ines-secret" not in ines.output.data


def test_tls_name_option_and_readable_tls_errors(tmp_path: Path) -> None:
    """--server-name sets the name checked (here for a connection to 127.0.0.1), and a name
    the certificate is not for, or an untrusted certificate, is said in words."""
    cert, key = make_certificate(tmp_path)
    daemon = start_chatd(
        tmp_path, "--port", "ssl:0:interface=127.0.0.1", "--tls-cert", str(cert),
        "--tls-key", str(key),
    )  # fmt: skip
    try:
        _plain, tls_port = daemon.wait_for_ports(2)
        command = [
            venv_script("chatd-client"), "--host", "127.0.0.1", "--port", str(tls_port), "--tls",
        ]  # fmt: skip

        def run(*options: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [*command, *options], input=b"tina\n", capture_output=True,
                timeout=TIMEOUT_SECONDS,
            )  # fmt: skip

        named = run("--ca-file", str(cert), "--server-name", "localhost")
        assert (named.returncode, named.stderr) == (0, b"")
        other = run("--ca-file", str(cert), "--server-name", "chat.example.org")
        assert other.returncode == 1
        assert other.stderr == (
            b"chatd-client: TLS: the server's certificate is not for chat.example.org"
            b" (use --server-name with a name the certificate is for)\n"
        )
        untrusted = run()
        assert untrusted.returncode == 1
        assert untrusted.stderr.startswith(b"chatd-client: TLS: certificate verify failed")
        assert b"use --ca-file" in untrusted.stderr and b"[(" not in untrusted.stderr
    finally:
        daemon.stop()


def test_a_password_retyped_during_the_check_never_becomes_an_alias(
    chatd: Daemon, bob: socket.socket
) -> None:
    """Over a real socket, a line sent while a wrong password is checked (a retyped
    password) is discarded with a notice, not read as the next alias for all to see."""
    register(chatd, "nico", "nico-secret-pass")
    typist = chatd.connect(timeout=TIMEOUT_SECONDS)
    try:
        read_until(typist, b"Choose an alias")
        typist.sendall(b"nico\n")
        read_until(typist, b"*** nico is registered. Password:\r\n")
        typist.sendall(b"wrong-pass\n")
        time.sleep(0.3)  # the check is under way (argon2, then a one-second pause)
        typist.sendall(b"nico-secret-pass\n")
        answer = read_until(typist, b"*** Choose an alias (")
        assert answer.startswith(
            b"!!! Wrong password for nico.\r\n"
            b"!!! 1 line typed during the password check was discarded.\r\n"
        )
        typist.sendall(b"/quit\n")
        read_until(typist, b"*** Goodbye.\r\n")
    finally:
        typist.close()
    bob.sendall(b"/who\n")
    assert b"nico-secret-pass" not in read_until(bob, b"*** In #lobby (1): bob\r\n")
