"""etc/chatd.service: the systemd unit shipped with chatd starts chatd with options it knows."""

from __future__ import annotations

import ctypes
import shlex
import shutil
import ssl
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from chatd.tap import Options
from tests.daemon import Daemon, read_until, venv_script
from tests.tls import make_certificate

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "etc" / "chatd.service"


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
    """The unit runs chatd as a user of its own, in a read-only system, and reloads by SIGHUP."""
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
        if "chatd.service" in line and "/opt/chatd/bin/" not in line
    ]
    assert problems == []


def test_the_plugin_cache_is_written_as_root_before_each_start(tmp_path: Path) -> None:
    """ExecStartPre writes twistd's plugin cache, so the unprivileged twistd finds it fresh."""
    (command,) = unit_settings()["ExecStartPre"]
    assert command.startswith("+")  # as root, outside the sandbox: the install is root's
    program, *arguments = shlex.split(command[1:])
    assert program == "/opt/chatd/bin/python"
    assert "-I" in arguments  # chatd's writable working directory is not on root's path
    # A venv standing for /opt/chatd: chatd's plugin in its twisted/plugins, and no cache.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "opt"], check=True)
    python = tmp_path / "opt" / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dev.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    plugins = site / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    # Under a name of its own: where the running venv has chatd installed (not in
    # editable mode), its chatd_plugin would shadow a copy of the same name.
    shutil.copy(ROOT / "twisted" / "plugins" / "chatd_plugin.py", plugins / "chatd_unit.py")
    subprocess.run([python, *arguments], cwd=tmp_path, check=True, timeout=60)
    cache = plugins / "dropin.cache"
    written = cache.stat().st_mtime_ns
    twistd = "import sys; from twisted.scripts.twistd import run; sys.argv[1:] = ['--help']; run()"
    result = subprocess.run(
        [python, "-c", twistd], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert " chatd " in result.stdout
    # twistd found the cache up to date: it had nothing to write (nor to warn about).
    assert cache.stat().st_mtime_ns == written
    assert "plugin cache" not in result.stdout + result.stderr


# Run twistd (exec'd, so the restriction carries over) under MemoryDenyWriteExecute's
# kernel equivalent: PR_SET_MDWE with PR_MDWE_REFUSE_EXEC_GAIN.
_MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
os.execv(sys.argv[1], sys.argv[1:])
"""


def _kernel_has_mdwe() -> bool:
    """Whether prctl(PR_GET_MDWE) is known (Linux 6.3 and later); asking changes nothing."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    return prctl is not None and prctl(66, 0, 0, 0, 0) >= 0


def _tls_greeting(tmp_path: Path, deny_write_execute: bool) -> bytes:
    """What a TLS client is first sent by twistd -n chatd --port ssl:..., or b"" if refused."""
    cert, key = make_certificate(tmp_path)
    twistd = [venv_script("twistd"), "--pidfile=", "-n", "chatd", "--port", "ssl:0"]
    twistd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    wrapper = [sys.executable, "-c", _MDWE_EXEC] if deny_write_execute else []
    daemon = Daemon(wrapper + twistd, tmp_path)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        with context.wrap_socket(daemon.connect(), server_hostname="localhost") as client:
            return read_until(client, b"Choose an alias")
    except (ssl.SSLError, ConnectionError):
        return b""
    finally:
        daemon.stop()


@pytest.mark.skipif(not _kernel_has_mdwe(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
def test_tls_works_under_the_units_memory_protection(tmp_path: Path) -> None:
    """A TLS client is greeted by twistd run under the unit's MemoryDenyWriteExecute setting."""
    restricted = unit_settings().get("MemoryDenyWriteExecute") == ["yes"]
    assert b"Choose an alias" in _tls_greeting(tmp_path, deny_write_execute=restricted)


@pytest.mark.skipif(not _kernel_has_mdwe(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
def test_denying_write_execute_memory_breaks_tls(tmp_path: Path) -> None:
    """Under PR_SET_MDWE pyOpenSSL cannot make its ALPN callback: why the unit goes without."""
    assert _tls_greeting(tmp_path, deny_write_execute=True) == b"", (
        "TLS now works with write+execute memory denied: etc/chatd.service may set "
        "MemoryDenyWriteExecute=yes again"
    )
