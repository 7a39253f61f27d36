"""A faithful fake of Pardot's legacy v3/v4 prospect API and the Salesforce login before it.

It exists so the destination can be exercised end to end, over real HTTP, against the
behaviour written down in PARDOT_API.md: error codes in the body, JSON that flips between
object and array, v3's one-prospect-per-email against v4's many, batch quirks, the five
concurrent requests limit, the daily budget, tokens that die without warning and the
recycle bin (deletes and merges, seen only by `deleted=true` queries).

Usage from tests::

    async with running_fake_pardot(FakePardot(version=4)) as server:
        token = server.fake.issue_access_token()
        ...  # call f"{server.url}/api/prospect/version/4/do/upsert/email/a@b.c"

`serve_forever` runs the same fake as a standalone process for demos.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from contracts.fake_pardot_bulk import BULK_PATHS, MAX_BODY_BYTES, bulk_call, journal_name
from contracts.fake_pardot_oauth import AUTHORIZE_PATH, TOKEN_PATH, SalesforceOAuth
from contracts.fake_pardot_ops import Reply, custom_field_query, dispatch, parse_path_identifiers
from contracts.fake_pardot_state import (
    CONCURRENT_LIMIT,
    DAILY_LIMIT,
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    AnsweredError,
    FakePardot,
    JournalEntry,
    PardotError,
    ProspectRecord,
)

__all__ = [
    "AUTHORIZE_PATH",
    "BUSINESS_UNIT_HEADER",
    "TOKEN_PATH",
    "FakePardot",
    "JournalEntry",
    "PardotError",
    "ProspectRecord",
    "RunningFakePardot",
    "create_app",
    "running_fake_pardot",
    "serve_forever",
]

BUSINESS_UNIT_HEADER = "Pardot-Business-Unit-Id"
FAKE_KEY = web.AppKey("fake_pardot", FakePardot)
PROSPECT_PATH = "/api/prospect/version/{version:\\d+}/do/{operation}"
CUSTOM_FIELD_PATH = "/api/{object:customField}/version/{version:\\d+}/do/{operation}"
SERVER_HEADERS = {"Server": "PardotServer"}
SHUTDOWN_TIMEOUT = 0.5  # do not let a hung call hold up test teardown


class _BareFailure(Exception):
    """An injected answer that is not Pardot's, like a proxy's 503 page."""

    def __init__(self, status: int):
        self.status = status


@dataclass(frozen=True)
class RunningFakePardot:
    fake: FakePardot
    url: str


def create_app(fake: FakePardot) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[FAKE_KEY] = fake
    app.router.add_route("*", PROSPECT_PATH, _prospect_call)
    app.router.add_route("*", PROSPECT_PATH + "/{tail:.+}", _prospect_call)
    app.router.add_route("*", CUSTOM_FIELD_PATH, _prospect_call)
    for path in BULK_PATHS:
        app.router.add_route("*", path, _bulk_call)
    SalesforceOAuth(fake).add_routes(app)
    return app


@asynccontextmanager
async def running_fake_pardot(
    fake: FakePardot | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningFakePardot]:
    """Serve the fake on `host:port` (0 lets the OS pick) for the duration of the block."""
    fake = fake if fake is not None else FakePardot()
    runner = web.AppRunner(create_app(fake), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        yield RunningFakePardot(fake, f"http://{shown_host}:{bound_port}")
    finally:
        await runner.cleanup()


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    version: int = 4,
    business_unit_id: str = DEFAULT_BUSINESS_UNIT_ID,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    refresh_token: str = DEFAULT_REFRESH_TOKEN,
    custom_fields: Iterable[str] = (),
    bulk: Mapping[str, Any] | None = None,
) -> None:
    """Run a fake for demos until interrupted; prints where, never the secrets.

    `bulk` sets the Import/Export knobs of FakePardot by name (`import_rows_per_second`,
    `import_queue_delay`, `export_rows_per_second`, `export_queue_delay`, `import_enabled`,
    `export_user_time_zone`).
    """
    fake = FakePardot(
        **dict(bulk or {}),
        version=version,
        business_unit_ids={business_unit_id},
        custom_fields=set(custom_fields),
        oauth_clients={client_id: client_secret},
        refresh_tokens={refresh_token: client_id},
    )
    with suppress(KeyboardInterrupt):
        asyncio.run(_serve(fake, host, port))


async def _serve(fake: FakePardot, host: str, port: int) -> None:
    async with running_fake_pardot(fake, host, port) as server:
        units = ", ".join(sorted(fake.business_unit_ids))
        print(
            f"fake Pardot (API version {fake.version}, business unit {units}) on {server.url}",
            flush=True,
        )
        await asyncio.Event().wait()


async def _prospect_call(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_KEY]
    custom_fields = request.match_info.get("object") == "customField"
    params = await _params(request)

    async def work() -> web.StreamResponse:
        reply = _prospect_work(fake, request, params)
        return _reply_response(reply, params.get("format") == "json")

    counter = "customField" if custom_fields else request.match_info["operation"]
    return await _counted(fake, request, counter, request.match_info["operation"], params, work)


async def _bulk_call(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_KEY]
    name = journal_name(request)
    params = dict(request.query)
    return await _counted(fake, request, name, name, params, lambda: bulk_call(fake, request))


async def _counted(
    fake: FakePardot,
    request: web.Request,
    counter: str,
    operation: str,
    params: dict[str, str],
    work: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Every API call, prospect or bulk: counted, journaled, then answered."""
    fake.calls[counter] += 1
    if fake.journal is not None:
        bearer = request.headers.get("Authorization", "").partition(" ")[2].strip()
        entry = JournalEntry(operation, params, time.monotonic(), token=bearer)
        fake.journal.append(entry)
        try:
            return await _answer_call(fake, request, operation, params, work)
        finally:
            entry.answered = time.monotonic()
    return await _answer_call(fake, request, operation, params, work)


async def _answer_call(
    fake: FakePardot,
    request: web.Request,
    operation: str,
    params: Mapping[str, str],
    work: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    as_json = params.get("format") == "json"
    if fake.resets_pending > 0:
        fake.resets_pending -= 1
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never delivered: the connection is gone
    pending_here = [p for p in fake.foreign_pending if p.operation in (None, operation)]
    if pending_here:
        pending = pending_here[0]
        fake.foreign_pending.remove(pending)
        if pending.after_call:
            with suppress(PardotError, _BareFailure):
                await _handle(fake, request, work)
        answer = pending.answer
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={**answer.headers, "Content-Type": answer.content_type},
        )
    try:
        return await _handle(fake, request, work)
    except PardotError as err:
        fake.errors.append(AnsweredError(err.code, err.message))
        return _error_response(err, as_json)
    except _BareFailure as failure:
        return web.Response(
            status=failure.status,
            text=f"<html><body><h1>{failure.status}</h1></body></html>",
            content_type="text/html",
        )


async def _handle(
    fake: FakePardot, request: web.Request, work: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The checks in the order a client meets them: token, business unit, limits, the call."""
    fake.use_access_token(request.headers.get("Authorization"))
    unit = fake.check_business_unit(request.headers.get(BUSINESS_UNIT_HEADER))
    fake.in_flight[unit] += 1
    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight[unit])
    try:
        if fake.in_flight[unit] > fake.max_concurrent:
            raise PardotError(CONCURRENT_LIMIT)
        latency = fake.latency_of.get(request.match_info.get("operation", ""), fake.latency)
        delay = latency + (fake.hangs_pending.pop(0) if fake.hangs_pending else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if fake.daily_budget is not None and fake.budget_used[unit] >= fake.daily_budget:
            raise PardotError(DAILY_LIMIT)
        fake.budget_used[unit] += 1
        failure = fake.next_failure(request.path)
        if failure is not None:
            if failure.err_code is None:
                raise _BareFailure(failure.status)
            raise PardotError(failure.err_code, failure.message, status=failure.status)
        fake.advance_bulk()  # whatever imports and exports did meanwhile, this call sees
        return await work()
    finally:
        fake.in_flight[unit] -= 1


def _prospect_work(fake: FakePardot, request: web.Request, params: Mapping[str, str]) -> Reply:
    version = int(request.match_info["version"])
    if request.match_info.get("object") == "customField":
        return custom_field_query(fake, version, request.match_info["operation"])
    path_ids = parse_path_identifiers(request.match_info.get("tail", ""))
    operation = request.match_info["operation"]
    return dispatch(fake, version, operation, path_ids, params, request.method)


async def _params(request: web.Request) -> dict[str, str]:
    """Query string and form body merged, the body winning, as Pardot reads either."""
    params = {k: v for k, v in request.query.items()}
    if request.method == "POST":
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _reply_response(reply: Reply, as_json: bool) -> web.Response:
    if reply.status == 204:  # a delete: no envelope at all
        return web.Response(status=204, headers=SERVER_HEADERS)
    if as_json:
        body = {"@attributes": {"stat": reply.stat, "version": 1}, **reply.payload}
        return _json(body, reply.status)
    inner = "".join(
        _xml_errors(value) if key == "errors" else _xml_element(key, value)
        for key, value in reply.payload.items()
    )
    return _xml(f'<rsp stat="{reply.stat}" version="1.0">{inner}</rsp>', reply.status)


def _error_response(err: PardotError, as_json: bool) -> web.Response:
    if as_json:
        attributes = {"stat": "fail", "version": 1, "err_code": err.code}
        return _json({"@attributes": attributes, "err": err.message}, err.status)
    body = (
        f'<rsp stat="fail" version="1.0"><err code="{err.code}">{escape(err.message)}</err></rsp>'
    )
    return _xml(body, err.status)


def _json(body: dict[str, Any], status: int) -> web.Response:
    text = json.dumps(body, separators=(",", ":"))
    return web.Response(
        text=text, status=status, content_type="application/json", headers=SERVER_HEADERS
    )


def _xml(body: str, status: int) -> web.Response:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
    return web.Response(
        text=text, status=status, content_type="application/xml", headers=SERVER_HEADERS
    )


def _xml_element(tag: str, value: Any) -> str:
    """The XML Pardot's JSON is derived from: arrays are repeated elements."""
    if isinstance(value, list):
        return "".join(_xml_element(tag, item) for item in value)
    if isinstance(value, dict):
        inner = "".join(_xml_element(k, v) for k, v in value.items())
        return f"<{tag}>{inner}</{tag}>"
    if value is None:
        return f"<{tag}/>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _xml_errors(errors: Mapping[str, str]) -> str:
    items = "".join(
        f"<error identifier={quoteattr(key)}>{escape(msg)}</error>" for key, msg in errors.items()
    )
    return f"<errors>{items}</errors>"


if __name__ == "__main__":
    serve_forever()
