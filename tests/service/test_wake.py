"""An idle `serve` delivers a stored event at once: the put wakes its worker, the poll is only
the bound when no wake reaches it (docs/operating.md, DESTINATION_POLL_SECONDS)."""

from __future__ import annotations

import asyncio

import httpx

from tests.service.conftest import WRITE_KEY, Stack

AUTH = (WRITE_KEY, "")
# Far longer than the test waits: a delivery within it was woken, not polled.
POLL_SECONDS = "30"


def identify(n: int) -> dict[str, object]:
    return {
        "type": "identify",
        "messageId": f"wake-{n}",
        "userId": f"wake-{n}",
        "traits": {"email": f"wake{n}@example.com", "first_name": f"W{n}"},
    }


async def _idle_serve(stack: Stack, **settings: str) -> str:
    service = await stack.service(DESTINATION_POLL_SECONDS=POLL_SECONDS, **settings)
    # The worker's first round (the setup check) is over: it is in its idle wait.
    await asyncio.sleep(2)
    return service.url


async def test_a_put_wakes_the_idle_worker_long_before_its_poll(v4_stack: Stack) -> None:
    url = await _idle_serve(v4_stack)
    async with httpx.AsyncClient() as client:
        stored = await client.post(f"{url}/v1/identify", json=identify(1), auth=AUTH)
    assert stored.is_success
    await v4_stack.wait_until(url, lambda count: count("delivered") == 1, seconds=5)
    assert [r.email for r in v4_stack.fake.records.values()] == ["wake1@example.com"]


async def test_without_the_wake_the_idle_worker_waits_for_its_poll(v4_stack: Stack) -> None:
    """The other half of the proof: with DESTINATION_WAKE_ON_PUT=false the same event waits."""
    url = await _idle_serve(v4_stack, DESTINATION_WAKE_ON_PUT="false")
    async with httpx.AsyncClient() as client:
        stored = await client.post(f"{url}/v1/identify", json=identify(1), auth=AUTH)
    assert stored.is_success
    await asyncio.sleep(3)
    assert not v4_stack.fake.records
