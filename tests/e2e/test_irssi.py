"""End-to-end: Debian's irssi, driven in a tmux pane, and an nc user chat through --irc.

irssi runs as a person would run it: in a terminal (a detached tmux session of its
own), keys typed into it, what it shows read back from the pane. Its own echo of
what it sends proves nothing, so what irssi says is checked on the nc side, and what
irssi shows is checked for lines only the server could have made it show.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, start_chatd
from tests.e2e.test_netcat import Netcat

pytestmark = pytest.mark.skipif(
    shutil.which("irssi") is None or shutil.which("tmux") is None or shutil.which("nc") is None,
    reason="irssi, tmux or netcat is not installed",
)

TIMEOUT_SECONDS = 15.0
# A pane tall enough that nothing scrolls off during a test (the longest shows about
# 100 lines): irssi scrolls inside a region above its status bar, and tmux keeps no
# history of lines scrolled that way.
PANE_COLUMNS, PANE_ROWS = 200, 300
# irssi's status bar and input line, the pane's last two rows, which change all the time.
_BOTTOM_ROWS = 2

# No networks, servers or channels to join on its own; one window for everything and
# no query opened by /msg (so what is typed goes on to #lobby after /msg NickServ); no
# timestamps, no blank where a nick's channel mode would be ("<nora>", not "< nora>"),
# no topic bar (the pane's first row would change with the topic); and no client-side
# flood control, which would send one line every 2.2 s after the first five.
IRSSI_CONFIG = """\
settings = {
  core = {
    real_name = "chatd e2e";
    user_name = "%(nick)s";
    nick = "%(nick)s";
    settings_autosave = "no";
  };
  "irc/core" = {
    cmd_queue_speed = "0msec";
    cmds_max_at_once = "1000";
  };
  "fe-common/core" = {
    timestamps = "no";
    autocreate_windows = "no";
    autocreate_own_query = "no";
    show_nickmode_empty = "no";
  };
  "fe-text" = {
    paste_detect_time = "0";
  };
};
statusbar = {
  default = {
    topic = { disabled = "yes"; };
  };
};
"""

# The tmux server of one test: its own configuration, a pane that stays (showing
# irssi's last screen) when irssi exits.
TMUX_CONFIG = """\
set -g remain-on-exit on
set -g status off
set -g default-terminal screen
"""


class Irssi:
    """irssi in a detached tmux session on a tmux server of its own (its socket in
    ``directory``: tmux leaves it behind when the server is killed)."""

    def __init__(self, directory: Path, nick: str) -> None:
        home = directory / "irssi"
        home.mkdir()
        (home / "config").write_text(IRSSI_CONFIG % {"nick": nick})
        tmux_config = directory / "tmux.conf"
        tmux_config.write_text(TMUX_CONFIG)
        self._socket = directory / "tmux.socket"
        self._env = {
            **{name: value for name, value in os.environ.items() if name != "TMUX"},
            "LANG": "C.UTF-8",
            "TERM": "screen",
        }
        self._tmux(
            "-f", str(tmux_config), "new-session", "-d", "-s", "irssi",
            "-x", str(PANE_COLUMNS), "-y", str(PANE_ROWS),
            f"irssi --home={shlex.quote(str(home))}",
        )  # fmt: skip

    def _tmux(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self._socket), *args],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def type(self, line: str) -> None:
        """Type ``line`` (literally, no key names) and Enter."""
        self._tmux("send-keys", "-t", "irssi", "-l", line)
        self._tmux("send-keys", "-t", "irssi", "Enter")

    def screen(self) -> str:
        """Everything irssi has shown, wrapped lines joined, without the status rows."""
        rows = self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "irssi").splitlines()
        window = [row.rstrip() for row in rows[:-_BOTTOM_ROWS]]
        if window and window[-1]:
            raise AssertionError("irssi's window is full, lines may be lost: raise PANE_ROWS")
        return "".join(row + "\n" for row in window).rstrip("\n") + "\n"

    def expect(self, text: str, start: int = 0) -> int:
        """Wait until ``text`` shows at or after ``start``; return where it ends."""
        return self.expect_match(re.escape(text), start)

    def expect_match(self, pattern: str, start: int = 0) -> int:
        """Wait until a match of ``pattern`` shows at or after ``start``; return where it ends."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            screen = self.screen()
            found = compiled.search(screen, start)
            if found:
                return found.end()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not shown after {start}; irssi shows:\n{screen}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        """Stop irssi and the tmux server (which may have failed to start)."""
        self._tmux("kill-server", check=False)


@pytest.fixture
def irc_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """chatd with its line port first and an --irc port second, on loopback."""
    daemon = start_chatd(tmp_path, "--irc", "tcp:0:interface=127.0.0.1")
    try:
        daemon.wait_for_ports(2)
        yield daemon
    finally:
        daemon.stop()
        print(f"chatd logged:\n{daemon.log_text()}")  # shown when the test failed


@pytest.fixture
def irssi(tmp_path: Path) -> Iterator[Irssi]:
    """irssi started as ivy, not connected anywhere yet."""
    client = Irssi(tmp_path, "ivy")
    try:
        client.expect("Irssi v")  # started: the keys typed now reach its input line
        yield client
    finally:
        with contextlib.suppress(AssertionError):
            print(f"irssi showed:\n{client.screen()}")  # shown when the test failed
        client.close()


def irc_port(daemon: Daemon) -> int:
    """The daemon's --irc port, the second it listens on."""
    return daemon.wait_for_ports(2)[1]


class LineUser(Netcat):
    """A real nc whose output can be waited on past what was already seen."""

    def expect_after(self, text: str, start: int = 0) -> int:
        """Wait until ``text`` arrives at or after ``start``; return where it ends."""
        wanted = text.encode()
        with self._changed:
            if not self._changed.wait_for(
                lambda: self.output.find(wanted, start) >= 0, TIMEOUT_SECONDS
            ):
                raise AssertionError(f"{text!r} not after {start} in {self.output!r}")
            return self.output.find(wanted, start) + len(wanted)


def nc_user(daemon: Daemon, alias: str) -> LineUser:
    """A real nc, in #lobby as ``alias``."""
    user = LineUser(daemon)
    user.expect("Choose an alias")
    user.type(alias)
    user.expect(f"*** Welcome, {alias}!")
    return user


def joined(nick: str) -> str:
    """How irssi shows ``nick`` joining #lobby (its user@host in brackets)."""
    return rf"-!- {nick} \[\S+\] has joined #lobby\n"


def test_an_irssi_user_and_an_nc_user_see_each_other(irc_daemon: Daemon, irssi: Irssi) -> None:
    """irssi and nc in #lobby see each other's lines, actions, topics, nick changes,
    joins and quits, each in their own client's terms."""
    port = irc_port(irc_daemon)
    irssi.type(f"/connect 127.0.0.1 {port}")
    shown = irssi.expect_match(joined("ivy"))
    nora = nc_user(irc_daemon, "nora")
    try:
        nora.expect("You are in #lobby (2): ivy, nora\r\n")
        shown = irssi.expect_match(joined("nora"), shown)

        nora.type("hello from nc")
        shown = irssi.expect("<nora> hello from nc\n", shown)
        irssi.type("hello from irssi")
        nora.expect("<ivy> hello from irssi\r\n")

        nora.type("/me waves from nc")
        shown = irssi.expect(" * nora waves from nc\n", shown)
        irssi.type("/me waves from irssi")
        nora.expect("* ivy waves from irssi\r\n")

        nora.type("/topic set by nc")
        shown = irssi.expect("-!- nora changed the topic of #lobby to: set by nc\n", shown)
        irssi.type("/topic set by irssi")
        nora.expect("*** ivy set the topic: set by irssi\r\n")
        shown = irssi.expect("-!- ivy changed the topic of #lobby to: set by irssi\n", shown)

        nora.type("/nick nadia")
        shown = irssi.expect("-!- nora is now known as nadia\n", shown)
        irssi.type("/nick ivan")
        nora.expect("*** ivy is now known as ivan\r\n")
        shown = irssi.expect("-!- You're now known as ivan\n", shown)
        # Each side speaks to the other under the new names.
        nora.type("hi ivan")
        shown = irssi.expect("<nadia> hi ivan\n", shown)
        irssi.type("hi nadia")
        nora.expect("<ivan> hi nadia\a\r\n")  # she is named: her bell

        irssi.type("/disconnect * back soon")
        nora.expect("*** ivan has left (Quit: back soon)\r\n")
        irssi.type(f"/connect 127.0.0.1 {port}")
        nora.expect("*** ivy has joined #lobby (2 here)\r\n")
        shown = irssi.expect_match(joined("ivy"), shown)
        shown = irssi.expect("-!- Topic for #lobby: set by irssi\n", shown)

        nora.type("/quit bye from nc")
        nora.expect("*** Goodbye.\r\n")
        irssi.expect_match(r"-!- nadia \[\S+\] has quit \[Quit: bye from nc\]\n", shown)
    finally:
        nora.close()


def test_a_registered_alias_is_taken_over_irc_only_with_its_password(
    irc_daemon: Daemon, irssi: Irssi
) -> None:
    """A nick registered from nc is irssi's neither by /nick, nor by connecting with it
    bare, with a wrong NickServ password or a wrong server password; it is with the
    right password given to NickServ or as the server password."""
    port = irc_port(irc_daemon)
    rosa = nc_user(irc_daemon, "rosa")
    try:
        rosa.type("/register rosa-secret-pass")
        rosa.expect("*** Registered rosa")
        rosa.type("/quit")
        rosa.expect("*** Goodbye.\r\n")
    finally:
        rosa.close()
    olga = nc_user(irc_daemon, "olga")
    try:
        irssi.type(f"/connect 127.0.0.1 {port}")
        shown = irssi.expect_match(joined("ivy"))
        heard = olga.expect_after("*** ivy has joined #lobby (2 here)\r\n")

        irssi.type("/nick rosa")
        shown = irssi.expect("-!- Nick rosa is already in use\n", shown)  # irssi's words for 433
        shown = irssi.expect("rosa is registered. To use it, connect as rosa", shown)
        olga.type("/who")
        heard = olga.expect_after("*** In #lobby (2): ivy, olga\r\n", heard)

        irssi.type("/disconnect * trying as rosa")
        heard = olga.expect_after("*** ivy has left (Quit: trying as rosa)\r\n", heard)
        irssi.type("/set nick rosa")
        irssi.type(f"/connect 127.0.0.1 {port}")
        shown = irssi.expect("-!- Welcome to chatd, rosa\n", shown)
        shown = irssi.expect("-NickServ(NickServ@services)- rosa is registered.", shown)
        irssi.type("/msg NickServ IDENTIFY wrong-password")
        shown = irssi.expect("-!- Password incorrect\n", shown)
        olga.type("/who")
        heard = olga.expect_after("*** In #lobby (1): olga\r\n", heard)
        irssi.type("/msg NickServ IDENTIFY rosa-secret-pass")
        shown = irssi.expect_match(joined("rosa"), shown)
        heard = olga.expect_after("*** rosa has joined #lobby (2 here)\r\n", heard)
        irssi.type("identified by NickServ")
        heard = olga.expect_after("<rosa> identified by NickServ\r\n", heard)

        irssi.type("/disconnect * once more")
        heard = olga.expect_after("*** rosa has left (Quit: once more)\r\n", heard)
        irssi.type(f"/connect 127.0.0.1 {port} wrong-password rosa")
        shown = irssi.expect("-!- Password incorrect\n", shown)
        olga.type("/who")
        heard = olga.expect_after("*** In #lobby (1): olga\r\n", heard)
        irssi.type("/disconnect * and again")
        irssi.type(f"/connect 127.0.0.1 {port} rosa-secret-pass rosa")
        shown = irssi.expect_match(joined("rosa"), shown)
        heard = olga.expect_after("*** rosa has joined #lobby (2 here)\r\n", heard)
        irssi.type("identified by the server password")
        olga.expect_after("<rosa> identified by the server password\r\n", heard)
    finally:
        olga.close()
