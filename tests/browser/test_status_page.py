"""The status page in headless Chromium, served by the real `serve` against the fake Pardot:
its figures, its chart (a screenshot whose chart area is not blank), its updates, a phone."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest_asyncio
from PIL import Image
from playwright.async_api import Browser, Page

from adapters.sqlite.stores import SQLiteStores
from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from domain.ports import SLOT_BUCKET_SECONDS, IndexState
from tests.child_server import ChildServer, start_server

WRITE_KEY = "browser-write-key"
ADMIN_KEY = "browser-admin-key"
# Set to a path to keep the screenshot (the README's picture is made this way).
KEEP_SCREENSHOT = os.environ.get("STATUS_PAGE_SCREENSHOT")
# As long as the pages' own default timeout: the page refreshes every second.
FIGURES_SECONDS = 15.0


def _identify(n: int, user: str, **traits: object) -> dict[str, object]:
    return {"type": "identify", "messageId": f"b-{n}", "userId": user,
            "traits": {"email": f"{user}@example.com", **traits}}  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def service(tmp_path: Path) -> AsyncIterator[tuple[ChildServer, FakePardot]]:
    fake = FakePardot(version=4, custom_fields={"plan"})
    async with running_fake_pardot(fake) as pardot:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PARDOT_API_VERSION": "4",
            "PARDOT_ACCOUNT_ID": "507251",
            "PARDOT_BUSINESS_UNIT_ID": DEFAULT_BUSINESS_UNIT_ID,
            "PARDOT_BASE_URL": pardot.url,
            "SALESFORCE_LOGIN_URL": pardot.url,
            "SALESFORCE_CLIENT_ID": DEFAULT_CLIENT_ID,
            "SALESFORCE_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "SALESFORCE_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
            "DESTINATION_WRITE_KEY": WRITE_KEY,
            "DESTINATION_ADMIN_KEY": ADMIN_KEY,
            "DESTINATION_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
            "DESTINATION_MAX_ATTEMPTS": "1",
            "PARDOT_RETRY_WAIT_MAX": "0.05",
            "SALESFORCE_TOKEN_FILE": str(tmp_path / "tokens.json"),
            "PARDOT_DESTINATION_CONFIG": str(tmp_path / "absent.toml"),
        }
        server = await start_server("-m", "entrypoints.cli.main", "serve", "--port", "0", env=env)
        try:
            yield server, fake
        finally:
            await server.stop()


async def _send(url: str, *events: dict[str, object]) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{url}/v1/batch", json={"batch": list(events)}, auth=(WRITE_KEY, "")
        )
        assert answer.status_code == 200, answer.text


async def _open(browser: Browser, url: str, **viewport: int) -> Page:
    context = await browser.new_context(
        http_credentials={"username": "admin", "password": ADMIN_KEY},
        viewport={"width": viewport.get("width", 1100), "height": viewport.get("height", 900)},
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto(f"{url}/status?refresh=1")
    return page


async def _wait_for_figures(page: Page, **expected: str) -> None:
    """Until the figures named by element id all show their expected text in one refresh.

    A report reads the queue before the history, so one refresh can show a delivery's rate
    while its events still count as waiting: wait for the whole state, not one figure of it.
    """
    # One evaluate reads them all: the page redraws them together, between two of our reads.
    read = "ids => Object.fromEntries(ids.map(i => [i, document.getElementById(i).textContent]))"
    deadline = asyncio.get_running_loop().time() + FIGURES_SECONDS
    while (seen := await page.evaluate(read, list(expected))) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"the status page never showed {expected} in {FIGURES_SECONDS:g} s; last {seen}"
            )
        await asyncio.sleep(0.1)


def _chart_is_drawn(png: bytes) -> int:
    """How many pixels of the chart carry the delivered series' green (#1b7f3b)."""
    data = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    green = 0
    for i in range(0, len(data), 3):
        r, g, b = data[i], data[i + 1], data[i + 2]
        if abs(r - 0x1B) < 40 and abs(g - 0x7F) < 40 and abs(b - 0x3B) < 40:
            green += 1
    return green


async def test_the_page_shows_the_figures_and_a_drawn_chart_and_updates(
    browser: Browser, service: tuple[ChildServer, FakePardot]
) -> None:
    server, fake = service
    await _send(server.url, _identify(1, "ada", plan="pro"), _identify(2, "bob"))
    page = await _open(browser, server.url)
    try:
        await _wait_for_figures(page, rate="0.2", depth="0")
        assert await page.text_content("#depth") == "0"
        assert await page.text_content("#token") == "ok"
        assert await page.text_content("#dead") == "0"
        assert (await page.text_content("#index") or "").endswith("(filling)")
        # No complete refresh yet: no age; none began in the last minute.
        assert await page.text_content("#index-age") == "\u2013"  # an en dash
        assert await page.text_content("#index-refreshes") == "0"
        assert " of 25,000 (resets " in (await page.text_content("#budget") or "")
        chart = page.locator("#chart canvas")
        await chart.wait_for()
        png = await page.locator("#chart").screenshot()
        blank = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1_000_000)
        assert blank is not None and len(blank) > 10  # not one flat colour
        assert _chart_is_drawn(png) > 50

        # New deliveries, and one given up on: the page follows without a reload.
        fake.fail_next(30, err_code=85, message="Unable to save prospect")
        await _send(server.url, _identify(3, "cy"))
        await page.wait_for_function("document.getElementById('dead').textContent === '1'")
        assert "Unable to save prospect" in (await page.text_content("#dead-letters") or "")
        fake.failures.clear()
        await _send(server.url, *(_identify(10 + i, f"u{i}") for i in range(8)))
        await page.wait_for_function("document.getElementById('rate').textContent === '1'")
        total = await page.evaluate("plot.data[1].reduce((a, b) => a + b, 0)")
        assert total == 10
        if KEEP_SCREENSHOT:
            await page.screenshot(path=KEEP_SCREENSHOT, full_page=True)
    finally:
        await page.context.close()


async def test_the_page_shows_the_index_age_and_refreshes_per_minute(
    browser: Browser, service: tuple[ChildServer, FakePardot], tmp_path: Path
) -> None:
    server, _ = service
    # A complete index whose watermark's refresh began 30 s ago on the store's clock (younger
    # than DESTINATION_INDEX_REFRESH_SECONDS, so the service does not refresh it meanwhile).
    async with SQLiteStores.opened(tmp_path / "queue.db") as stores:
        index = stores.prospect_index()
        now = await index.clock()
        began = now - timedelta(seconds=30)
        await index.save_state(
            IndexState(
                complete=True,
                high_water="2026-03-01 10:00:00",
                watermark_began=began,
                recent_refreshes=(now - timedelta(seconds=90), began),
            )
        )
    page = await _open(browser, server.url)
    try:
        await _wait_for_figures(page, **{"index-refreshes": "1"})
        shown = await page.text_content("#index-age") or ""
        assert shown.endswith(" s") and 30 <= int(shown.removesuffix(" s")) < 60, shown
    finally:
        await page.context.close()


async def test_the_page_shows_how_busy_the_pardot_slots_were(
    browser: Browser, service: tuple[ChildServer, FakePardot], tmp_path: Path
) -> None:
    server, _ = service
    # 150 busy slot-seconds in the current bucket, as deliverers record them: 43% to 50% of
    # 5 slots over the 60 to 70 s the minute's buckets span.
    async with SQLiteStores.opened(tmp_path / "queue.db") as stores:
        bucket = int(time.time()) // SLOT_BUCKET_SECONDS * SLOT_BUCKET_SECONDS
        await stores.slot_busy().add(bucket, 150)
    page = await _open(browser, server.url)
    try:
        await page.wait_for_function(
            "document.getElementById('slots-busy').textContent.endsWith('% of 5')"
        )
        shown = await page.text_content("#slots-busy") or ""
        assert 42 <= int(shown.removesuffix("% of 5")) <= 50, shown
    finally:
        await page.context.close()


async def test_the_page_fits_a_phone_and_needs_the_admin_key(
    browser: Browser, service: tuple[ChildServer, FakePardot]
) -> None:
    server, _ = service
    page = await _open(browser, server.url, width=390, height=844)
    try:
        await page.locator("#chart canvas").wait_for()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        box = await page.locator("#chart canvas").bounding_box()
        assert box is not None and box["width"] <= 390
    finally:
        await page.context.close()
    context = await browser.new_context()  # no credentials
    try:
        answer = await context.request.get(f"{server.url}/status")
        assert answer.status == 401 and answer.headers["www-authenticate"].startswith("Basic")
    finally:
        await context.close()
