"""Bad actors at the door: each attack is refused and stores nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from adapters.memory.queue import InMemoryEventQueue
from entrypoints.http import ingest
from entrypoints.http.app import SERVER_OPTIONS, create_app, runner
from entrypoints.http.ingest import WriteKeys
from tests.service.door import AUTH, SECRET, WRITE_KEY, Door, identify, open_door


def sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with open_door() as opened:
        yield opened


# ---- webhook signature reuse ---------------------------------------------------------

CAPTURED = json.dumps(identify(1)).encode()  # one signed event someone saw in transit
APPENDED = b"[" + CAPTURED + b"," + json.dumps(identify(666)).encode() + b"]"


async def test_an_array_is_refused_while_batching_is_off(door: Door) -> None:
    answer = await door.client.post(
        "/webhook", content=APPENDED, headers={"X-Signature": sign(CAPTURED)}
    )
    assert answer.status_code == 400 and answer.json()["code"] == "batching_off"
    assert "DESTINATION_WEBHOOK_BATCHING" in answer.json()["message"]
    assert await door.stored() == 0


@pytest.mark.parametrize(
    "authorization", [None, basic("wrong"), "Bearer wrong", "Basic !!!", "Digest x"]
)
async def test_with_batching_on_an_array_needs_a_write_key_in_the_header(
    authorization: str | None,
) -> None:
    async with open_door(webhook_batching=True) as door:
        headers = {"X-Signature": sign(CAPTURED)}
        if authorization:
            headers["Authorization"] = authorization
        answer = await door.client.post("/webhook", content=APPENDED, headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
        assert await door.stored() == 0


@pytest.mark.parametrize("authorization", [basic(WRITE_KEY), f"Bearer {WRITE_KEY}"])
async def test_with_batching_on_a_keyed_and_signed_array_is_stored(authorization: str) -> None:
    async with open_door(webhook_batching=True) as door:
        headers = {"X-Signature": sign(CAPTURED), "Authorization": authorization}
        answer = await door.client.post("/webhook", content=APPENDED, headers=headers)
        assert answer.status_code == 200
        assert await door.stored() == 2


def test_batching_without_a_write_key_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="DESTINATION_WRITE_KEY"):
        create_app(InMemoryEventQueue(), webhook_batching=True, shared_secret=SECRET)


# ---- cross-site posts ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/batch", "/webhook"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
async def test_only_json_is_read(door: Door, path: str, content_type: str) -> None:
    event = identify(1)
    body = json.dumps({"batch": [event]} if path == "/v1/batch" else event).encode()
    headers = {"X-Signature": sign(body), "Content-Type": content_type}
    answer = await door.client.post(path, content=body, headers=headers, auth=AUTH)
    assert answer.status_code == 415 and answer.json()["code"] == "unsupported_media_type"
    assert await door.stored() == 0


async def test_json_with_a_charset_is_json(door: Door) -> None:
    answer = await door.client.post(
        "/v1/identify",
        content=json.dumps(identify(1)).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        auth=AUTH,
    )
    assert answer.status_code == 200


# ---- cheap denial of service ---------------------------------------------------------


@asynccontextmanager
async def serving(app: web.Application, **options: Any) -> AsyncIterator[tuple[str, int]]:
    options.setdefault("lingering_time", 0.1)  # teardown need not wait for unsent bodies
    server = runner(app, **options)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = server.addresses[0][:2]
        yield host, port
    finally:
        await server.cleanup()


def head(path: str, length: int, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def status_of(reader: asyncio.StreamReader, seconds: float = 3.0) -> int:
    line = await asyncio.wait_for(reader.readline(), seconds)
    return int(line.split()[1])


@pytest.mark.parametrize("authorization", [basic("wrong"), "Bearer wrong", "Basic !!!"])
async def test_a_wrong_authorization_is_refused_before_the_body_is_read(
    authorization: str,
) -> None:
    queue = InMemoryEventQueue()
    async with serving(create_app(queue, write_keys=(WRITE_KEY,))) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        # 350 KB announced, none sent: an answer can only come before reading the body.
        writer.write(
            head(
                "/v1/batch",
                350_000,
                **{"Content-Type": "application/json", "Authorization": authorization},
            )
        )
        await writer.drain()
        assert await status_of(reader) == 401
        writer.close()
    assert sum((await queue.counts()).values()) == 0


async def test_concurrent_bodies_are_capped_by_bytes_with_503_and_retry_after() -> None:
    queue = InMemoryEventQueue()
    app = create_app(queue, write_keys=(WRITE_KEY,), max_ingest_bytes=100_000)
    async with serving(app) as (host, port):
        body = json.dumps(identify(1)).encode()
        _, hog = await asyncio.open_connection(host, port)
        # A slow sender holding 90 KB of the budget while it trickles its body.
        hog.write(
            head(
                "/v1/identify",
                90_000,
                **{"Content-Type": "application/json", "Authorization": basic(WRITE_KEY)},
            )
        )
        hog.write(body[:10])
        await hog.drain()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            head(
                "/v1/identify",
                20_000,
                **{"Content-Type": "application/json", "Authorization": basic(WRITE_KEY)},
            )
        )
        await writer.drain()
        assert await status_of(reader) == 503
        answer = (await asyncio.wait_for(reader.read(2000), 3)).decode()
        assert "Retry-After: 1" in answer and '"busy"' in answer
        writer.close()
        hog.close()
        await asyncio.sleep(0.1)  # the hog's connection is gone: its budget comes back
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            head(
                "/v1/identify",
                len(body),
                **{"Content-Type": "application/json", "Authorization": basic(WRITE_KEY)},
            )
            + body
        )
        await writer.drain()
        assert await status_of(reader) == 200
        writer.close()
    assert sum((await queue.counts()).values()) == 1


def test_the_budget_always_lets_one_request_in() -> None:
    budget = ingest.ByteBudget(10)
    with budget.hold(ingest.MAX_REQUEST_BYTES):
        with pytest.raises(ingest.Refused) as caught, budget.hold(1):
            pass
        assert caught.value.status == 503 and caught.value.retry_after == 1
    assert budget.in_use == 0


async def test_a_slow_body_times_out_with_408() -> None:
    queue = InMemoryEventQueue()
    app = create_app(queue, write_keys=(WRITE_KEY,), body_timeout=0.3)
    async with serving(app) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            head(
                "/v1/identify",
                1000,
                **{"Content-Type": "application/json", "Authorization": basic(WRITE_KEY)},
            )
        )
        writer.write(b'{"type":')
        await writer.drain()
        started = time.monotonic()
        assert await status_of(reader) == 408
        assert time.monotonic() - started < 2
        writer.close()
    assert sum((await queue.counts()).values()) == 0


async def test_slow_headers_lose_the_connection() -> None:
    app = create_app(InMemoryEventQueue(), write_keys=(WRITE_KEY,))
    async with serving(app, keepalive_timeout=0.3) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        started = time.monotonic()
        for chunk in (b"POST /v1/identify HTTP/1.1\r\n", b"Host: x\r\n", b"X-Slow: 1\r\n"):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.15)  # each piece in time, the whole too slow
        assert await asyncio.wait_for(reader.read(), 3) == b""  # closed without an answer
        assert time.monotonic() - started < 2
        writer.close()


def test_the_service_bounds_header_time_and_lingering() -> None:
    assert SERVER_OPTIONS["keepalive_timeout"] == ingest.HEADER_TIMEOUT_SECONDS <= 15
    assert SERVER_OPTIONS["lingering_time"] == ingest.LINGERING_SECONDS <= 5


# ---- malformed numbers and nesting ---------------------------------------------------

MALFORMED = {
    "1e999": b'{"type":"identify","userId":"u","traits":{"n":1e999}}',
    "5,000 digits": b'{"type":"identify","userId":"u","traits":{"n":' + b"7" * 5000 + b"}}",
    "100k [": b"[" * 100_000 + b"]" * 100_000,
    "100k [ in an object": b'{"type":"identify","userId":"u","traits":'
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    "invalid UTF-8": b'{"type":"identify","userId":"u\xff\xfe","traits":{}}',
    "truncated UTF-8": b'{"type":"identify","userId":"\xe2\x82","traits":{}}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("path", ["/v1/identify", "/webhook"])
async def test_malformed_numbers_nesting_and_bytes_are_400_never_503(
    door: Door, path: str, body: bytes
) -> None:
    headers = {"X-Signature": sign(body)}  # correctly signed: the body itself is the problem
    answer = await door.client.post(path, content=body, headers=headers, auth=AUTH)
    assert answer.status_code == 400, answer.text
    assert await door.stored() == 0


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_bodies_in_a_keyed_webhook_batch_are_400(body: bytes) -> None:
    array = b"[" + body + b"]"
    async with open_door(webhook_batching=True) as door:
        headers = {"X-Signature": sign(body), "Authorization": basic(WRITE_KEY)}
        answer = await door.client.post("/webhook", content=array, headers=headers)
        assert answer.status_code == 400, answer.text
        assert await door.stored() == 0


# ---- messageId de-duplication per sender ---------------------------------------------


async def test_one_sender_cannot_drop_anothers_events_by_reusing_their_message_id(
    door: Door,
) -> None:
    mine = identify(1)
    assert (await door.client.post("/v1/identify", json=mine, auth=AUTH)).status_code == 200
    theirs = {**identify(1), "writeKey": "second-key"}  # same messageId, another write key
    assert (await door.client.post("/v1/identify", json=theirs)).status_code == 200
    assert await door.stored() == 2


async def test_one_sender_repeating_a_message_id_is_stored_once_however_it_authenticates(
    door: Door,
) -> None:
    event = identify(1)
    await door.client.post("/v1/identify", json=event, auth=AUTH)
    await door.client.post("/v1/batch", json={"batch": [event], "writeKey": WRITE_KEY})
    await door.client.post(
        "/v1/identify", json=event, headers={"Authorization": f"Bearer {WRITE_KEY}"}
    )
    body = json.dumps(event).encode()
    await door.client.post("/webhook", content=body, headers={"X-Signature": sign(body)}, auth=AUTH)
    assert await door.stored() == 1


async def test_signature_only_webhooks_share_one_scope_apart_from_keyed_senders(
    door: Door,
) -> None:
    body = json.dumps(identify(1)).encode()
    for _ in range(2):
        await door.client.post("/webhook", content=body, headers={"X-Signature": sign(body)})
    assert await door.stored() == 1
    await door.client.post("/v1/identify", json=identify(1), auth=AUTH)
    assert await door.stored() == 2


def test_write_keys_are_compared_as_equal_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        lengths.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(ingest.hmac, "compare_digest", spy)
    keys = WriteKeys(["short", "a-much-longer-write-key-" * 4])
    assert keys.scope_of(b"x") is None
    assert keys.scope_of(b"short") is not None
    assert keys.scope_of(b"y" * 500) is None
    assert lengths and set(lengths) == {(32, 32)}
    assert "short" not in repr(keys)
