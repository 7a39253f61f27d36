"""Headless Chromium, a stand-in Pardot tracker host and a test site, all on 127.0.0.1.

Nothing here reaches the internet: the site serves /pardot.js through add_tracking_routes,
pointed at a local tracker whose pd.js only records what it is asked to do.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from entrypoints.config import TrackingConfig
from entrypoints.http.tracking import add_tracking_routes

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACCOUNT_ID = "77777"
CAMPAIGN_ID = "99"

# Stands in for Pardot's pd.js: it counts the page it runs on, as the real one does, and
# keeps every piTracker(url) call where the tests can read it. A second run counts again.
FAKE_PD_JS = """
window.pardotViews = (window.pardotViews || []).concat([location.href]);
window.piTracker = function (url) { window.pardotViews.push(url); };
"""
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
PAGES = {
    "/": '<script src="/pardot.js" async></script>',
    "/twice": '<script src="/pardot.js" async></script><script src="/pardot.js" async></script>',
    "/manual": '<script src="/pardot.js" data-autoload="false"></script>',
    # The README's analytics.js install, with a stub that loads plugins as analytics.js does.
    "/segment": (
        "<script>window.analytics = {register: function (plugin) {"
        " window.registered = plugin; return plugin.load(); }};</script>"
        '<script src="/pardot.js" data-autoload="false" async'
        ' onload="analytics.register(PardotDestination.createPlugin())"></script>'
    ),
}
# A Segment-like context, as analytics.js hands one to a destination plugin.
SEGMENT_CONTEXT_JS = """
window.segmentContext = function (type, fields) {
  var event = {type: type, properties: {}, traits: {}, integrations: {}, context: {}};
  return {event: Object.assign(event, fields || {})};
};
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One event loop for this directory, so every test can drive the session's browser.
    # asyncio_mode=auto has already marked them for a loop per test: go first to win.
    for item in items:
        if HERE in item.path.parents and pytest_asyncio.is_async_test(item):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


@dataclass
class Tracker:
    """The tracker host: what it was asked for, in order, as (path, query) pairs."""

    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def hits(self, path: str) -> list[dict[str, str]]:
        return [query for seen, query in self.requests if seen == path]

    async def wait_for(self, path: str, count: int = 1) -> list[dict[str, str]]:
        for _ in range(100):
            if len(self.hits(path)) >= count:
                # Let a request sent just before it arrive too, so extras are caught.
                await asyncio.sleep(0.1)
                return self.hits(path)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {count} request(s) to {path}; saw {self.requests}")

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        if request.path == "/pd.js":
            # no-store: a second load must reach us, not Chromium's memory cache.
            headers = {"Cache-Control": "no-store"}
            return web.Response(text=FAKE_PD_JS, content_type="text/javascript", headers=headers)
        if request.path == "/analytics":
            return web.Response(body=PIXEL, content_type="image/gif")
        return web.Response(status=404)


async def _serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


@pytest_asyncio.fixture(loop_scope="session")
async def runners() -> AsyncIterator[list[web.AppRunner]]:
    started: list[web.AppRunner] = []
    yield started
    for runner in started:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def tracker(runners: list[web.AppRunner]) -> Tracker:
    recorder = Tracker()
    app = web.Application()
    app.router.add_get("/{tail:.*}", recorder.handle)
    recorder.url = await _serve(app, runners)
    return recorder


@pytest_asyncio.fixture(loop_scope="session")
async def start_site(
    runners: list[web.AppRunner],
) -> Callable[[TrackingConfig], Awaitable[str]]:
    """Start a test site serving PAGES and /pardot.js for a config; returns its base URL."""

    async def page(request: web.Request) -> web.Response:
        head = PAGES[request.path]
        html = f"<!doctype html><html><head><title>Test</title>{head}</head><body></body></html>"
        return web.Response(text=html, content_type="text/html")

    async def start(config: TrackingConfig) -> str:
        app = web.Application()
        for path in PAGES:
            app.router.add_get(path, page)
        add_tracking_routes(app, config)
        return await _serve(app, runners)

    return start


@pytest_asyncio.fixture(loop_scope="session")
async def site(start_site: Callable[[TrackingConfig], Awaitable[str]], tracker: Tracker) -> str:
    return await start_site(TrackingConfig(ACCOUNT_ID, CAMPAIGN_ID, tracker_url=tracker.url))


def _require_chromium() -> None:
    # CI installs chromium, so there a missing one is a broken setup, not a reason to skip.
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    _require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page in its own browser context, so cookies never leak between tests."""
    context = await browser.new_context()
    context.set_default_timeout(5_000)
    await context.add_init_script(SEGMENT_CONTEXT_JS)
    opened = await context.new_page()
    yield opened
    await context.close()
