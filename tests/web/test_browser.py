"""The console in a real browser (Debian's chromium driven by Playwright) over a whole plant
on this machine (erab demo's parts: broker, town, gateways, RA): log in, see the fleet, create
an event as an operator, watch it go active, cancel it; a viewer's attempt is refused; a
forged POST is refused.  Screenshots go to the test's folder (printed); with
ERAB_DOCS_SCREENSHOT=1 the fleet page is also saved as docs/img/dashboard.png."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from erab.echonet.transport import random_loopback_address
from erab.security import Role
from erab.sim.demo import DEMO_OPERATOR, Demo, DemoSettings
from tests.requires import missing, skip_unless

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "violet-harbour-lantern-42"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"

pytestmark = [
    skip_unless(Path(CHROMIUM).is_file(), f"Debian's chromium is not installed at {CHROMIUM}"),
    pytest.mark.timeout(240),
]


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[Demo]:
    demo = Demo(DemoSettings(homes=4, stores=1, speed=60.0, home=tmp_path / "home",
                             listen=("127.0.0.1", 0), base=random_loopback_address(),
                             bind_base=random_loopback_address()))  # fmt: skip
    try:
        parts = await demo.start()
        parts.desk.directory.add("vera", Role.VIEWER, PASSWORD)
        parts.desk.directory.add("olive", Role.OPERATOR, PASSWORD)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not np.any(parts.ra.state.online) and loop.time() < deadline:
            await asyncio.sleep(0.5)
        assert np.any(parts.ra.state.online), "no telemetry reached the RA"
        yield demo
    finally:
        await demo.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing("playwright is not installed; pip install -e '.[test]'")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


def expect(locator: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


async def log_in(page: Any, url: str, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{url}/fleet")
    assert "/login" in page.url  # no session: the login page first
    await page.fill("#name", name)
    await page.fill("#password", password)
    await page.click("#login-button")
    await page.wait_for_url(f"{url}/fleet")


async def test_an_operator_sees_the_fleet_creates_an_event_watches_it_go_active_and_cancels_it(
    plant: Demo, browser: Any, tmp_path: Path,
) -> None:  # fmt: skip
    shots = tmp_path / "screenshots"
    shots.mkdir()
    url = plant.console_url
    page = await (await browser.new_context(locale="en-GB",
                                            viewport={"width": 1280, "height": 900})).new_page()
    await log_in(page, url, "olive")
    sites = len(plant.parts.ra.registry.sites())  # type: ignore[union-attr]
    # the table is drawn from the live feed: one row per site, the fleet's chart beside
    await expect(page.locator("#sites tbody tr")).to_have_count(sites)
    await expect(page.locator("#k-sites-online")).not_to_have_text("0", timeout=20_000)
    await expect(page.locator("#fleet-chart svg path")).to_have_count(1, timeout=20_000)
    await page.fill("#filter", "store")
    await expect(page.locator("#sites tbody tr")).to_have_count(1)
    await page.fill("#filter", "")
    await expect(page.locator("#site-grid a.cell")).to_have_count(sites)
    await page.screenshot(path=str(shots / "fleet.png"), full_page=True)
    if os.environ.get("ERAB_DOCS_SCREENSHOT"):
        DOCS_IMG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shots / "fleet.png", DOCS_IMG)

    await page.click("text=Events")
    await page.fill("#target_kw", "-2")
    await page.fill("#duration_minutes", "180")
    await page.click("#create-button")
    await page.wait_for_url(f"{url}/events/ev-*")
    event_id = page.url.rsplit("/", 1)[1]
    event = plant.parts.ra.events.get(event_id)  # type: ignore[union-attr]
    assert event.request.target_kw == -2 and event.request.requested_by == "olive"
    # the form's default start is 10 simulated minutes ahead: 10 s at 60x
    await expect(page.locator("#stage")).to_have_text("active", timeout=60_000)
    await expect(page.locator("#acks")).not_to_have_text("0", timeout=30_000)
    await page.wait_for_selector("#event-chart svg path[data-series]")
    await page.screenshot(path=str(shots / "event-active.png"), full_page=True)
    asked: list[str] = []

    async def confirm(dialog: Any) -> None:  # the console asks before cancelling
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", confirm)
    await page.click("#cancel-button")
    await expect(page.locator("#stage")).to_have_text("cancelled")
    assert event.stage.value == "cancelled" and event.history[-1][3] == "olive"
    assert asked == ["Cancel this event?"]
    await page.screenshot(path=str(shots / "event-cancelled.png"), full_page=True)
    await page.goto(f"{url}/events")
    await expect(page.locator(f"tr[data-event='{event_id}'] .stage")).to_have_text("cancelled")
    await page.wait_for_selector("#timeline svg text.legend-item")
    await page.screenshot(path=str(shots / "events.png"), full_page=True)
    # every site is back: the cancel is acknowledged and the fleet shows them all online
    await page.goto(f"{url}/fleet")
    await expect(page.locator("#sites tbody .badge.online")).to_have_count(sites,
                                                                          timeout=30_000)
    print(f"screenshots in {shots}")


async def test_a_viewer_cannot_create_an_event_and_a_forged_post_is_refused(
    plant: Demo, browser: Any, tmp_path: Path,
) -> None:  # fmt: skip
    shots = tmp_path / "screenshots"
    shots.mkdir()
    url = plant.console_url
    page = await (await browser.new_context(locale="ja-JP")).new_page()
    await log_in(page, url, "vera")
    assert await page.text_content("h1 >> nth=0") is not None
    assert "フリート" in await page.inner_text("header")  # Japanese labels for a ja browser
    await page.screenshot(path=str(shots / "fleet-ja.png"), full_page=True)
    await page.goto(f"{url}/events")
    assert await page.query_selector("#create-event") is None  # no form for a viewer
    # the viewer submits a create anyway, with a valid CSRF token of the session
    await page.evaluate("""() => {
        const f = document.createElement('form'); f.method = 'post'; f.action = '/events';
        const token = document.querySelector('input[name=csrf_token]').value;
        for (const [k, v] of [['csrf_token', token], ['target_kw', '-1'],
                              ['start', '2030-01-01T14:00'], ['duration_minutes', '60']]) {
            const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f); f.submit(); }""")
    await page.wait_for_selector("#refusal")
    refusal = await page.inner_text("#refusal")
    assert "may not manage dr events" in refusal
    await page.screenshot(path=str(shots / "viewer-refused.png"), full_page=True)
    assert plant.parts.ra.events.events == {}  # type: ignore[union-attr]
    # a forged POST (no CSRF token), sent with the operator's own session cookie
    # the demo's printed password is one-time: its first login lands on the password page,
    # every other page sends it back there, and its own password opens the console
    op = await (await browser.new_context(locale="en-GB")).new_page()
    await op.goto(f"{url}/fleet")
    await op.fill("#name", DEMO_OPERATOR)
    await op.fill("#password", plant.password or "")
    await op.click("#login-button")
    await op.wait_for_url(f"{url}/password**")
    await expect(op.locator("#must-change")).to_be_visible()
    await op.goto(f"{url}/events")
    await op.wait_for_url(f"{url}/password**")
    await op.fill("#current_password", plant.password or "")
    await op.fill("#new_password", "quiet harbour lantern 42")
    await op.fill("#new_password_again", "quiet harbour lantern 42")
    await op.click("#password-button")
    await op.wait_for_url(f"{url}/events")
    await expect(op.locator(".flash.ok")).to_have_text("Password changed.")
    status, body = await op.evaluate("""async () => {
        const r = await fetch('/events', {method: 'POST', headers:
            {'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'target_kw=-1&start=2030-01-01T14:00&duration_minutes=60'});
        return [r.status, await r.text()]; }""")
    assert status == 403 and "CSRF" in body
    assert plant.parts.ra.events.events == {}  # type: ignore[union-attr]
    print(f"screenshots in {shots}")
