"""etc/chatd.service: the systemd unit shipped with chatd starts chatd with options it knows."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from chatd.tap import Options

UNIT = Path(__file__).resolve().parents[1] / "etc" / "chatd.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_exec_start_gives_chatd_options_it_accepts(tmp_path: Path) -> None:
    """Every option after ``chatd`` in ExecStart is one of chatd's, with a valid value."""
    (command,) = unit_settings()["ExecStart"]
    words = shlex.split(command)
    chatd_args = words[words.index("chatd") + 1 :]
    config = tmp_path / "chatd.toml"
    config.write_text("", encoding="utf-8")
    chatd_args[chatd_args.index("--config") + 1] = str(config)
    options = Options()
    options.parseOptions(chatd_args)
    assert options["data-dir"] == "/var/lib/chatd"
    assert "--nodaemon" in words and "--pidfile=" in words


def test_runs_unprivileged_and_hardened() -> None:
    settings = unit_settings()
    assert settings["DynamicUser"] == ["yes"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze finds nothing wrong but the missing install it cannot see here."""
    unit = tmp_path / "chatd.service"
    shutil.copy(UNIT, unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # Only what is said of this unit: systemd may grumble about the host's own units.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "chatd.service" in line and "/opt/chatd/bin/twistd" not in line
    ]
    assert problems == []
