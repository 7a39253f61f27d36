"""A node loses its network to PostgreSQL while it holds leases and has Pardot writes in flight.

Node A works alone on a burst of events (each a new person, so each a Pardot write); while it
holds leases and has calls in flight at Pardot, the proxy between A and PostgreSQL resets A's
connections, and node B starts. What must hold:

- A starts no new Pardot call once it cannot renew its lease: every call A begins after the
  cut is received by Pardot within one heartbeat (plus scheduling slack) of the cut, and every
  call A made has ended (answered, or abandoned at its timeout) before B starts its first;
- B delivers A's events once A's leases expire;
- when A's store comes back, A settles nothing it no longer holds: each event is settled once;
- Pardot holds one prospect per person with the values sent.

A write in flight at the cut reached Pardot (it was sent before the cut and is answered
after it) but A can no longer record that: B writes it again when it takes the event over.
That second write is the one "twice" the figures count, and is harmless: the same values,
the same prospect (B finds it by email before writing).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import httpx

from tests.faults.flow import AUTH, identify, log_settlements, rows
from tests.faults.proxy import proxies
from tests.service.conftest import ServiceProcess, Stack

PEOPLE = 40
LEASE_SECONDS = 3.0  # PARDOT_CALL_TIMEOUT_SECONDS is then 2.25 s, a heartbeat every 0.75 s
HEARTBEAT = LEASE_SECONDS / 4
# Each write A sends before the cut takes this long (under the 2.25 s timeout): A's write in
# flight at the cut is answered after A first fails to renew.
LATENCY = 1.3
QUICK = 0.05  # reads, and every call received after the cut: B's, and any A wrongly began
WRITES = ("batchCreate", "batchUpdate", "batchUpsert", "create", "update", "upsert")
# A call that passed A's lease check just before its renewal failed reaches Pardot a moment later.
SENDING = 0.1


def node_calls(stack: Stack, token: str) -> list[tuple[float, float | None]]:
    return [(e.received, e.answered) for e in stack.fake.journal or () if e.token == token]


async def test_a_node_cut_off_from_the_store_starts_no_call_and_settles_nothing_it_lost(
    v4_stack: Stack, postgres_url: str
) -> None:
    fake = v4_stack.fake
    fake.journal = []
    # Writes take LATENCY, so A has one in flight at the cut; the reads before them are quick.
    fake.latency = QUICK
    fake.latency_of = dict.fromkeys(WRITES, LATENCY)

    def node(proxy_url: str, name: str) -> dict[str, str]:
        return {
            "DESTINATION_QUEUE_URL": proxy_url,
            "DESTINATION_LEASE_SECONDS": str(LEASE_SECONDS),
            "SALESFORCE_TOKEN_FILE": str(v4_stack.tmp / f"tokens-{name}.json"),
        }

    async with proxies(2, postgres_url) as (to_a, to_b):
        a = await v4_stack.service(**node(to_a.url_for(postgres_url), "a"))
        log_settlements(postgres_url, every_settlement=True)
        async with httpx.AsyncClient(timeout=30) as client:
            batch = [identify(person, 0) for person in range(PEOPLE)]
            answer = await client.post(f"{a.url}/v1/batch", json={"batch": batch}, auth=AUTH)
            assert answer.status_code == 200, answer.text
        # A's token: the one whose calls are in flight once A works on the burst.
        while not [e for e in fake.journal if e.answered is None and e.operation != "query"]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        token_a = next(e.token for e in fake.journal if e.answered is None)
        to_a.cut()
        cut_at = time.monotonic()
        wall_minus_monotonic = time.time() - cut_at
        in_flight = [(r, e) for r, e in node_calls(v4_stack, token_a) if e is None]
        # A's calls in flight keep the latency they were received with; the rest need none.
        fake.latency_of = {}
        b = await v4_stack.service(**node(to_b.url_for(postgres_url), "b"))
        await v4_stack.wait_until(b.url, lambda c: c("delivered") == PEOPLE, seconds=60)
        to_a.reopen()  # A's store comes back: whatever A still tries to settle, it no longer holds
        await asyncio.sleep(LEASE_SECONDS)
        assert a.running and b.running

    calls_a = node_calls(v4_stack, token_a)
    calls_b = [(e.received, e.answered) for e in fake.journal if e.token != token_a]
    failed_at = first_failed_renewal(a, wall_minus_monotonic)
    late = [r - failed_at for r, _ in calls_a if r > failed_at + SENDING]
    a_ended = max((e or float("inf")) for _, e in calls_a)
    b_began = min(r for r, _ in calls_b)
    # Writes B made of what A had written at the cut: the only way an event reaches Pardot twice.
    in_flight_ops = {
        e.operation
        for e in fake.journal
        if e.token == token_a and e.received < cut_at and (e.answered or 0) > cut_at
    }
    rewritten = [
        e for e in fake.journal if e.token != token_a and e.operation not in ("query", "read")
    ]
    settled = rows(postgres_url, "SELECT id, state FROM settle_log")
    finals = [i for i, state in settled if state in ("delivered", "dead", "rejected")]
    print(
        f"\nnode cut off holding leases: {PEOPLE} accepted, {len(set(finals))} delivered, "
        f"{len(in_flight)} calls of A in flight at the cut, A first failed to renew "
        f"{failed_at - cut_at:.2f} s after the cut and began {len(late)} calls after that, A's last call ended {a_ended - cut_at:.2f} s after the cut and B's "
        f"first began {b_began - cut_at:.2f} s after it; A's write(s) in flight {sorted(in_flight_ops)}, "
        f"writes B made after taking over {len(rewritten)}, "
        f"settled twice {len(finals) - len(set(finals))}, lost {PEOPLE - len(set(finals))}"
    )
    assert in_flight, "A had no call in flight at the cut"
    assert failed_at - cut_at < HEARTBEAT + 1.0, "A was slow to notice the cut"
    assert not late, f"A began Pardot calls {late} s after it could not renew its lease"
    assert a_ended < b_began, "A still had a Pardot call going when B began its own"
    assert sorted(finals) == sorted(set(finals)) and len(finals) == PEOPLE
    assert {state for _, state in settled} <= {"delivered", "retry"}
    assert rows(postgres_url, "SELECT count(*) FROM events WHERE state <> 'delivered'") == [(0,)]
    prospects = fake.all_prospects()
    assert sorted(p["email"] for p in prospects) == sorted(f"person{n}@x.io" for n in range(PEOPLE))
    assert {p["plan"] for p in prospects} == {"r0"}
    assert not any("lease lost" in line for line in b.log)


def first_failed_renewal(node: ServiceProcess, wall_minus_monotonic: float) -> float:
    """When `node` first logged that it could not renew a lease, on time.monotonic()'s clock."""
    for line in node.log:
        if "could not renew a lease" in line:
            stamp = json.loads(line)["timestamp"]
            return datetime.fromisoformat(stamp).timestamp() - wall_minus_monotonic
    raise AssertionError("A never failed to renew its lease:\n" + "\n".join(node.log[-20:]))
