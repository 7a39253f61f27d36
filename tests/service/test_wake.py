"""An idle `serve` delivers a stored event at once: the put wakes its worker, the poll is only
the bound when no wake reaches it (docs/operating.md, DESTINATION_POLL_SECONDS)."""

from __future__ import annotations

import asyncio

import httpx
import psycopg

from adapters.postgres.notifications import channel
from adapters.postgres.stores import PostgresStores
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


async def _put(postgres_url: str, n: int) -> str:
    """Store one event from this process, as another node's door would; returns the channel."""
    async with PostgresStores.opened(postgres_url, pool_size=2) as stores:
        assert await stores.queue(max_pending=None).put([identify(n)]) == 1
        return channel(stores.database.namespace)


async def _delivered(stack: Stack, email: str, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while email not in {r.email for r in stack.fake.records.values()}:
        assert asyncio.get_running_loop().time() < deadline, f"{email} was not delivered in time"
        await asyncio.sleep(0.05)


async def test_a_put_on_postgres_wakes_a_separate_idle_worker_and_after_a_lost_connection(
    v4_stack: Stack, postgres_url: str
) -> None:
    """`worker` alone, polling every 30 s: another process's put reaches it by NOTIFY, and a
    listening connection the server dropped is opened again (what was stored meanwhile too)."""
    await v4_stack.service(
        "worker", DESTINATION_QUEUE_URL=postgres_url, DESTINATION_POLL_SECONDS=POLL_SECONDS
    )
    await asyncio.sleep(2)  # past its first round, in its idle wait
    name = await _put(postgres_url, 1)
    await _delivered(v4_stack, "wake1@example.com")

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        dropped = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{name}"',),
        ).fetchall()
    assert dropped == [(True,)]
    await _put(postgres_url, 2)  # while it listens nowhere, or just after
    await _delivered(v4_stack, "wake2@example.com", seconds=8)
