"""`GET /status`: a page people look at, and `/status.json`, the figures it draws.

No build step: one HTML page with its script inline, and uPlot (vendored in
`static/vendor/`, served by the service itself; nothing comes from a CDN) for the chart of
deliveries, rejections and retries per minute over the last hour. The page asks for
`status.json` every few seconds and redraws; it fits a phone's width.

With DESTINATION_ADMIN_KEY set, `/status`, `/status.json` and `/metrics` need it: as a Bearer
token, or as the password of HTTP Basic (any user name), which is what a browser asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import datetime
from importlib.resources import files

from aiohttp import web

from entrypoints.http.admin_key import admin_only, set_admin_key
from entrypoints.http.app import METRICS, guarded
from entrypoints.operator.fields import ACCOUNT_FIELDS_NOTE, FRESH_ENOUGH, check
from entrypoints.operator.status import StatusSources, build_report, read_index_age

log = logging.getLogger(__name__)

SOURCES = web.AppKey("status_sources", StatusSources)
ASSETS = {
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}


def add_status_routes(app: web.Application, sources: StatusSources, *, admin_key: str = "") -> None:
    app[SOURCES] = sources
    set_admin_key(app, admin_key)  # /metrics, added with the app, reads it too
    app[REFRESHER] = FieldsRefresher(sources)
    app.router.add_get("/status", guarded(admin_only(_page)))
    app.router.add_get("/status.json", guarded(admin_only(_figures)))
    app.router.add_get("/status/assets/{name}", guarded(_asset))

    async def scrape() -> None:
        """/metrics gauges that live in the store: the queue's age, the daily budget, the
        index's age."""
        metrics = app[METRICS]
        metrics.index.age_seconds = None  # absent, not stale, if the store cannot be read
        oldest = await sources.queue.oldest_pending()
        age = 0.0 if oldest is None else (sources.clock() - oldest).total_seconds()
        metrics.oldest_pending.set(max(age, 0.0))
        if sources.budget is not None:
            usage = await sources.budget.usage()
            metrics.api_calls_used.set(usage.used)
            metrics.api_calls_limit.set(usage.limit)
        if sources.index is not None:
            metrics.index.age_seconds = (await read_index_age(sources.index)).seconds

    if METRICS in app:
        app[METRICS].on_scrape.append(scrape)

    async def stop_refresher(app: web.Application) -> None:
        await app[REFRESHER].stop()

    app.on_cleanup.append(stop_refresher)


class FieldsRefresher:
    """Reads the account's custom fields in the background when the stored list is old, so a
    page never waits on Pardot; at most one read at a time, at most once an hour."""

    def __init__(self, sources: StatusSources) -> None:
        self._sources = sources
        self._task: asyncio.Task[None] | None = None
        self._tried_at: datetime | None = None

    def poke(self) -> None:
        if self._sources.repository is None or (self._task and not self._task.done()):
            return
        now = self._sources.clock()
        if self._tried_at is not None and now - self._tried_at < FRESH_ENOUGH:
            return
        self._tried_at = now
        self._task = asyncio.create_task(self._refresh(now))

    async def _refresh(self, now: datetime) -> None:
        sources = self._sources
        try:
            cached = await sources.history.noted(ACCOUNT_FIELDS_NOTE)
            if cached and now - datetime.fromisoformat(cached["checked_at"]) < FRESH_ENOUGH:
                return
            await check(sources.history, sources.repository, now=now)
        except Exception:
            log.warning("could not read the account's custom fields for the status page")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


REFRESHER = web.AppKey("fields_refresher", FieldsRefresher)


async def _figures(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    request.app[REFRESHER].poke()
    # The page reads only the stored field list; the refresher keeps it fresh.
    report = await build_report(replace(sources, repository=None))
    return web.json_response(report.as_dict(), headers={"Cache-Control": "no-store"})


async def _page(request: web.Request) -> web.Response:
    page = (files("entrypoints") / "static" / "status.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = ASSETS.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    body = (files("entrypoints") / "static" / "vendor" / name).read_bytes()
    return web.Response(
        body=body, content_type=kind, headers={"Cache-Control": "public, max-age=86400"}
    )
