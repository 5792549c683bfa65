"""End to end: the demo (``python -m demo``) in real Chromium.

Each test starts the demo as a subprocess on a free port, with its policy in the
environment, and drives it with Debian's Chromium through playwright's sync API
(playwright's own browser download is never used). Two browser contexts are two
devices: separate cookie jars, like two browsers.

Screenshots of every step land in ``tests/artifacts/demo_e2e/<test>/``, next to
the demo's log. With ``SINGLE_SESSION_UPDATE_SCREENSHOTS=1`` the README's
screenshots in ``docs/screenshots/`` are written again from the same run.

Without ``/usr/bin/chromium`` the tests are skipped (install it with
``apt-get install -y chromium``); with ``CI=true`` a missing browser is a failure.
"""

from __future__ import annotations

import base64
import html
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
    from playwright.sync_api import sync_playwright
except ImportError:  # reported by the browser fixture
    expect = sync_playwright = None  # type: ignore[assignment]

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser
    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts" / "demo_e2e"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"

# Debian's Chromium here; CI elsewhere (GitHub's runners) points this at Chrome.
CHROMIUM = os.environ.get("SINGLE_SESSION_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Small enough that two side by side still read well in the README.
VIEWPORT = {"width": 660, "height": 540}
#: Browser 1 says it is Firefox on Windows, so that the devices page tells the
#: two devices apart; browser 2 keeps Chromium's own User-Agent.
BROWSER_1_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
)
#: Any single wait (a page, an element) fails after this long.
STEP_TIMEOUT_MS = 10_000
STARTUP_TIMEOUT_S = 20.0

#: The environment the demo reads; cleared so the caller's own settings
#: (a real MongoDB, another policy) do not leak into the tests.
DEMO_ENV = ("MONGODB_URI", "SINGLE_SESSION_MAX_SESSIONS", "SINGLE_SESSION_ON_LIMIT")


def _unavailable(reason: str) -> t.NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{reason} (CI=true: the end-to-end test must run in CI)", pytrace=False
        )
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> t.Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        _unavailable(
            f"Chromium not found at {CHROMIUM};"
            " install it with: apt-get install -y chromium"
        )
    if sync_playwright is None:
        _unavailable(
            "playwright is not installed;"
            " install the test extras: pip install -e '.[test]'"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


# -- the demo as a subprocess ---------------------------------------------------


class Demo:
    """A running ``python -m demo``."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return t.cast(int, s.getsockname()[1])


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/login")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = ARTIFACTS / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def start_demo(artifacts: Path) -> t.Iterator[t.Callable[..., Demo]]:
    """Start ``python -m demo --port <free port>`` with ``env`` added to the
    environment; wait until it answers. Stopped after the test."""
    running: list[tuple[subprocess.Popen[bytes], t.IO[bytes]]] = []

    def start(name: str = "demo", **env: str) -> Demo:
        port = _free_port()
        environ = {k: v for k, v in os.environ.items() if k not in DEMO_ENV}
        environ.update(PYTHONUNBUFFERED="1", **env)
        log_path = artifacts / f"{name}.log"
        log = log_path.open("wb")  # closed at teardown
        process = subprocess.Popen(
            [sys.executable, "-m", "demo", "--port", str(port)],
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        running.append((process, log))
        demo = Demo(f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(port):
            if process.poll() is not None:
                pytest.fail(
                    f"the demo exited with {process.returncode}:\n{demo.output()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the demo did not answer in {STARTUP_TIMEOUT_S} s:\n"
                    + demo.output()
                )
            time.sleep(0.05)
        return demo

    try:
        yield start
    finally:
        for process, log in running:
            _stop(process)
            log.close()


# -- browsers: two contexts are two devices --------------------------------------


@pytest.fixture
def new_device(browser: Browser) -> t.Iterator[t.Callable[..., Page]]:
    """A new browser context (a device) and its page; closed after the test."""
    contexts: list[BrowserContext] = []

    def new(user_agent: str | None = None, cookies: list[t.Any] | None = None) -> Page:
        context = browser.new_context(viewport=VIEWPORT, user_agent=user_agent)
        context.set_default_timeout(STEP_TIMEOUT_MS)
        if cookies:
            context.add_cookies(cookies)
        contexts.append(context)
        return context.new_page()

    yield new
    for context in contexts:
        context.close()


class Shots:
    """Screenshots of each step, numbered in order."""

    def __init__(self, path: Path, browser: Browser) -> None:
        self.path = path
        self.browser = browser
        self.count = 0

    def __call__(self, page: Page, step: str, *, down_to: str | None = None) -> Path:
        """Screenshot ``page``; with ``down_to``, only down to that element."""
        self.count += 1
        target = self.path / f"{self.count:02d}-{step}.png"
        clip = None
        if down_to is not None:
            box = page.locator(down_to).bounding_box()
            assert box is not None
            clip = {"x": 0, "y": 0, "width": VIEWPORT["width"]}
            clip["height"] = min(VIEWPORT["height"], box["y"] + box["height"] + 20)
        page.screenshot(path=target, clip=clip)
        return target

    def side_by_side(self, step: str, *panes: tuple[str, Path, str]) -> Path:
        """One picture of several browsers: ``(label, screenshot, url)`` each."""
        self.count += 1
        target = self.path / f"{self.count:02d}-{step}.png"
        figures = "".join(
            _FIGURE.format(
                label=html.escape(label),
                url=html.escape(url),
                png=base64.b64encode(shot.read_bytes()).decode(),
            )
            for label, shot, url in panes
        )
        context = self.browser.new_context(viewport={"width": 400, "height": 300})
        try:
            page = context.new_page()
            page.set_content(_SIDE_BY_SIDE.replace("FIGURES", figures))
            page.locator("main").screenshot(path=target)
        finally:
            context.close()
        return target


# Browser windows drawn around screenshots, for the README.
_FIGURE = """<figure><figcaption>{label}</figcaption><div class="window">
<div class="bar"><i></i><i></i><i></i><span>{url}</span></div>
<img src="data:image/png;base64,{png}"></div></figure>"""

_SIDE_BY_SIDE = """<!doctype html><style>
body { margin: 0; color: #1c2430;
  font: 600 15px/1.4 system-ui, "DejaVu Sans", sans-serif; }
main { display: inline-flex; gap: 16px; padding: 12px 14px 16px; background: #dde3ea; }
figure { margin: 0; }
figcaption { margin: 0 0 6px 2px; }
.window { border: 1px solid #b9c2cd; border-radius: 8px; overflow: hidden;
  background: #fff; box-shadow: 0 2px 8px rgba(16, 24, 40, .12); }
.bar { display: flex; align-items: center; gap: 6px; height: 30px; padding: 0 10px;
  background: #eef1f5; border-bottom: 1px solid #d5dbe2; }
.bar i { width: 10px; height: 10px; border-radius: 50%; background: #c9d0d8; }
.bar span { margin-left: 10px; padding: 1px 12px; border-radius: 6px; background: #fff;
  font: 13px system-ui, "DejaVu Sans", sans-serif; color: #5d6b7e; }
img { display: block; }
</style><main>FIGURES</main>"""


@pytest.fixture
def shots(artifacts: Path, browser: Browser) -> Shots:
    return Shots(artifacts, browser)


def _for_docs(shot: Path, name: str) -> None:
    if os.environ.get("SINGLE_SESSION_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOTS / name)


def _shown_url(page: Page) -> str:
    """The page's address as the README shows it (the demo's default port)."""
    path = page.url.split("/", 3)[3]
    return f"127.0.0.1:5000/{path}"


# -- steps -------------------------------------------------------------------------


def sign_in(
    page: Page, demo: Demo, user: str = "alice", *, remember: bool = False
) -> None:
    page.goto(f"{demo.url}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", "demo")
    if remember:
        page.check("input[name=remember]")
    # Wait for the answer (a redirect home, or the form again).
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def expect_signed_in(page: Page, user: str = "alice") -> None:
    expect(page.locator("h1")).to_have_text(f"Signed in as {user}")


def expect_login_form(page: Page) -> None:
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("h1")).to_have_text("Sign in")
    expect(page.locator("input[name=username]")).to_be_visible()
    expect(page.locator("input[name=password]")).to_be_visible()


def notices(page: Page) -> list[str]:
    return [n.strip() for n in page.locator(".notice").all_inner_texts()]


def device_rows(page: Page, demo: Demo) -> t.Any:
    page.goto(f"{demo.url}/devices")
    return page.locator("table.devices tbody tr")


# -- the tests ---------------------------------------------------------------------


def test_newest_sign_in_wins(start_demo, new_device, shots):
    demo = start_demo()
    assert "in-memory store: sessions vanish on restart" in demo.output()
    first = new_device(user_agent=BROWSER_1_UA)
    second = new_device()

    sign_in(first, demo)
    expect_signed_in(first)
    expect(first.locator(".lead")).to_contain_text("Firefox 128 on Windows")
    first_shot = shots(first, "browser1-signed-in")

    sign_in(second, demo)
    expect_signed_in(second)
    expect(second.locator(".notice")).to_contain_text("1 other device was signed out")
    second_shot = shots(second, "browser2-signed-in")
    _for_docs(
        shots.side_by_side(
            "both-signed-in",
            ("Browser 1: signed in as alice", first_shot, "127.0.0.1:5000/"),
            ("Browser 2: then signs in as alice too", second_shot, "127.0.0.1:5000/"),
        ),
        "1-two-browsers-signed-in.png",
    )

    # The first browser's next page: the notice, and the login form.
    first.reload()
    expect_login_form(first)
    expect(first.locator(".notice-warning")).to_contain_text("another device")
    signed_out_shot = shots(first, "browser1-signed-out")
    _for_docs(
        shots.side_by_side(
            "first-signed-out",
            ("Browser 1: its next page", signed_out_shot, _shown_url(first)),
            ("Browser 2: still signed in", second_shot, "127.0.0.1:5000/"),
        ),
        "2-first-signed-out.png",
    )
    # Told once; signed out for good.
    first.goto(demo.url)
    expect_login_form(first)
    assert notices(first) == []

    rows = device_rows(second, demo)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("this device")
    expect(rows.first.get_by_role("button", name="Sign out")).to_have_count(0)
    shots(second, "browser2-devices")

    second.goto(demo.url)
    second.get_by_role("button", name="Sign out everywhere").click()
    expect_login_form(second)
    expect(second.locator(".notice")).to_contain_text(
        "You signed out everywhere: 1 session ended"
    )
    shots(second, "browser2-signed-out-everywhere")
    second.goto(demo.url)
    expect_login_form(second)


def test_deny_refuses_the_second_browser(start_demo, new_device, shots):
    demo = start_demo(SINGLE_SESSION_ON_LIMIT="deny")
    first = new_device(user_agent=BROWSER_1_UA)
    second = new_device()

    sign_in(first, demo)
    expect_signed_in(first)
    expect(first.locator(".policy")).to_contain_text("further sign-ins refused")
    first_shot = shots(first, "browser1-signed-in")

    sign_in(second, demo)
    expect_login_form(second)
    refusal = second.locator(".notice-error")
    expect(refusal).to_contain_text(
        "Sign-in refused: alice is already signed in on another device"
    )
    expect(refusal).to_contain_text("Sign out on the other device first")
    denied_shot = shots(second, "browser2-refused")
    _for_docs(
        shots.side_by_side(
            "deny",
            ("Browser 1: signed in as alice", first_shot, "127.0.0.1:5000/"),
            (
                "Browser 2: refused (SINGLE_SESSION_ON_LIMIT=deny)",
                denied_shot,
                _shown_url(second),
            ),
        ),
        "4-deny.png",
    )
    second.goto(demo.url)
    expect_login_form(second)

    # The first browser was not touched; once it signs out, the second gets in.
    first.reload()
    expect_signed_in(first)
    first.get_by_role("button", name="Sign out", exact=True).click()
    expect_login_form(first)
    sign_in(second, demo)
    expect_signed_in(second)
    shots(second, "browser2-signed-in-after-browser1-signed-out")


def test_remember_me_survives_a_restart_until_revoked(start_demo, new_device, shots):
    demo = start_demo()
    first = new_device(user_agent=BROWSER_1_UA)
    sign_in(first, demo, remember=True)
    expect_signed_in(first)
    expect(first.locator(".facts")).to_contain_text(
        "stays signed in after a browser restart"
    )
    shots(first, "signed-in-remembered")

    # A browser restart: session cookies go, persistent ones stay.
    cookies = first.context.cookies()
    by_name = {c["name"]: c for c in cookies}
    assert by_name["session"]["expires"] == -1, (
        "the session cookie should end with the browser"
    )
    assert by_name["remember_token"]["expires"] > time.time() + 300 * 86400
    kept = [c for c in cookies if c["expires"] != -1]
    assert [c["name"] for c in kept] == ["remember_token"]
    first.context.close()

    restarted = new_device(user_agent=BROWSER_1_UA, cookies=kept)
    restarted.goto(demo.url)
    expect_signed_in(restarted)
    expect(restarted.locator(".facts")).to_contain_text("restored by “Remember me”")
    shots(restarted, "restored-after-restart")
    restarted.reload()
    expect_signed_in(restarted)
    # What this device holds now (its remember-me token was rotated on use).
    held = [c for c in restarted.context.cookies() if c["expires"] != -1]
    assert [c["name"] for c in held] == ["remember_token"]
    assert held[0]["value"] != kept[0]["value"]

    # Another device signs in: the remembered one is signed out, remember-me included.
    other = new_device()
    sign_in(other, demo)
    expect_signed_in(other)
    restarted.reload()
    expect_login_form(restarted)
    expect(restarted.locator(".notice-warning")).to_contain_text("another device")
    shots(restarted, "remembered-device-signed-out")

    # Restarting it again with the cookie it held does not bring it back.
    again = new_device(user_agent=BROWSER_1_UA, cookies=held)
    again.goto(demo.url)
    expect_login_form(again)
    shots(again, "restart-after-revocation")
    other.reload()
    expect_signed_in(other)


def test_devices_page_signs_out_one_device(start_demo, new_device, shots):
    demo = start_demo(SINGLE_SESSION_MAX_SESSIONS="3")
    first = new_device(user_agent=BROWSER_1_UA)
    second = new_device()
    sign_in(first, demo)
    sign_in(second, demo, remember=True)
    expect_signed_in(second)
    expect(second.locator(".policy")).to_contain_text("3 devices per user")

    rows = device_rows(second, demo)
    expect(rows).to_have_count(2)
    this = rows.filter(has_text="this device")
    expect(this).to_have_count(1)
    expect(this).to_contain_text("remembered")
    expect(this.get_by_role("button", name="Sign out")).to_have_count(0)
    other = rows.filter(has_text="Firefox 128 on Windows")
    expect(other).to_contain_text("127.0.0.1")
    _for_docs(shots(second, "devices", down_to=".card"), "3-devices.png")

    other.get_by_role("button", name="Sign out").click()
    expect(second.locator(".notice-success")).to_contain_text(
        "Signed out Firefox 128 on Windows"
    )
    expect(rows).to_have_count(1)
    shots(second, "devices-after-sign-out")
    first.reload()
    expect_login_form(first)
    expect(first.locator(".notice-warning")).to_contain_text("another device")
    shots(first, "browser1-signed-out-from-devices-page")

    # "Sign out other devices" ends the rest and keeps this one.
    third = new_device()
    sign_in(first, demo)
    sign_in(third, demo)
    second.goto(demo.url)
    expect(second.locator("p.muted")).to_contain_text("2 other devices signed in")
    second.get_by_role("button", name="Sign out other devices").click()
    expect(second.locator(".notice-success")).to_contain_text(
        "Signed out 2 other devices"
    )
    expect_signed_in(second)
    for page in (first, third):
        page.reload()
        expect_login_form(page)
    second.reload()
    expect_signed_in(second)
    expect(device_rows(second, demo)).to_have_count(1)


def test_the_demo_says_which_store_and_policy_it_uses(start_demo):
    demo = start_demo(SINGLE_SESSION_MAX_SESSIONS="none")
    output = demo.output()
    assert (
        "in-memory store: sessions vanish on restart; set MONGODB_URI to use MongoDB"
        in output
    )
    assert "SINGLE_SESSION_MAX_SESSIONS=none" in output
    connection = http.client.HTTPConnection(demo.url.removeprefix("http://"), timeout=5)
    try:
        connection.request("GET", "/login")
        page = connection.getresponse().read().decode()
    finally:
        connection.close()
    assert "No limit on devices" in page
    assert "alice" in page and "bob" in page and "demo" in page
