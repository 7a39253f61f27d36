"""Nothing acknowledged is lost: crashes, token expiry, Pardot failures, bad requests."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx

from adapters.salesforce.token_file import TokenStore
from contracts.fake_pardot_state import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from tests.service.conftest import SHARED_SECRET, WRITE_KEY, Stack

AUTH = (WRITE_KEY, "")


def identify(n: int, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify", "messageId": f"m-{n}", "userId": f"user-{n}",
        "timestamp": f"2026-11-27T09:{n % 60:02d}:00Z",
        "traits": {"email": f"person{n}@x.io", **traits},
    }  # fmt: skip


async def post_each(url: str, events: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient() as client:
        for event in events:
            answer = await client.post(f"{url}/v1/identify", json=event, auth=AUTH)
            assert answer.status_code == 200, answer.text


async def test_kill_9_between_accept_and_delivery_loses_nothing_and_doubles_nothing(
    v4_stack: Stack,
) -> None:
    fake = v4_stack.fake
    fake.latency = 2.0  # the first service is killed while its deliveries are in flight
    first = await v4_stack.service(DESTINATION_LEASE_SECONDS="1")
    events = [identify(n, first_name=f"P{n}") for n in range(30)]
    await post_each(first.url, events)
    await first.kill9()
    fake.latency = 0.0
    second = await v4_stack.service(DESTINATION_LEASE_SECONDS="1")
    await v4_stack.wait_until(second.url, lambda c: c("delivered") == 30, seconds=30)
    emails = sorted(p["email"] for p in fake.all_prospects())
    assert emails == sorted(f"person{n}@x.io" for n in range(30))  # each exactly once
    assert await second.terminate() == 0


async def test_sigterm_finishes_gracefully_and_a_restart_delivers_the_rest(v3_stack: Stack) -> None:
    service = await v3_stack.service()
    await post_each(service.url, [identify(n) for n in range(5)])
    assert await service.terminate() == 0
    assert any("stopping" in line for line in service.log)
    again = await v3_stack.service()
    await v3_stack.wait_until(again.url, lambda c: c("delivered") == 5)
    assert len(v3_stack.fake.all_prospects()) == 5


async def test_token_expiry_mid_stream_is_invisible(v3_stack: Stack) -> None:
    v3_stack.fake.token_lifetime_calls = 2
    service = await v3_stack.service()
    for n in range(12):
        await post_each(service.url, [identify(n)])
    await v3_stack.wait_until(service.url, lambda c: c("delivered") == 12)
    assert len(v3_stack.fake.all_prospects()) == 12
    assert v3_stack.fake.token_requests >= 2
    assert 184 in [e.code for e in v3_stack.fake.errors]
    # No token or secret in the service's log or its /metrics, whatever happened.
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{service.url}/metrics")).text
    exposed = metrics + "\n".join(service.log)
    secrets = [*v3_stack.fake.access_tokens, DEFAULT_REFRESH_TOKEN, DEFAULT_CLIENT_SECRET,
               WRITE_KEY, SHARED_SECRET]  # fmt: skip
    assert len(secrets) > 5 and not [s for s in secrets if s in exposed]


async def test_pardot_5xx_66_and_183_are_retried_until_delivered(v3_stack: Stack) -> None:
    fake = v3_stack.fake
    fake.fail_next(2, status=503, err_code=None)
    fake.fail_next(1, err_code=66)
    fake.fail_next(1, err_code=183)
    fake.fail_next(6, status=500, err_code=None)  # more than one call's retry budget
    service = await v3_stack.service()
    await post_each(service.url, [identify(n) for n in range(3)])
    await v3_stack.wait_until(service.url, lambda c: c("delivered") == 3, seconds=30)
    assert len(fake.all_prospects()) == 3


async def test_a_permanent_pardot_error_rejects_only_that_event(v3_stack: Stack) -> None:
    service = await v3_stack.service()
    await post_each(service.url, [identify(1), identify(2, email="not-an-email"), identify(3)])
    counts = await v3_stack.wait_until(service.url, lambda c: c("delivered") + c("rejected") == 3)
    assert counts["rejected"] == 1 and len(v3_stack.fake.all_prospects()) == 2


async def test_a_revoked_refresh_token_pauses_deliveries_and_keeps_events(v3_stack: Stack) -> None:
    v3_stack.fake.revoke_refresh_token(DEFAULT_REFRESH_TOKEN)
    service = await v3_stack.service()
    await post_each(service.url, [identify(n) for n in range(3)])
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            ready = await client.get(f"{service.url}/readyz")
            if ready.status_code == 503:
                break
            await asyncio.sleep(0.05)
    assert ready.status_code == 503
    assert "pardot-destination connect" in ready.json()["reason"]
    counts = await v3_stack.wait_until(service.url, lambda c: c("retry") == 3)
    assert counts.get("dead", 0) == 0 and v3_stack.fake.all_prospects() == []


async def test_deliveries_resume_without_restart_once_connect_saved_a_new_token(
    v3_stack: Stack,
) -> None:
    fake = v3_stack.fake
    fake.revoke_refresh_token(DEFAULT_REFRESH_TOKEN)
    token_file = v3_stack.tmp / "tokens.json"
    service = await v3_stack.service(DESTINATION_CONFIG_RETRY_SECONDS="0.3")
    await post_each(service.url, [identify(n) for n in range(4)])
    await v3_stack.wait_until(service.url, lambda c: c("retry") == 4)
    # What `pardot-destination connect` does once the operator signed in again:
    TokenStore(token_file).save_refresh_token(
        fake.issue_refresh_token(), login_url=v3_stack.pardot_url, client_id=DEFAULT_CLIENT_ID
    )
    await v3_stack.wait_until(service.url, lambda c: c("delivered") == 4, seconds=30)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{service.url}/readyz")).status_code == 200
    assert len(fake.all_prospects()) == 4


async def test_the_daily_limit_pauses_every_delivery(v3_stack: Stack) -> None:
    v3_stack.fake.daily_budget = 1
    service = await v3_stack.service()
    await post_each(service.url, [identify(1)])
    await v3_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    await post_each(service.url, [identify(2)])
    counts = await v3_stack.wait_until(service.url, lambda c: c("retry") == 1)
    assert counts.get("dead", 0) == 0
    assert any("daily API limit" in line for line in service.log)


async def test_bad_requests_get_clear_4xx_and_disturb_nothing(v3_stack: Stack) -> None:
    service = await v3_stack.service()
    url = service.url
    async with httpx.AsyncClient(headers={"Content-Type": "application/json"}) as client:
        cases = [
            (
                await client.post(
                    f"{url}/v1/identify",
                    content=json.dumps(identify(9)).encode(),
                    auth=AUTH,
                    headers={"Content-Type": "text/plain"},  # what a cross-site form can send
                ),
                415,
                "unsupported_media_type",
            ),
            (
                await client.post(f"{url}/v1/identify", content=b"{oops", auth=AUTH),
                400,
                "invalid_json",
            ),
            (
                await client.post(f"{url}/v1/identify", json=identify(1), auth=("nope", "")),
                401,
                "unauthorized",
            ),
            (
                await client.post(
                    f"{url}/v1/batch",
                    json={"batch": [identify(n, blob="x" * 30_000) for n in range(20)]},
                    auth=AUTH,
                ),
                413,
                "too_large",
            ),
            (
                await client.post(
                    f"{url}/webhook",
                    content=json.dumps(identify(2)).encode(),
                    headers={"X-Signature": "00" * 20},
                ),
                401,
                "unauthorized",
            ),
            (
                await client.post(
                    f"{url}/v1/identify", json={"type": "identify", "traits": {}}, auth=AUTH
                ),
                400,
                "invalid_event",
            ),
        ]
        for answer, status, code in cases:
            assert (answer.status_code, answer.json()["code"]) == (status, code)
            assert answer.json()["message"]
        body = json.dumps(identify(3)).encode()
        signature = hmac.new(SHARED_SECRET.encode(), body, hashlib.sha1).hexdigest()
        good = await client.post(f"{url}/webhook", content=body, headers={"X-Signature": signature})
        assert good.status_code == 200
    counts = await v3_stack.wait_until(url, lambda c: c("delivered") == 1)
    assert sum(counts.values()) == 1
    assert [p["email"] for p in v3_stack.fake.all_prospects()] == ["person3@x.io"]
