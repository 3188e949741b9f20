"""End-to-end: the real OpenSSH client, in a pseudo-terminal, chats through --ssh."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.daemon import Daemon, read_until, start_chatd
from tests.test_editor import Screen

pytestmark = pytest.mark.skipif(
    shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="the OpenSSH client is not installed",
)


class Terminal:
    """``ssh`` running in a pseudo-terminal, as a person would run it."""

    def __init__(self, command: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.execvp(command[0], command)
        self.output = b""

    def expect(self, wanted: bytes, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{wanted!r} not seen; got {self.output!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:  # the child is gone
                    raise EOFError(f"{wanted!r} not seen; got {self.output!r}") from None

    def drain(self, seconds: float) -> None:
        """Read what comes within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:  # the child is gone
                    return

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def ssh_command(port: int, alias: str, *options: str) -> list[str]:
    """``ssh`` to chatd as ``alias``, trusting whatever host key it shows."""
    return [
        "ssh",
        *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
        *options,
        *("-p", str(port), f"{alias}@127.0.0.1"),
    ]


def register_by_line(daemon: Daemon, alias: str, password: str) -> socket.socket:
    """Register ``alias`` from a line client; return the still-connected client."""
    owner = daemon.connect()
    read_until(owner, b"Choose an alias")
    owner.sendall(f"{alias}\n/register {password}\n".encode())
    read_until(owner, f"*** Registered {alias}".encode())
    return owner


def quit_line(client: socket.socket) -> None:
    client.sendall(b"/quit\n")
    read_until(client, b"*** Goodbye.\r\n")


def test_an_ssh_user_and_a_line_user_chat(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    data = tmp_path / "data"
    options = ("--ssh", "tcp:0:interface=127.0.0.1", "--data-dir", str(data))
    limits = ("--sendq-bytes", "65536", "--flood-rate", "0")
    daemon = start_chatd(tmp_path, *options, *limits)
    terminal = None
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        by_key = ("-o", "BatchMode=yes", "-i", str(key))
        terminal = Terminal(ssh_command(ssh_port, "sally", *by_key))
        terminal.expect(b"*** Welcome, sally! You are in #lobby (1): sally")
        line = daemon.connect()
        read_until(line, b"Choose an alias")
        line.sendall(b"liner\n")
        read_until(line, b"Type /help for commands.\r\n")
        terminal.expect(b"*** liner has joined #lobby (2 here)")
        terminal.type(b"hello li")  # half a line typed when a message arrives...
        time.sleep(0.3)
        line.sendall(b"hi sally\n")
        terminal.expect(b"<liner> hi sally")
        terminal.type(b"ne\r")  # ...and the line is still whole
        read_until(line, b"<sally> hello line\r\n")
        terminal.type(b"\x04")  # Ctrl-D quits
        read_until(line, b"*** sally has left (Quit)\r\n")
        terminal.close()
        terminal = Terminal(ssh_command(ssh_port, "tom", *by_key))
        terminal.expect(b"*** Welcome, tom!")
        terminal.close()  # the ssh process killed: the departure is announced all the same
        read_until(line, b"*** tom has left (Connection closed)\r\n")
        terminal = Terminal(ssh_command(ssh_port, "stalled", *by_key))
        terminal.expect(b"*** Welcome, stalled!")  # and from now on nobody reads its screen
        payload = b"x" * 200
        for batch in range(100):  # 4 MB: past what the pty, ssh and TCP hold
            line.sendall(b"".join(b"%d %s\n" % (batch * 100 + n, payload) for n in range(100)))
            time.sleep(0.01)
        assert b"*** stalled has left (Send queue exceeded)\r\n" in read_until(
            line, b"*** stalled has left (Send queue exceeded)\r\n", timeout=30
        )
        terminal.close()
        terminal = None
        host_key = (data / "ssh_host_ed25519_key").read_bytes()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(5) == 0
    finally:
        if terminal is not None:
            terminal.close()
        daemon.stop()
    daemon = start_chatd(tmp_path, *options)  # the host key is made once, then reused
    daemon.stop()
    assert (data / "ssh_host_ed25519_key").read_bytes() == host_key
    assert oct((data / "ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"


def test_a_key_bound_with_sshkey_logs_its_owner_in_without_the_password(
    tmp_path: Path,
) -> None:
    keys = {}
    for name in ("bound", "other"):
        keys[name] = tmp_path / f"id_{name}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys[name])], check=True
        )
    daemon = start_chatd(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1")
    terminals = []
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        owner = register_by_line(daemon, "rita", "rita-secret-pass")
        public_key = (tmp_path / "id_bound.pub").read_bytes().strip()
        owner.sendall(b"/sshkey add " + public_key + b"\n")
        read_until(owner, b"no password asked.\r\n")
        quit_line(owner)

        def ssh_as_rita(key: Path) -> Terminal:
            by_key = ("-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key))
            terminal = Terminal(ssh_command(ssh_port, "rita", *by_key))
            terminals.append(terminal)
            return terminal

        by_key = ssh_as_rita(keys["bound"])
        by_key.expect(b"*** Welcome, rita! You are in #lobby (1): rita")
        assert b"Password" not in by_key.output
        by_key.type(b"\x04")
        time.sleep(0.5)
        stranger = ssh_as_rita(keys["other"])
        stranger.expect(b"*** rita is registered. Password:")
    finally:
        for terminal in terminals:
            terminal.close()
        daemon.stop()


def test_without_a_key_guests_type_anything_and_owners_their_password(tmp_path: Path) -> None:
    """Password authentication: any password for a guest, the account's for a registered
    alias (checked at the SSH prompt, which does not echo; a wrong one is denied)."""
    daemon = start_chatd(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1")
    terminals = []
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        quit_line(register_by_line(daemon, "pat", "pat-secret-pass"))

        def ssh_with_password(alias: str) -> Terminal:
            no_key = ("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password")
            terminal = Terminal(ssh_command(ssh_port, alias, *no_key))
            terminals.append(terminal)
            terminal.expect(b"password:")
            return terminal

        guest = ssh_with_password("gus")
        guest.type(b"anything\r")
        guest.expect(b"*** Welcome, gus!")
        pat = ssh_with_password("pat")
        pat.type(b"wrong-guess\r")
        pat.expect(b"Permission denied, please try again.")
        pat.type(b"pat-secret-pass\r")
        pat.expect(b"*** Welcome, pat! You are in #lobby (2)")
        assert b"is registered. Password:" not in pat.output
    finally:
        for terminal in terminals:
            terminal.close()
        daemon.stop()


def test_a_second_shell_over_one_connection_is_refused_and_leaves_no_ghost(
    tmp_path: Path,
) -> None:
    """OpenSSH multiplexing (ControlMaster): the second shell on the connection is told why
    and refused, the first chats on, leaving frees its place, and SIGTERM still stops."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    daemon = start_chatd(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1")
    terminals = []
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        control = ("-o", f"ControlPath={tmp_path}/master", "-o", "ControlPersist=no")
        by_key = ("-o", "BatchMode=yes", "-i", str(key), *control)
        master = Terminal(ssh_command(ssh_port, "multi", *by_key, "-o", "ControlMaster=yes"))
        terminals.append(master)
        master.expect(b"*** Welcome, multi!")
        line = daemon.connect()
        read_until(line, b"Choose an alias")
        line.sendall(b"liner\n")
        read_until(line, b"Type /help for commands.\r\n")
        second = Terminal(ssh_command(ssh_port, "multi", *by_key, "-o", "ControlMaster=no"))
        terminals.append(second)
        second.expect(b"One chat per SSH connection")
        master.type(b"still here\r")
        read_until(line, b"<multi> still here\r\n")
        master.close()
        terminals.remove(master)
        read_until(line, b"*** multi has left")
        line.sendall(b"/who\n")
        assert b"multi" not in read_until(line, b"(1)")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
    finally:
        for terminal in terminals:
            terminal.close()
        daemon.stop()
    assert "Traceback" not in daemon.log_text()


def test_odd_ssh_requests_get_answers_and_leave_no_traceback(tmp_path: Path) -> None:
    """``ssh -T``, ``ssh host command``, a resized window and control keys: each gets a
    defined answer, and the log holds no traceback, warning or error from any of them."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    daemon = start_chatd(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1")
    terminal = None
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        by_key = ("-o", "BatchMode=yes", "-i", str(key))
        no_pty = subprocess.run(
            ssh_command(ssh_port, "tee", *by_key, "-T"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
        )
        assert no_pty.returncode == 1
        assert b"chatd needs a terminal" in no_pty.stderr
        command = subprocess.run(
            [*ssh_command(ssh_port, "tee", *by_key), "ls"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
        )
        assert command.returncode == 1
        assert b"chatd runs no commands" in command.stderr
        terminal = Terminal(ssh_command(ssh_port, "sized", *by_key))
        terminal.expect(b"*** Welcome, sized!")
        fcntl.ioctl(terminal.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.kill(terminal.pid, signal.SIGWINCH)
        terminal.type(b"\x01" * 1000 + b"\x1b[Z")
        terminal.type(b"/who\r")
        terminal.expect(b"*** In #lobby (1): sized")
        terminal.type(b"\x04")
        time.sleep(0.5)
    finally:
        if terminal is not None:
            terminal.close()
        daemon.stop()
    log = daemon.log_text()
    for bad in ("Traceback", "#warn]", "#error]", "#critical]", "Unhandled"):
        assert bad not in log, log


def test_the_editor_takes_unicode_readline_keys_resizes_and_masks_the_password(
    tmp_path: Path,
) -> None:
    """Through the real ssh in a terminal: the chat's password prompt echoes no password,
    non-ASCII typing arrives whole, Ctrl-W and Ctrl-U edit, and after a resize a long line
    is drawn wrapped at the new width, once, below the incoming line."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    daemon = start_chatd(tmp_path, "--ssh", "tcp:0:interface=127.0.0.1", "--flood-rate", "0")
    terminal = None
    try:
        _, ssh_port = daemon.wait_for_ports(2)
        quit_line(register_by_line(daemon, "pia", "pia-secret-pass"))
        quiet = ("-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-i", str(key))
        terminal = Terminal(ssh_command(ssh_port, "pia", *quiet))
        fcntl.ioctl(terminal.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        terminal.expect(b"*** pia is registered. Password:")
        terminal.type(b"pia-secret-pass\r")
        terminal.expect(b"*** Welcome, pia!")
        assert b"pia-secret" not in terminal.output
        line = daemon.connect()
        read_until(line, b"Choose an alias")
        line.sendall(b"liner\n")
        read_until(line, b"Type /help for commands.\r\n")
        terminal.type("héllo ✓ 日本\r".encode())
        read_until(line, "<pia> héllo ✓ 日本\r\n".encode())
        terminal.type(b"oops typo\x17fixed\r")  # Ctrl-W
        read_until(line, b"<pia> oops fixed\r\n")
        terminal.type(b"garbage\x15clean\r")  # Ctrl-U
        read_until(line, b"<pia> clean\r\n")
        terminal.drain(0.3)
        screen = Screen(80)
        screen.feed(terminal.output)
        shown = len(terminal.output)
        fcntl.ioctl(terminal.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 20, 0, 0))
        os.kill(terminal.pid, signal.SIGWINCH)
        screen.resize(20)
        typed = "".join(chr(ord("a") + n % 26) for n in range(45))
        time.sleep(0.3)
        terminal.type(typed.encode())
        time.sleep(0.3)
        line.sendall(b"hi pia\n")
        terminal.expect(b"<liner> hi pia\a")  # it mentions pia: her terminal's bell
        terminal.drain(0.3)
        screen.feed(terminal.output[shown:])
        assert screen.bells == 1
        lines = screen.lines()
        assert lines[-4:] == ["<liner> hi pia", "> " + typed[:18], typed[18:38], typed[38:]]
        assert lines.count("> " + typed[:18]) == 1
        terminal.type(b"\r")
        read_until(line, f"<pia> {typed}\r\n".encode())
    finally:
        if terminal is not None:
            terminal.close()
        daemon.stop()
    log = daemon.log_text()
    for bad in ("Traceback", "#warn]", "#error]", "#critical]", "Unhandled"):
        assert bad not in log, log
