"""The aiohttp application: Segment's HTTP Tracking API, the Webhooks destination, health.

Handlers stay thin: authenticate, parse, store, answer. Nothing here calls Pardot: an
event is answered once it is durably queued, and the worker delivers it later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from domain.ports import EventQueue, QueueFull
from entrypoints import ingest
from entrypoints.ingest import Arrival, Intake, Refused
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness

log = logging.getLogger(__name__)

QUEUE = web.AppKey("queue", EventQueue)
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)
WRITE_KEYS = web.AppKey("write_keys", tuple)
SHARED_SECRET = web.AppKey("shared_secret", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    queue: EventQueue,
    *,
    write_keys: tuple[str, ...] = (),
    shared_secret: str = "",
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
) -> web.Application:
    # aiohttp checks the decompressed body against client_max_size and answers 413.
    app = web.Application(client_max_size=ingest.MAX_REQUEST_BYTES, middlewares=[_json_errors])
    app[QUEUE] = queue
    app[METRICS] = metrics or Metrics()
    app[READINESS] = readiness or Readiness()
    app[WRITE_KEYS] = write_keys
    app[SHARED_SECRET] = shared_secret
    if not write_keys:
        log.warning("DESTINATION_WRITE_KEY is not set: /v1 endpoints accept any sender")
    if not shared_secret and not write_keys:
        log.warning("DESTINATION_SHARED_SECRET is not set: /webhook accepts any sender")
    app.router.add_post("/v1/batch", _batch)
    app.router.add_post("/v1/import", _batch)
    for event_type in ingest.EVENT_TYPES:
        app.router.add_post(f"/v1/{event_type}", _single(event_type))
    app.router.add_post("/webhook", _webhook)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON with `code` and `message`: analytics-python prints those."""
    try:
        return await handler(request)
    except Refused as refused:
        request.app[METRICS].refused.labels(refused.code).inc()
        return _answer(refused.status, refused.code, refused.message)
    except web.HTTPRequestEntityTooLarge:
        request.app[METRICS].refused.labels("too_large").inc()
        limit = ingest.MAX_REQUEST_BYTES // 1024
        return _answer(413, "too_large", f"request body is over {limit} KB")
    except QueueFull:
        request.app[METRICS].refused.labels("queue_full").inc()
        response = _answer(503, "queue_full", "the queue is full: retry later")
        response.headers["Retry-After"] = "30"
        return response
    except web.HTTPException:
        raise
    except Exception:
        # Nothing was acknowledged, so the sender keeps the events: a 503 makes Segment and
        # its libraries retry, where a 500 page would tell them nothing.
        log.exception("could not store a request's events")
        request.app[METRICS].refused.labels("unavailable").inc()
        response = _answer(503, "unavailable", "the events could not be stored: retry later")
        response.headers["Retry-After"] = "5"
        return response


def _answer(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"success": False, "code": code, "message": message, **extra}
    return web.json_response(body, status=status)


def _single(event_type: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        payload = ingest.decode_json(raw)
        body = payload if isinstance(payload, dict) else None
        ingest.check_write_key(_keys(request), request.headers.get("Authorization"), body)
        return await _store(request, ingest.single(payload, event_type, Arrival.now(len(raw))))

    return handle


async def _batch(request: web.Request) -> web.Response:
    raw = await request.read()
    payload = ingest.decode_json(raw)
    body = payload if isinstance(payload, dict) else None
    ingest.check_write_key(_keys(request), request.headers.get("Authorization"), body)
    return await _store(request, ingest.batch(payload, Arrival.now(len(raw))))


async def _webhook(request: web.Request) -> web.Response:
    raw = await request.read()
    secret = request.app[SHARED_SECRET]
    if secret:
        # Checked on the raw bytes before parsing: nothing unauthenticated gets parsed.
        ingest.check_signature(secret, request.headers.get("X-Signature"), ingest.signed_part(raw))
    payload = ingest.decode_json(raw)
    if not secret:
        body = payload if isinstance(payload, dict) else None
        ingest.check_write_key(_keys(request), request.headers.get("Authorization"), body)
    if isinstance(payload, list):
        return await _store(request, ingest.array(payload, Arrival.now(len(raw))))
    return await _store(request, ingest.single(payload, None, Arrival.now(len(raw))))


async def _store(request: web.Request, intake: Intake) -> web.Response:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    if intake.store:
        await request.app[QUEUE].put(intake.store)
    metrics.ingest_seconds.observe(time.perf_counter() - started)
    if intake.store:
        metrics.received.labels("identify").inc(len(intake.store))
    for event_type in intake.counted:
        metrics.received.labels(event_type).inc()
    if intake.errors:
        metrics.refused.labels("invalid_event").inc(len(intake.errors))
        stored = len(intake.store) + len(intake.counted)
        message = (
            f"{len(intake.errors)} invalid event(s); {stored} valid event(s) accepted"
            if stored
            else intake.errors[0]["reason"]
        )
        return _answer(400, "invalid_event", message, errors=intake.errors, accepted=stored)
    return web.json_response({"success": True})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if readiness.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "unready", "reason": readiness.reason}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        counts = await request.app[QUEUE].counts()
    except Exception:  # a metrics scrape must not fail because the queue is busy
        log.exception("could not count the queue for /metrics")
        counts = {}
    for state, count in counts.items():
        metrics.queue.labels(state).set(count)
    metrics.ready.set(1 if request.app[READINESS].ready else 0)
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _keys(request: web.Request) -> tuple[str, ...]:
    return request.app[WRITE_KEYS]
