"""PostgreSQL goes away for a minute while events flow to two `serve` nodes, then comes back.

A proxy of the test's own stands between the nodes and PostgreSQL and resets every connection,
old and new, for `OUTAGE_SECONDS` (60 s, as a failover or a restart takes; set
PARDOT_FAULTS_OUTAGE_SECONDS to try another). Senders keep posting as Segment does, sending an
event again after a 503 until it is acknowledged. What must hold: the door answers 503 with
Retry-After while it cannot store, never 200 for an unstored event; the pools replace their
connections without a restart; no event is settled twice (a trigger of the test's own records
each final settlement); deliveries resume within 15 s of the proxy reopening; and Pardot holds
one prospect per person with the last values sent.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from tests.faults.flow import Flow, log_settlements, rows
from tests.faults.proxy import proxies
from tests.service.conftest import Stack

# Time compressed with the nodes' own setting: a request waits this long for a connection
# (DESTINATION_QUEUE_WAIT_SECONDS, 30 s by default) before the door gives up on the store, and
# the outage lasts three such waits (a minute is two of the default's), so every wait in the
# nodes runs out within it. PARDOT_FAULTS_STORE_WAIT_SECONDS=30 PARDOT_FAULTS_OUTAGE_SECONDS=60
# runs it in real time.
STORE_WAIT = float(os.environ.get("PARDOT_FAULTS_STORE_WAIT_SECONDS", "3"))
OUTAGE_SECONDS = float(os.environ.get("PARDOT_FAULTS_OUTAGE_SECONDS", str(3 * STORE_WAIT)))
PEOPLE = 8
LEASED = "SELECT id FROM events WHERE state = 'leased'"


@pytest.mark.slow
@pytest.mark.timeout(OUTAGE_SECONDS + 150)
async def test_postgres_gone_for_a_minute_loses_nothing_and_doubles_nothing(
    v4_stack: Stack, postgres_url: str
) -> None:
    fake = v4_stack.fake
    fake.latency = 0.2  # the nodes hold leases when the store goes: one is held across it
    async with proxies(2, postgres_url) as pair:
        nodes = list(
            await asyncio.gather(
                *(
                    v4_stack.service(
                        DESTINATION_QUEUE_URL=proxy.url_for(postgres_url),
                        DESTINATION_LEASE_SECONDS="3",
                        DESTINATION_QUEUE_WAIT_SECONDS=str(STORE_WAIT),
                    )
                    for proxy in pair
                )
            )
        )
        log_settlements(postgres_url)
        flow = Flow(lambda: [node.url for node in nodes], PEOPLE)
        sending = asyncio.create_task(flow.run(rounds=10_000, gap=0.2))
        while not rows(postgres_url, LEASED):  # noqa: ASYNC110 - the nodes' store to watch
            await asyncio.sleep(0.02)
        held = {i for (i,) in rows(postgres_url, LEASED)}
        for proxy in pair:
            proxy.cut()
        cut_at = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        async with httpx.AsyncClient(timeout=30) as client:
            ready = [(await client.get(f"{node.url}/readyz")).json() for node in nodes]
        # Sent after the cut, before the reopening: the store could not have kept them.
        accepted_during = [s for s in flow.acknowledged if cut_at < s < time.monotonic()]
        refused_during = [a - s for s, a in flow.refusals if s >= cut_at]
        settled_before = len(rows(postgres_url, "SELECT id FROM settle_log"))
        for proxy in pair:
            proxy.reopen()
        reopened_at = time.monotonic()
        while len(rows(postgres_url, "SELECT id FROM settle_log")) == settled_before:
            assert time.monotonic() - reopened_at < 30, "no delivery 30 s after the store came back"
            await asyncio.sleep(0.1)
        resumed = time.monotonic() - reopened_at
        await asyncio.sleep(3)  # events keep flowing after the outage, then stop
        flow.stop.set()
        await sending
        total = flow.accepted
        await v4_stack.wait_until(nodes[0].url, lambda c: c("delivered") == total, seconds=60)

    settled = rows(postgres_url, "SELECT id, state FROM settle_log")
    twice = len(settled) - len({i for i, _ in settled})
    print(
        f"\nstore gone {OUTAGE_SECONDS:.0f} s: accepted {total} events ({len(accepted_during)} "
        f"sent while it was gone), refused {len(refused_during)} times with 503 (the slowest "
        f"after {max(refused_during, default=0):.1f} s), delivered "
        f"{len({i for i, _ in settled})}, settled twice {twice}, lost "
        f"{total - len({i for i, _ in settled})}; deliveries resumed {resumed:.1f} s after it "
        f"came back; {len(held)} events were leased at the cut; /readyz said {ready[0]}"
    )
    reasons = [answer.get("reason", "") for answer in ready]
    assert all(r.startswith("store unreachable: ") for r in reasons), reasons
    assert not accepted_during, "the door acknowledged events while the store was gone"
    assert refused_during, "no sender was refused while the store was gone"
    assert max(refused_during) < STORE_WAIT + 3, "the door held a request past its wait"
    assert resumed < 15, f"deliveries resumed {resumed:.1f} s after the store came back"
    assert twice == 0
    assert len(settled) == total == len(rows(postgres_url, "SELECT id FROM events"))
    assert {state for _, state in settled} == {"delivered"}, rows(
        postgres_url, "SELECT id, attempts, reason FROM events WHERE state <> 'delivered'"
    )
    assert held <= {i for i, _ in settled}
    prospects = fake.all_prospects()
    assert sorted(p["email"] for p in prospects) == sorted(f"person{n}@x.io" for n in range(PEOPLE))
    assert {p["email"]: p["plan"] for p in prospects} == {
        f"person{n}@x.io": f"r{flow.last_round[n]}" for n in range(PEOPLE)
    }
