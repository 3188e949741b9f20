"""End-to-end: the --web page in a real browser (headless Chromium via Playwright).

Two browser pages and one raw socket client (what nc sends) talk to each other
through a real daemon; an HTML-injection attempt is shown as text. Screenshots
go to test-artifacts/ (not committed). Skipped where Debian's chromium or
playwright is not installed (.ci/run installs both).
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, read_until, start_chatd

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Without these, Chromium keeps trying to reach Google's services, which this
# machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


@pytest.fixture
def web_chatd(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    daemon = start_chatd(tmp_path, "--web", "tcp:0:interface=127.0.0.1")
    try:
        _, web_port = daemon.wait_for_ports(2)
        yield daemon, web_port
    finally:
        daemon.stop()


def join_page(browser: object, url: str, alias: str, **context_options: object) -> object:
    page = browser.new_context(**context_options).new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("Choose an alias").first.wait_for()
    page.fill("#input", alias)
    page.press("#input", "Enter")
    page.get_by_text("You are in #lobby").first.wait_for()
    return page


def test_browsers_and_a_line_client_chat_and_markup_stays_text(
    web_chatd: tuple[Daemon, int],
) -> None:
    daemon, web_port = web_chatd
    url = f"http://127.0.0.1:{web_port}/"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ann = join_page(browser, url, "ann")
            ben = join_page(browser, url, "ben", viewport={"width": 390, "height": 844})
            ann.get_by_text("ben has joined #lobby (2 here)").wait_for()

            line = socket.create_connection((daemon.host, daemon.port), timeout=10)
            read_until(line, b"Choose an alias")
            line.sendall(b"cat\n")
            read_until(line, b"Type /help for commands.\r\n")
            ben.get_by_text("cat has joined #lobby (3 here)").wait_for()

            ann.fill("#input", "hello from ann")
            ann.press("#input", "Enter")
            ann.get_by_text("<ann> hello from ann").wait_for()  # shown locally
            ben.get_by_text("<ann> hello from ann").wait_for()
            read_until(line, b"<ann> hello from ann\r\n")

            injection = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
            line.sendall(injection.encode() + b"\n")
            for page in (ann, ben):
                page.get_by_text(f"<cat> {injection}").wait_for()
                assert page.locator("#log img, #log b").count() == 0
                assert page.title() != "pwned"

            ben.fill("#input", "/join #web")
            ben.press("#input", "Enter")
            ben.get_by_text("You are in #web (1): ben").wait_for()
            assert ben.inner_text("#room") == "#web"
            ann.get_by_text("ben has gone to #web").wait_for()
            read_until(line, b"*** ben has gone to #web\r\n")

            ARTIFACTS.mkdir(exist_ok=True)
            ann.screenshot(path=str(ARTIFACTS / "web-page.png"))
            ben.screenshot(path=str(ARTIFACTS / "web-page-phone.png"))
            line.close()
        finally:
            browser.close()


def test_the_page_reconnects_and_takes_its_alias_and_room_back(tmp_path: Path) -> None:
    """After the server goes away and comes back, the page rejoins as before, by itself."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    web_port = probe.getsockname()[1]
    probe.close()
    web = ("--web", f"tcp:{web_port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data"))
    daemon = start_chatd(tmp_path, *web)
    daemon.wait_for_ports(2)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = join_page(browser, f"http://127.0.0.1:{web_port}/", "dora")
            page.fill("#input", "/join #back")
            page.press("#input", "Enter")
            page.get_by_text("You are in #back (1): dora").wait_for()
            daemon.stop()
            page.get_by_text("disconnected; reconnecting…").wait_for()
            daemon = start_chatd(tmp_path, *web)
            daemon.wait_for_ports(2)
            page.get_by_text("You are in #lobby (1): dora").nth(1).wait_for(timeout=30_000)
            page.get_by_text("You are in #back (1): dora").nth(1).wait_for()
            assert page.inner_text("#status") == "connected"
        finally:
            browser.close()
            daemon.stop()


def test_a_registered_alias_reconnects_with_its_password_asked_masked_and_unsent(
    tmp_path: Path,
) -> None:
    """After a restart, the page sends only the alias, masks the password prompt, shows nothing
    typed there, and goes back to its room once welcomed."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    web_port = probe.getsockname()[1]
    probe.close()
    web = ("--web", f"tcp:{web_port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data"))
    password = "correct-horse-battery"
    daemon = start_chatd(tmp_path, *web)
    daemon.wait_for_ports(2)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = join_page(browser, f"http://127.0.0.1:{web_port}/", "erin")
            page.fill("#input", f"/register {password}")
            page.press("#input", "Enter")
            page.get_by_text("Registered erin").wait_for()
            page.fill("#input", "/join #back")
            page.press("#input", "Enter")
            page.get_by_text("You are in #back (1): erin").wait_for()
            daemon.stop()
            page.get_by_text("disconnected; reconnecting…").wait_for()
            daemon = start_chatd(tmp_path, *web)
            _, web_port = daemon.wait_for_ports(2)
            page.get_by_text("erin is registered. Password:").wait_for(timeout=30_000)
            assert page.get_attribute("#input", "type") == "password"
            page.fill("#input", password)
            page.press("#input", "Enter")
            page.get_by_text("You are in #lobby (1): erin").nth(1).wait_for()
            page.get_by_text("You are in #back (1): erin").nth(1).wait_for()
            assert page.get_attribute("#input", "type") == "text"
            assert password not in page.inner_text("#log")
            assert "Wrong password" not in page.inner_text("#log")
            watcher = socket.create_connection((daemon.host, daemon.port), timeout=10)
            read_until(watcher, b"Choose an alias")
            watcher.sendall(b"watcher\n/who *\n")
            who = read_until(watcher, b"erin").decode()
            assert password not in who
            watcher.close()
        finally:
            browser.close()
            daemon.stop()
