"""Several processes on one queue file: crashes, slow Pardot, and Pardot's shared limits."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import httpx

from tests.service.conftest import WRITE_KEY, Stack
from tests.service.test_reliability import identify

AUTH = (WRITE_KEY, "")


def attempts(stack: Stack) -> dict[str, int]:
    """How many times each event was leased, read from the queue file itself."""
    with sqlite3.connect(stack.tmp / "queue.db") as conn:
        return dict(conn.execute("SELECT message_id, attempts FROM events").fetchall())


async def post_batch(url: str, events: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/v1/batch", json={"batch": events}, auth=AUTH)
        assert answer.status_code == 200, answer.text


async def test_after_kill_9_with_leases_held_a_restart_resumes_within_15_seconds(
    v4_stack: Stack,
) -> None:
    fake = v4_stack.fake
    fake.latency = 2.0  # the first process dies with its calls in flight
    first = await v4_stack.service()  # the default lease
    await post_batch(first.url, [identify(n, first_name=f"P{n}") for n in range(10)])
    for _ in range(100):
        if sum(fake.in_flight.values()):
            break
        await asyncio.sleep(0.05)
    assert sum(fake.in_flight.values()), "no delivery started"
    await first.kill9()
    fake.latency = 0.0
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    second = await v4_stack.service()
    await v4_stack.wait_until(second.url, lambda c: c("delivered") == 10, seconds=15)
    took = loop.time() - restarted
    assert took < 15, f"deliveries resumed only after {took:.1f} s"
    emails = sorted(p["email"] for p in fake.all_prospects())
    assert emails == sorted(f"person{n}@x.io" for n in range(10))  # no prospect twice


async def test_a_batch_outliving_its_lease_is_not_delivered_again_by_a_second_process(
    v4_stack: Stack,
) -> None:
    """Slow Pardot (1.5 s a call): the index refresh, the batch create and learning the new ids
    outlast the 3 s lease. The heartbeat keeps the lease, so the other process never takes it."""
    fake = v4_stack.fake
    fake.latency = 1.5
    serve = await v4_stack.service(DESTINATION_LEASE_SECONDS="3")
    await v4_stack.service("worker", DESTINATION_LEASE_SECONDS="3")
    await post_batch(serve.url, [identify(n) for n in range(15)])
    await v4_stack.wait_until(serve.url, lambda c: c("delivered") == 15, seconds=60)
    assert set(attempts(v4_stack).values()) == {1}  # leased once, by one process
    # Issue 11 creates new people in batches: one batchCreate for the 15, made once.
    assert fake.calls["batchCreate"] == 1 and fake.calls["create"] == 0
    assert len(fake.all_prospects()) == 15


async def test_serve_and_worker_on_one_queue_never_put_more_than_5_calls_in_flight(
    v4_stack: Stack,
) -> None:
    fake = v4_stack.fake
    fake.latency = 0.3
    serve = await v4_stack.service()
    worker = await v4_stack.service("worker")
    for start in range(0, 60, 10):  # batches arrive while the other process is busy
        await post_batch(serve.url, [identify(n) for n in range(start, start + 10)])
        await asyncio.sleep(0.3)
    await v4_stack.wait_until(serve.url, lambda c: c("delivered") == 60, seconds=60)
    assert fake.max_in_flight <= 5, f"{fake.max_in_flight} calls in flight at Pardot"
    assert 66 not in [e.code for e in fake.errors]
    assert len(fake.all_prospects()) == 60
    for process in (serve, worker):  # both delivered a share
        assert any("event settled" in line for line in process.log), process.log[-5:]
