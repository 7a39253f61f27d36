"""The aiohttp application: Segment's HTTP Tracking API, the Webhooks destination, health.

Handlers stay thin: authenticate, parse, store, answer. Nothing here calls Pardot: an
event is answered once it is durably queued, and the worker delivers it later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from domain.ports import EventQueue, QueueFull
from entrypoints.door_traffic import DoorTraffic
from entrypoints.faults import store_fault
from entrypoints.http import ingest
from entrypoints.http.admin_key import admin_only
from entrypoints.http.ingest import Arrival, ByteBudget, Intake, Refused, WriteKeys
from entrypoints.http.put_apart import put_apart
from entrypoints.http.suppressed import without_suppressed
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness

log = structlog.get_logger(__name__)

QUEUE = web.AppKey("queue", EventQueue)
METRICS = web.AppKey("metrics", Metrics)
# Pardot API calls used today and the daily limit, for /metrics.
READINESS = web.AppKey("readiness", Readiness)
WRITE_KEYS = web.AppKey("write_keys", WriteKeys)
SHARED_SECRET = web.AppKey("shared_secret", str)
BUDGET = web.AppKey("ingest_budget", ByteBudget)


def _nobody() -> None:
    """No worker in this process to wake."""


@dataclass(frozen=True)
class DoorOptions:
    webhook_batching: bool = False
    body_timeout: float = ingest.BODY_TIMEOUT_SECONDS
    # Called once a request's events are stored: wakes `serve`'s idle worker.
    on_stored: Callable[[], None] = _nobody
    # The requests being answered, which `serve`'s worker gives way to.
    traffic: DoorTraffic = field(default_factory=DoorTraffic)


DOOR = web.AppKey("door_options", DoorOptions)
# For the AppRunner: aiohttp closes a connection that has not sent a whole request's headers
# within `keepalive_timeout` of opening (or of its previous answer), which is what bounds
# slow headers; aiohttp has no separate header timeout.
SERVER_OPTIONS: dict[str, Any] = {
    "keepalive_timeout": ingest.HEADER_TIMEOUT_SECONDS,
    "lingering_time": ingest.LINGERING_SECONDS,
}
SUCCESS = b'{"success": true}'  # encoded once: most answers are this one
READY_STORE_SECONDS = 5.0  # a store slower than this to count a few rows is not ready
BATCHING_NEEDS_A_KEY = "DESTINATION_WEBHOOK_BATCHING=true needs DESTINATION_WRITE_KEY"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def runner(app: web.Application, **options: Any) -> web.AppRunner:
    """The AppRunner every server of this app should use (SERVER_OPTIONS, then `options`)."""
    return web.AppRunner(app, **{**SERVER_OPTIONS, **options})


def create_app(
    queue: EventQueue,
    *,
    write_keys: tuple[str, ...] = (),
    shared_secret: str = "",
    webhook_batching: bool = False,
    metrics: Metrics | None = None,
    readiness: Readiness | None = None,
    max_ingest_bytes: int = ingest.MAX_INGEST_BYTES,
    body_timeout: float = ingest.BODY_TIMEOUT_SECONDS,
    on_stored: Callable[[], None] = _nobody,
    traffic: DoorTraffic | None = None,
) -> web.Application:
    if webhook_batching and not write_keys:
        raise ValueError(BATCHING_NEEDS_A_KEY)
    # aiohttp checks the decompressed body against client_max_size and answers 413. No
    # middleware: aiohttp would run it on every request; each route is `guarded` instead.
    app = web.Application(client_max_size=ingest.MAX_REQUEST_BYTES)
    app[QUEUE] = queue
    app[METRICS] = metrics or Metrics()
    app[READINESS] = readiness or Readiness()
    app[WRITE_KEYS] = WriteKeys(write_keys)
    app[SHARED_SECRET] = shared_secret
    app[BUDGET] = ByteBudget(max_ingest_bytes)
    app[DOOR] = DoorOptions(webhook_batching, body_timeout, on_stored, traffic or DoorTraffic())
    if not write_keys:
        log.warning("DESTINATION_WRITE_KEY is not set: /v1 endpoints accept any sender")
    if not shared_secret and not write_keys:
        log.warning("DESTINATION_SHARED_SECRET is not set: /webhook accepts any sender")
    app.router.add_post("/v1/batch", guarded(_batch))
    app.router.add_post("/v1/import", guarded(_batch))
    for event_type in ingest.EVENT_TYPES:
        app.router.add_post(f"/v1/{event_type}", guarded(_single(event_type)))
    app.router.add_post("/webhook", guarded(_webhook))
    app.router.add_get("/healthz", guarded(_healthz))
    app.router.add_get("/readyz", guarded(_readyz))
    app.router.add_get("/metrics", guarded(admin_only(_metrics)))
    return app


def guarded(handler: Handler) -> Handler:
    """`handler`, counted in the door's traffic while it runs (`serve`'s worker gives way
    while requests crowd), and whose every refusal is JSON (`refusing`)."""
    answer = refusing(handler)

    async def counted(request: web.Request) -> web.StreamResponse:
        traffic = request.app[DOOR].traffic
        traffic.entered()
        try:
            return await answer(request)
        finally:
            traffic.left()

    return counted


def refusing(handler: Handler) -> Handler:
    """`handler`, whose every refusal is JSON with `code` and `message` (analytics-python
    prints those)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refused:
            request.app[METRICS].refused.labels(refused.code).inc()
            response = _answer(refused.status, refused.code, refused.message)
            if refused.retry_after is not None:
                response.headers["Retry-After"] = str(refused.retry_after)
            return response
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
        except Exception as error:
            # Nothing was acknowledged, so the sender keeps the events: a 503 makes Segment
            # and its libraries retry, where a 500 page would tell them nothing.
            log.error("could not store a request's events", error=type(error).__name__)
            log.debug("could not store a request's events", exc_info=error)
            request.app[METRICS].refused.labels("unavailable").inc()
            request.app[READINESS].store_failed(store_fault(error))
            response = _answer(503, "unavailable", "the events could not be stored: retry later")
            response.headers["Retry-After"] = "5"
            return response

    return answer


def _answer(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"success": False, "code": code, "message": message, **extra}
    return web.json_response(body, status=status)


def _single(event_type: str) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        keys = request.app[WRITE_KEYS]
        scope = keys.from_header(request.headers.get("Authorization"))
        async with _Body(request, proven=scope is not None or not keys) as raw:
            payload, plain = ingest.decode_json(raw)
            scope = scope if scope is not None else keys.from_body(payload)
            intake = ingest.single(payload, event_type, Arrival.now(len(raw), plain=plain))
            return await _store(request, intake, scope)

    return handle


async def _batch(request: web.Request) -> web.Response:
    keys = request.app[WRITE_KEYS]
    scope = keys.from_header(request.headers.get("Authorization"))
    async with _Body(request, proven=scope is not None or not keys) as raw:
        payload, plain = ingest.decode_json(raw)
        scope = scope if scope is not None else keys.from_body(payload)
        arrival = Arrival.now(len(raw), plain=plain)
        return await _store(request, ingest.batch(payload, arrival), scope)


async def _webhook(request: web.Request) -> web.Response:
    keys = request.app[WRITE_KEYS]
    secret = request.app[SHARED_SECRET]
    key_scope = keys.from_header(request.headers.get("Authorization"))
    # Without a key in the header, the sender is proven only by what its body holds.
    proven = key_scope is not None or not (secret or keys)
    async with _Body(request, proven=proven) as sent:
        raw = ingest.utf8(sent)
        array = ingest.is_array(raw)
        if array:
            if not request.app[DOOR].webhook_batching:
                raise Refused(
                    400,
                    "batching_off",
                    "a JSON array of events needs DESTINATION_WEBHOOK_BATCHING=true",
                )
            if key_scope is None:
                # The signature covers only the first element: a captured one could carry
                # any events appended after it.
                raise Refused(
                    401,
                    "unauthorized",
                    "a batch needs the write key in the Authorization header (Basic or Bearer)",
                )
        if secret:
            # Checked on the raw bytes before parsing: nothing unauthenticated gets parsed.
            signature = request.headers.get("X-Signature")
            signed = ingest.signed_part(raw) if array else sent
            ingest.check_signature(secret, signature, signed)
        payload, plain = ingest.decode_json(raw)
        arrival = Arrival.now(len(raw), plain=plain)
        if isinstance(payload, list):
            if key_scope is None:  # refused above already: `raw` is what both steps read
                raise Refused(401, "unauthorized", "a batch needs the write key")
            return await _store(request, ingest.array(payload, arrival), key_scope)
        if key_scope is not None:
            scope = key_scope
        elif secret:
            scope = ingest.SIGNATURE_SCOPE
        else:
            scope = keys.from_body(payload)
        return await _store(request, ingest.single(payload, None, arrival), scope)


class _Body:
    """`async with _Body(request) as raw`: the request's body, read only once it may be:
    JSON, within the byte budget, in time.

    The budget is held until the handler is done, since parsing is what costs memory. A
    class rather than an `asynccontextmanager`: one is entered per request, and the
    generator version cost a measurable share of ingest.
    """

    __slots__ = ("_held", "_proven", "_request")

    def __init__(self, request: web.Request, *, proven: bool) -> None:
        self._request = request
        self._proven = proven  # whether the sender's key was checked before the body
        self._held: ingest.Held | None = None

    async def __aenter__(self) -> bytes:
        request = self._request
        # The exact header is compared first: parsing it is what `content_type` costs.
        exact = request.headers.get("Content-Type") == "application/json"
        if not exact and request.content_type != "application/json":
            # A web page can POST text/plain to any origin without asking; Segment's
            # libraries all send application/json, which a cross-site form cannot.
            raise Refused(415, "unsupported_media_type", "Content-Type must be application/json")
        declared = request.content_length
        if declared is not None and declared > ingest.MAX_REQUEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                max_size=ingest.MAX_REQUEST_BYTES, actual_size=declared
            )
        compressed = "Content-Encoding" in request.headers
        size = declared if declared is not None and not compressed else ingest.MAX_REQUEST_BYTES
        held = request.app[BUDGET].hold(size, proven=self._proven)
        held.__enter__()
        try:
            raw = await self._read()
        except BaseException:
            held.__exit__()
            raise
        self._held = held
        return raw

    async def __aexit__(self, *exc_info: object) -> None:
        if self._held is not None:
            self._held.__exit__()

    async def _read(self) -> bytes:
        request = self._request
        if request.content.is_eof():
            # The whole body came with the headers (most do): nothing to wait for, and no
            # timer to arm and cancel, which costs more than the rest of the read.
            return await request.read()
        seconds = request.app[DOOR].body_timeout
        try:
            async with asyncio.timeout(seconds):
                return await request.read()
        except TimeoutError:
            raise Refused(408, "timeout", f"the body did not arrive within {seconds:g} s") from None


async def _store(request: web.Request, intake: Intake, scope: str) -> web.Response:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    intake.store = await without_suppressed(request.app, intake.store, metrics.refused)
    if intake.store:
        queue = request.app[QUEUE]
        try:
            await queue.put(intake.store, scope=scope)
        except QueueFull:
            raise
        except Exception as failure:
            if len(intake.store) < 2:
                raise
            await put_apart(queue, intake, scope, failure)
        request.app[DOOR].on_stored()
        request.app[READINESS].store_failed(None)
    metrics.ingest_seconds.observe(time.perf_counter() - started)
    if intake.store:
        metrics.received_identify.inc(len(intake.store))
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
    return web.Response(body=SUCCESS, content_type="application/json")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    reason = request.app[READINESS].reason or await _store_problem(request.app[QUEUE])
    if not reason:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "unready", "reason": reason}, status=503)


async def _store_problem(queue: EventQueue) -> str:
    """Why the queue cannot be read now, in words that name no file; "" when it can."""
    try:
        async with asyncio.timeout(READY_STORE_SECONDS):
            await queue.counts()  # a few rows, kept by the store itself
    except Exception as error:
        log.warning("the queue cannot be read", error=type(error).__name__)
        fault = store_fault(error)
        return fault or f"the queue database cannot be opened or read ({type(error).__name__})"
    return ""


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
    body = await metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
