"""The operator console in a real browser: headless Chromium (Debian's ``chromium``,
driven by Playwright) against a gateway over real sockets, with requests run through it
while the page is open. Screenshots of its three views are saved under
``test-artifacts/console/`` (or ``$LLM_SESSIONS_ARTIFACTS/console/``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway_helpers import PRICES, Running, chat, gateway_with_standin, wait_until_up
from llm_sessions import Pricing

from redis_server import free_port

KEYS = {"a": "sk-tenant-a", "b": "sk-tenant-b", "admin": "sk-admin-console"}
ARTIFACTS = Path(
    os.environ.get("LLM_SESSIONS_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)
WAIT_MS = 15_000  # what "live" may take at most on a loaded machine


def chromium_path() -> str:
    """Debian's chromium (``make test`` installs it); never skipped: a missing browser
    fails the run."""
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    assert path, "the console tests need chromium on the PATH (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Running]:
    keys, admins = tmp_path / "keys", tmp_path / "admins"
    keys.write_text("\n".join(KEYS.values()) + "\n")
    admins.write_text(KEYS["admin"] + "\n")
    pricing = {**PRICES, "openai/s1": Pricing(1, 2, 0.1)}
    with gateway_with_standin(
        api_keys_file=str(keys), admin_keys_file=str(admins), max_session_cost_usd=0.02,
        fit_output=False, pricing=pricing,
    ) as running:  # fmt: skip
        yield running


class Console:
    """One browser tab on the console, recording every URL it asks for."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page: Page = self.context.new_page()
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.urls.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.page.goto(url + "/ui")

    def sign_in(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#sign-in")

    def row(self, session_id: str) -> Any:
        return self.page.locator(f'#sessions tbody tr[data-id="{session_id}"]')

    def close(self) -> None:
        self.context.close()


def send(gw: Running, session: str, text: str, key: str = KEYS["a"], **extra: Any) -> int:
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        reply = http.post(
            "/v1/chat/completions",
            json=chat(text, **{"max_tokens": 50, **extra}),
            headers={"authorization": f"Bearer {key}", "x-session-id": session},
        )
    return reply.status_code


def sticky_turn(text: str) -> dict[str, Any]:
    part = {"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}
    return {"messages": [{"role": "user", "content": [part]}]}


@pytest.mark.timeout(300)
def test_the_console_shows_sessions_and_their_timelines_live(browser: Browser, gw: Running) -> None:
    shots = ARTIFACTS / "console"
    shots.mkdir(parents=True, exist_ok=True)
    tab = Console(browser, gw.url)
    try:
        page = tab.page
        expect(page.locator("#login")).to_be_visible()
        tab.sign_in("sk-wrong")  # a wrong key gets the login again, with why
        expect(page.locator("#login-error")).to_contain_text("refused", timeout=WAIT_MS)
        expect(page.locator("#login")).to_be_visible()
        tab.sign_in(KEYS["a"])
        expect(page.locator("#sessions-view")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#open-warning")).to_be_hidden()
        expect(page.locator("#live")).to_be_visible(timeout=WAIT_MS)
        page.evaluate("window.__notReloaded = true")

        # a loop that escalates, a fallback, a cache-sticky turn and a budget refusal
        for _ in range(3):
            assert send(gw, "looping", "the same again") == 200
        gw.standin.set("openai/s1", status=500)
        assert send(gw, "falling-back", "hello") == 200
        gw.standin.set("openai/s1", cached_tokens=800)
        assert send(gw, "sticky", "", **sticky_turn("a long shared prefix")) == 200
        assert send(gw, "sticky", "", **sticky_turn("a long shared prefix, more")) == 200
        assert send(gw, "capped", "small") == 200
        assert send(gw, "capped", "too big", max_tokens=100_000) == 429
        assert send(gw, "other-tenant", "hello", key=KEYS["b"]) == 200

        expect(tab.row("looping").locator(".reason")).to_have_text("escalated", timeout=WAIT_MS)
        expect(tab.row("falling-back").locator(".reason")).to_have_text("fallback")
        expect(tab.row("sticky").locator(".reason")).to_have_text("cache_sticky")
        expect(tab.row("capped").locator(".reason")).to_have_text("refused")
        expect(tab.row("looping").locator(".requests")).to_have_text("3")
        expect(tab.row("other-tenant")).to_have_count(0)  # another tenant's: never shown
        assert page.evaluate("window.__notReloaded") is True

        # the filters: looping sessions only, then back
        page.check("#filter-looping")
        expect(tab.row("capped")).to_have_count(0)
        expect(tab.row("looping")).to_have_count(1)
        page.uncheck("#filter-looping")
        page.screenshot(path=str(shots / "sessions.png"), full_page=True)

        # the session's timeline, and a turn arriving while it is open
        marked = tab.row("looping").element_handle()
        assert marked is not None
        marked.evaluate("row => { row.__same = true; }")
        send(gw, "looping", "something new")  # the row is updated in place, not rebuilt
        expect(tab.row("looping").locator(".requests")).to_have_text("4", timeout=WAIT_MS)
        assert tab.row("looping").evaluate("row => row.__same === true")
        tab.row("looping").click()
        turns = page.locator("#timeline tbody tr")
        expect(turns).to_have_count(4, timeout=WAIT_MS)
        reasons = [r.strip() for r in page.locator("#timeline tbody tr .reason").all_inner_texts()]
        assert reasons == ["new", "pinned", "escalated", "pinned"]
        send(gw, "looping", "and another")
        expect(turns).to_have_count(5, timeout=WAIT_MS)
        expect(page.locator("#spend-chart .spend-point")).to_have_count(5)
        expect(page.locator("#spend-chart .cap-line")).to_have_count(1)
        page.screenshot(path=str(shots / "session.png"), full_page=True)

        # the fallback's timeline marks it; Delete ends the session
        page.click("#back")
        tab.row("falling-back").click()
        expect(page.locator("#timeline .badge.fallback")).to_have_count(1, timeout=WAIT_MS)
        page.click("#delete")
        expect(tab.row("falling-back")).to_have_count(0, timeout=WAIT_MS)
        assert gw.session("falling-back", KEYS["a"]) is None

        # the overview, from the gateway's own counters
        page.click('.tab[data-view="overview"]')
        expect(page.locator("#ov-refusals")).to_have_text("1", timeout=WAIT_MS)
        expect(page.locator("#ov-fallbacks")).to_have_text("1")
        expect(page.locator("#reasons-chart rect")).not_to_have_count(0)
        page.screenshot(path=str(shots / "overview.png"), full_page=True)
        assert tab.errors == []
        assert not any(key in url for url in tab.urls for key in KEYS.values())
    finally:
        tab.close()


@pytest.mark.timeout(300)
def test_an_admin_sees_every_tenant_and_a_tenant_only_its_own(
    browser: Browser, gw: Running
) -> None:
    assert send(gw, "of-a", "hello") == 200
    assert send(gw, "of-b", "hello", key=KEYS["b"]) == 200
    admin, tenant = Console(browser, gw.url), Console(browser, gw.url)
    try:
        admin.sign_in(KEYS["admin"])
        tenant.sign_in(KEYS["b"])
        expect(admin.page.locator("#all-tenants-label")).to_be_visible(timeout=WAIT_MS)
        admin.page.check("#all-tenants")
        expect(admin.row("of-a")).to_have_count(1, timeout=WAIT_MS)
        expect(admin.row("of-b")).to_have_count(1)
        tenants = admin.page.locator("#sessions tbody td.tenant-col").all_inner_texts()
        assert len(set(tenants)) == 2
        expect(tenant.row("of-b")).to_have_count(1, timeout=WAIT_MS)
        expect(tenant.row("of-a")).to_have_count(0)
        expect(tenant.page.locator("#all-tenants-label")).to_be_hidden()
        assert send(gw, "later-a", "hello") == 200  # pushed live to the admin only
        expect(admin.row("later-a")).to_have_count(1, timeout=WAIT_MS)
        admin.row("of-b").click()  # another tenant's timeline, for the admin
        expect(admin.page.locator("#timeline tbody tr")).to_have_count(1, timeout=WAIT_MS)
        assert tenant.row("later-a").count() == 0
        for tab in (admin, tenant):
            assert tab.errors == []
            assert not any(key in url for url in tab.urls for key in KEYS.values())
    finally:
        admin.close()
        tenant.close()


@pytest.mark.timeout(300)
def test_an_open_gateway_warns_on_the_page(browser: Browser) -> None:
    with gateway_with_standin() as gw:
        tab = Console(browser, gw.url)
        try:
            expect(tab.page.locator("#open-warning")).to_be_visible(timeout=WAIT_MS)
            expect(tab.page.locator("#sessions-view")).to_be_visible()
        finally:
            tab.close()


@pytest.mark.timeout(300)
def test_the_watched_demo_plays_its_conversation_in_the_console(
    browser: Browser, tmp_path: Path
) -> None:
    """``llm-sessions demo --watch``: the console, opened with the demo's key, watches the
    conversation arrive turn by turn, its escalation, fallback, cache stickiness and
    budget stop included."""
    port = free_port()
    command = [sys.executable, "-m", "llm_sessions", "demo", "--watch", "--port", str(port),
               "--pace", "0.1"]  # fmt: skip
    with open(tmp_path / "demo.log", "wb") as log:
        demo = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/health", demo)
        tab = Console(browser, url)
        tab.sign_in("demo-key")
        refused = tab.page.locator("#sessions tbody tr", has_text="refused")
        expect(refused).to_have_count(1, timeout=60_000)  # the conversation's budget stop
        claude = tab.row("7d1c0a52-8f4e-4b1b-9c1e-0e4f2b7a9d10")
        expect(claude.locator(".requests")).to_have_text("3", timeout=WAIT_MS)
        tab.page.screenshot(path=str(ARTIFACTS / "console" / "demo-sessions.png"), full_page=True)
        refused.click()
        turns = tab.page.locator("#timeline tbody tr")
        expect(turns).to_have_count(12, timeout=WAIT_MS)
        reasons = [r.strip() for r in tab.page.locator("#timeline .reason").all_inner_texts()]
        for seen in ("upgraded", "escalated", "cache_sticky", "fallback", "refused"):
            assert seen in reasons
        tab.page.screenshot(path=str(ARTIFACTS / "console" / "demo-session.png"), full_page=True)
        assert tab.errors == []
        tab.close()
    finally:
        demo.terminate()
        demo.wait(15)
    assert "The operator console: " in (tmp_path / "demo.log").read_text()
