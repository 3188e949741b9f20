"""End-to-end: the --web page in a real browser (headless Chromium via Playwright).

Two browser pages and one raw socket client (what nc sends) talk to each other
through a real daemon; an HTML-injection attempt is shown as text. The page's
lists (members, rooms, private conversations), links, timestamps and unread
marks are checked at desktop (1280x800) and phone (390x844) sizes, and every
page is checked for errors in the browser console (a CSP violation is one).
Screenshots of both sizes in both themes go to test-artifacts/ (not committed).
Skipped where Debian's chromium or playwright is not installed (.ci/run installs
both).
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Playwright's init scripts run before the page's own (and outside its CSP): this
# one records desktop notifications instead of showing them.
FAKE_NOTIFICATIONS = """
window.shown = [];
window.Notification = class {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.shown.push([title, options.body]); }
  close() {}
};
"""
# Makes the page believe its tab is hidden (or shown again), as a switch of tabs would.
SET_HIDDEN = """(hidden) => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  Object.defineProperty(document, "visibilityState",
    {configurable: true, get: () => hidden ? "hidden" : "visible"});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture
def web_chatd(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    daemon = start_chatd(tmp_path, "--web", "tcp:0:interface=127.0.0.1")
    try:
        _, web_port = daemon.wait_for_ports(2)
        yield daemon, web_port
    finally:
        daemon.stop()


def open_page(browser: Any, url: str, init_script: str = "", **context_options: object) -> Any:
    """A new page at ``url``; what it logs as an error goes to its ``errors`` list."""
    context = browser.new_context(**context_options)
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    return page


def join_page(
    browser: Any, url: str, alias: str, init_script: str = "", **context_options: object
) -> Any:
    page = open_page(browser, url, init_script, **context_options)
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
            assert ann.errors == [] and ben.errors == []
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


def line_user(daemon: Daemon, alias: str) -> socket.socket:
    """A raw socket client (what nc sends), welcomed as ``alias``."""
    line = socket.create_connection((daemon.host, daemon.port), timeout=10)
    read_until(line, b"Choose an alias")
    line.sendall(alias.encode() + b"\n")
    read_until(line, b"Type /help for commands.\r\n")
    return line


def members(page: Any) -> list[str]:
    return page.locator("#members .nick").all_inner_texts()  # type: ignore[no-any-return]


def say_from(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def screenshots(page: Any, name: str) -> None:
    """``page`` in the light and the dark theme, to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=str(ARTIFACTS / f"web-{name}-{scheme}.png"))


def test_members_rooms_links_times_and_mentions_follow_the_chat_on_a_desktop(
    web_chatd: tuple[Daemon, int],
) -> None:
    """The member list follows joins, renames and departures; the room list switches rooms on
    a click; only http(s) addresses are links, opening apart; every line has a short time; a
    mention and a private message are marked, counted and notified while the tab is hidden,
    and the mention (as the server marks it, not a longer word) again in a replay;
    /whois reads in minutes and seconds; /quit clears the header and the lists."""
    daemon, web_port = web_chatd
    url = f"http://127.0.0.1:{web_port}/"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ann = join_page(browser, url, "ann", FAKE_NOTIFICATIONS, viewport=DESKTOP)
            assert members(ann) == ["ann"]
            ann.locator("#rooms li.current", has_text="#lobby").wait_for()
            ann.click("#notify")
            ann.get_by_text("Desktop notifications on").wait_for()
            assert ann.get_attribute("#notify", "aria-pressed") == "true"

            cat = line_user(daemon, "cat")
            ann.locator("#members .nick", has_text="cat").wait_for()
            assert members(ann) == ["ann", "cat"]
            cat.sendall(b"/nick kit\n")
            ann.locator("#members .nick", has_text="kit").wait_for()
            assert members(ann) == ["ann", "kit"]

            cat.sendall(b"see https://example.org/a?b=1 (or javascript:alert(1)).\n")
            line = ann.locator("#log .line.message", has_text="javascript:alert(1)")
            line.wait_for()
            link = line.locator("a")
            assert link.count() == 1
            assert link.get_attribute("href") == "https://example.org/a?b=1"
            assert link.inner_text() == "https://example.org/a?b=1"
            assert link.get_attribute("rel") == "noopener noreferrer"
            assert link.get_attribute("target") == "_blank"
            assert ann.locator("#log a[href^='javascript']").count() == 0

            ann.evaluate(SET_HIDDEN, True)
            cat.sendall(b"ann: are you there?\n")
            ann.locator("#log .line.mention", has_text="are you there?").wait_for()
            ann.locator("#rooms li.current .mention-mark").wait_for()
            assert ann.title() == "(1@) #lobby · chatd"
            cat.sendall(b"/msg ann psst\n")
            ann.locator("#privates .badge", has_text="1").wait_for()
            assert ann.title() == "(2@) #lobby · chatd"
            assert ann.evaluate("window.shown") == [
                ["kit in #lobby", "ann: are you there?"],
                ["Private message from kit", "psst"],
            ]
            ann.evaluate(SET_HIDDEN, False)
            assert ann.title() == "#lobby · chatd"
            assert ann.locator("#rooms .badge, #privates .badge").count() == 0
            # The server marks mentions (chatd.mentions): a longer word names nobody.
            cat.sendall(b"x.ann, annie and ann_b are others\n")
            others = ann.locator("#log .line.message", has_text="annie and ann_b")
            others.wait_for()
            assert "mention" not in (others.get_attribute("class") or "")
            say_from(ann, "/history 3")
            ann.locator("#log .line.history.mention", has_text="are you there?").wait_for()
            assert ann.locator("#log .line.history").count() == 3
            assert ann.locator("#log .line.history.mention").count() == 1
            screenshots(ann, "desktop")

            times = ann.evaluate(
                """[...document.querySelectorAll("#log .line")].map((line) => {
                  const time = line.firstElementChild;
                  return [time.tagName, time.textContent, time.title];
                })"""
            )
            assert len(times) > 5
            for tag, short, full in times:
                assert tag == "TIME" and re.fullmatch(r"\d\d:\d\d", short), (tag, short)
                assert len(full) > 20 and short in full

            cat.sendall(b"/join #garden\n")
            garden = ann.locator("#rooms button", has_text="#garden")
            garden.click()
            ann.locator("#rooms li.current", has_text="#garden").wait_for()
            assert ann.inner_text("#room") == "#garden"
            assert members(ann) == ["ann", "kit"]
            say_from(ann, "/whois kit")
            ann.get_by_text(re.compile(r"kit is in #garden, online \d+ s, idle \d+ s")).wait_for()
            spans = [59.6, 61, 3600, 11_100, 90_061]
            assert ann.evaluate("(spans) => spans.map(duration)", spans) == [
                "1 min",
                "1 min 1 s",
                "1 h",
                "3 h 5 min",
                "1 d 1 h",
            ]
            cat.sendall(b"/quit bye\n")
            ann.get_by_text("kit has left").wait_for()
            assert members(ann) == ["ann"]
            cat.close()

            say_from(ann, "/quit")
            ann.get_by_text("Choose an alias").first.wait_for()
            assert ann.inner_text("#room") == "chatd"
            assert ann.inner_text("#topic") == ""
            assert members(ann) == [] and ann.title() == "chatd"
            assert ann.errors == []
        finally:
            browser.close()


@pytest.fixture
def crowded_chatd(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    daemon = start_chatd(
        tmp_path,
        "--web",
        "tcp:0:interface=127.0.0.1",
        "--max-per-ip",
        "0",
        "--max-conn-rate",
        "0",
    )
    try:
        _, web_port = daemon.wait_for_ports(2)
        yield daemon, web_port
    finally:
        daemon.stop()


def test_a_phone_lists_everyone_in_a_big_room_and_switches_rooms_from_its_panels(
    crowded_chatd: tuple[Daemon, int],
) -> None:
    """In a room of more names than the room event lists, the page asks /who itself and shows
    the whole list, not the answer; on a phone both lists open as panels, and a tap switches
    rooms; the newest line stays in view, and lines that come while the log is scrolled up
    are counted until it is back down."""
    daemon, web_port = crowded_chatd
    crowd = [line_user(daemon, f"u{n:02}") for n in range(34)]
    crowd[0].sendall(b"/join #quiet\n")
    read_until(crowd[0], b"You are now in #quiet")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ben = join_page(
                browser, f"http://127.0.0.1:{web_port}/", "ben", viewport=PHONE, is_mobile=True
            )
            ben.locator("#member-count", has_text="34").wait_for()
            assert len(members(ben)) == 34 and "u33" in members(ben)
            assert ben.locator("#log .line.who").count() == 0
            assert not ben.is_visible("#members-panel")
            for n in range(1, 30):
                crowd[n].sendall(f"line {n} from the crowd\n".encode())
            ben.get_by_text("line 29 from the crowd").wait_for()
            ben.wait_for_function(
                "(() => { const log = document.getElementById('log');"
                " return log.scrollHeight - log.scrollTop - log.clientHeight < 40; })()"
            )
            screenshots(ben, "phone")
            # Scrolled up, and the page told so at once: a browser fires its own scroll
            # event later, and under load a fixed wait for it was sometimes too short.
            ben.evaluate(
                "(() => { const log = document.getElementById('log'); log.scrollTop = 0;"
                " log.dispatchEvent(new Event('scroll')); })()"
            )
            assert ben.evaluate("document.getElementById('log').scrollTop") == 0
            crowd[1].sendall(b"one more line\n")
            ben.locator("#newer", has_text="1 new line below").wait_for()
            assert ben.inner_text("#all-unread") == "1" and ben.title() == "(1) #lobby · chatd"
            # A tap, without the scrolling into view a click does first: under load that
            # scroll could reach the bottom (and hide the button) before the tap.
            ben.locator("#newer").dispatch_event("click")
            ben.locator("#newer").wait_for(state="hidden")
            assert ben.title() == "#lobby · chatd" and not ben.is_visible("#all-unread")

            ben.click("#show-members")
            assert ben.is_visible("#members-panel")
            ben.locator("#members .nick", has_text="u33").scroll_into_view_if_needed()
            screenshots(ben, "phone-members")
            ben.click("#show-rooms")
            assert not ben.is_visible("#members-panel")
            screenshots(ben, "phone-rooms")
            ben.locator("#rooms button", has_text="#quiet").click()
            ben.locator("#room", has_text="#quiet").wait_for()
            assert not ben.is_visible("#rooms-panel")
            assert members(ben) == ["ben", "u00"]
            assert ben.inner_text("#member-count") == "2"
            assert ben.errors == []
        finally:
            browser.close()
            for line in crowd:
                line.close()


def test_a_big_room_sums_up_who_came_and_went_and_the_member_list_follows(
    tmp_path: Path,
) -> None:
    """Above --quiet-joins-above, the page shows one summary line for who came and went,
    and its member list takes in the names it gives."""
    daemon = start_chatd(
        tmp_path, "--web", "tcp:0:interface=127.0.0.1", "--quiet-joins-above", "2"
    )
    crowd: list[socket.socket] = []
    try:
        _, web_port = daemon.wait_for_ports(2)
        crowd.append(line_user(daemon, "u1"))
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                ben = join_page(browser, f"http://127.0.0.1:{web_port}/", "ben")
                ben.locator("#members .nick", has_text="u1").wait_for()
                crowd.extend(line_user(daemon, alias) for alias in ("u2", "u3"))
                crowd[0].sendall(b"/quit\n")
                ben.get_by_text("2 joined, 1 left in the last 5 s").wait_for()
                ben.get_by_text("u2, u3 joined; u1 left (3 here)").wait_for()
                assert members(ben) == ["ben", "u2", "u3"]
                assert ben.locator("#log .line.join", has_text="has joined").count() == 0
                assert ben.errors == []
            finally:
                browser.close()
    finally:
        for line in crowd:
            line.close()
        daemon.stop()
