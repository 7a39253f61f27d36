"""The door: what each kind of request gets back, and that bad ones disturb nothing."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from adapters.memory.queue import InMemoryEventQueue
from entrypoints.http.app import create_app
from tests.service.door import AUTH, SECRET, WRITE_KEY, Door, identify, open_door


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with open_door() as opened:
        yield opened


async def test_identify_is_stored_before_200(door: Door) -> None:
    answer = await door.client.post("/v1/identify", json=identify(), auth=AUTH)
    assert answer.status_code == 200 and answer.json() == {"success": True}
    assert await door.stored() == 1


async def test_type_comes_from_the_path_and_write_key_may_be_in_the_body(door: Door) -> None:
    body = {"userId": "u", "traits": {"email": "a@x.io"}, "writeKey": "second-key"}
    assert (await door.client.post("/v1/identify", json=body)).status_code == 200
    [event] = await door.queue.lease(10, 60)
    assert event.payload["type"] == "identify" and "writeKey" not in event.payload
    assert "receivedAt" in event.payload


@pytest.mark.parametrize(
    ("auth", "headers", "message"),
    [
        (None, {}, "missing write key"),
        (("wrong", ""), {}, "unknown write key"),
        (None, {"Authorization": "Basic !!!"}, "malformed Basic"),
    ],
)
async def test_wrong_auth_is_401_and_stores_nothing(
    door: Door, auth: Any, headers: dict[str, str], message: str
) -> None:
    answer = await door.client.post("/v1/identify", json=identify(), auth=auth, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized" and message in answer.json()["message"]
    assert await door.stored() == 0


async def test_malformed_json_is_400(door: Door) -> None:
    answer = await door.client.post("/v1/identify", content=b'{"type": "identify",', auth=AUTH)
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_json"
    assert await door.stored() == 0


async def test_invalid_event_is_400_naming_the_field(door: Door) -> None:
    answer = await door.client.post(
        "/v1/identify", json={"type": "identify", "traits": {}}, auth=AUTH
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "invalid_event" and "userId or anonymousId" in body["message"]


async def test_a_batch_stores_the_valid_and_reports_the_invalid(door: Door) -> None:
    batch = {
        "batch": [
            identify(1),
            {"type": "identify", "userId": "u", "timestamp": "noon"},
            identify(3),
        ]
    }
    answer = await door.client.post("/v1/batch", json=batch, auth=AUTH)
    assert answer.status_code == 400
    body = answer.json()
    assert body["accepted"] == 2
    assert body["errors"] == [
        {"index": 1, "messageId": None, "reason": body["errors"][0]["reason"]}
    ]
    assert "timestamp" in body["errors"][0]["reason"]
    assert await door.stored() == 2


async def test_batch_context_and_integrations_apply_to_every_event(door: Door) -> None:
    batch = {
        "batch": [identify(1), identify(2, integrations={"Pardot": True})],
        "integrations": {"All": False, "Pardot": {"id": 5}},
        "context": {"library": {"name": "x"}},
    }
    assert (await door.client.post("/v1/batch", json=batch, auth=AUTH)).status_code == 200
    first, second = sorted(await door.queue.lease(10, 60), key=lambda e: e.payload["messageId"])
    assert first.payload["integrations"] == {"All": False, "Pardot": {"id": 5}}
    assert second.payload["integrations"] == {"All": False, "Pardot": True}
    assert first.payload["context"]["library"] == {"name": "x"}


async def test_other_event_types_are_accepted_and_counted_not_stored(door: Door) -> None:
    for kind in ("track", "page", "screen", "group", "alias"):
        answer = await door.client.post(
            f"/v1/{kind}", json={"userId": "u", "event": "x"}, auth=AUTH
        )
        assert answer.status_code == 200
    assert await door.stored() == 0
    metrics = (await door.client.get("/metrics")).text
    assert 'pardot_destination_events_received_total{type="track"} 1.0' in metrics


async def test_gzip_bodies_are_read(door: Door) -> None:
    body = gzip.compress(json.dumps({"batch": [identify(1), identify(2)]}).encode())
    answer = await door.client.post(
        "/v1/batch",
        content=body,
        auth=AUTH,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200
    assert await door.stored() == 2


async def test_oversized_request_is_413(door: Door) -> None:
    events = [identify(i, traits={"email": f"u{i}@x.io", "blob": "x" * 20_000}) for i in range(30)]
    answer = await door.client.post("/v1/batch", json={"batch": events}, auth=AUTH)
    assert answer.status_code == 413 and answer.json()["code"] == "too_large"
    assert await door.stored() == 0


async def test_oversized_gzip_is_judged_by_its_decompressed_size(door: Door) -> None:
    events = [identify(i, traits={"email": f"u{i}@x.io", "blob": "x" * 30_000}) for i in range(20)]
    body = gzip.compress(json.dumps({"batch": events}).encode())
    assert len(body) < 50_000
    answer = await door.client.post(
        "/v1/batch", content=body, auth=AUTH, headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 413
    assert await door.stored() == 0


async def test_an_event_over_32_kb_is_refused_alone(door: Door) -> None:
    big = identify(1, traits={"email": "a@x.io", "blob": "x" * 40_000})
    answer = await door.client.post("/v1/batch", json={"batch": [big, identify(2)]}, auth=AUTH)
    assert answer.status_code == 400 and "32 KB" in answer.json()["errors"][0]["reason"]
    assert await door.stored() == 1


def sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()


async def test_webhook_with_a_valid_signature_is_stored(door: Door) -> None:
    body = json.dumps(identify()).encode()
    answer = await door.client.post("/webhook", content=body, headers={"X-Signature": sign(body)})
    assert answer.status_code == 200
    assert await door.stored() == 1


@pytest.mark.parametrize("signature", [None, "0" * 40, "not-hex"])
async def test_webhook_with_a_wrong_or_missing_signature_is_401(
    door: Door, signature: str | None
) -> None:
    body = json.dumps(identify()).encode()
    headers = {"X-Signature": signature} if signature else {}
    answer = await door.client.post("/webhook", content=body, headers=headers)
    assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"
    assert await door.stored() == 0


async def test_webhook_signature_is_checked_before_parsing(door: Door) -> None:
    answer = await door.client.post(
        "/webhook", content=b"{not json", headers={"X-Signature": "0" * 40}
    )
    assert answer.status_code == 401


async def test_webhooks_actions_batch_signs_the_first_element_as_sent() -> None:
    # JavaScript's serialisation (1e21, no spaces) differs from Python's: HMAC the raw bytes.
    first = b'{"type":"identify","messageId":"m1","userId":"u1","traits":{"email":"u1@x.io","score":1e21}}'
    body = (
        b"["
        + first
        + b', {"type":"identify","messageId":"m2","userId":"u2","traits":{"email":"u2@x.io"}}]'
    )
    async with open_door(webhook_batching=True) as door:
        answer = await door.client.post(
            "/webhook", content=body, headers={"X-Signature": sign(first)}, auth=AUTH
        )
        assert answer.status_code == 200
        assert await door.stored() == 2
        bad = await door.client.post(
            "/webhook", content=body, headers={"X-Signature": sign(body)}, auth=AUTH
        )
        assert bad.status_code == 401


async def test_a_full_queue_answers_503_with_retry_after() -> None:
    queue = InMemoryEventQueue(max_pending=1)
    app = create_app(queue, write_keys=(WRITE_KEY,))
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        client = httpx.AsyncClient(base_url=str(server.make_url("")))
        async with client:
            first = await client.post("/v1/identify", json=identify(1), auth=AUTH)
            assert first.status_code == 200
            full = await client.post("/v1/identify", json=identify(2), auth=AUTH)
            assert full.status_code == 503 and full.headers["Retry-After"] == "30"
            assert full.json()["code"] == "queue_full"


async def test_health_readiness_and_metrics_never_show_secrets(door: Door) -> None:
    assert (await door.client.get("/healthz")).json() == {"status": "ok"}
    assert (await door.client.get("/readyz")).status_code == 200
    await door.client.post("/v1/identify", json=identify(), auth=("wrong", ""))
    metrics = (await door.client.get("/metrics")).text
    assert 'pardot_destination_requests_refused_total{reason="unauthorized"} 1.0' in metrics
    assert WRITE_KEY not in metrics and SECRET not in metrics


class BrokenQueue(InMemoryEventQueue):
    async def put(self, payloads: Any, *, scope: str = "") -> int:
        raise sqlite3.OperationalError("disk I/O error")


async def test_a_storage_failure_is_503_so_the_sender_retries() -> None:
    app = create_app(BrokenQueue(), write_keys=(WRITE_KEY,))
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        client = httpx.AsyncClient(base_url=str(server.make_url("")))
        async with client:
            answer = await client.post("/v1/identify", json=identify(1), auth=AUTH)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json() == {
        "success": False,
        "code": "unavailable",
        "message": "the events could not be stored: retry later",
    }


async def test_a_single_event_over_32_kb_is_400(door: Door) -> None:
    big = identify(1, traits={"email": "a@x.io", "blob": "x" * 33_000})
    answer = await door.client.post("/v1/identify", json=big, auth=AUTH)
    assert answer.status_code == 400 and "over 32 KB" in answer.json()["message"]
    assert await door.stored() == 0


async def test_an_event_just_under_32_kb_is_stored(door: Door) -> None:
    event = identify(1, traits={"email": "a@x.io", "blob": "x" * 32_000})
    answer = await door.client.post("/v1/identify", json=event, auth=AUTH)
    assert answer.status_code == 200
    assert await door.stored() == 1
