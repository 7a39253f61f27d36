"""Three `serve` nodes on one PostgreSQL store and one (fake) Pardot, one of them killed.

Events are sent to all three in rounds (three new people a round, and an event for each
person met so far), a person's events in order but to a different node each round; one node
dies with `kill -9` while every node holds a lease. What the nodes share must hold: every accepted event is
settled exactly once (a trigger of the test's own records each settlement), nobody gets two
prospects, the last event's values win, a person's events are settled in the order they
arrived, Pardot never sees more than 5 calls at once, and the dead node's events are
delivered by the others within 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import psycopg

from tests.service.conftest import WRITE_KEY, ServiceProcess, Stack

AUTH = (WRITE_KEY, "")
ROUNDS = 10
PEOPLE = 3 * ROUNDS  # three new people a round, and an event for everyone met so far
EVENTS = sum(3 * (r + 1) for r in range(ROUNDS))
ROUND_SECONDS = 0.3
# Every settlement the nodes apply (a leased event reaching a final state, or a retry),
# stamped with its transaction's start: a settlement starts after the one before it committed.
SETTLE_LOG = (
    "CREATE TABLE settle_log (id bigint, state text, at timestamptz DEFAULT now())",
    """CREATE FUNCTION log_settlement() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        INSERT INTO settle_log (id, state) VALUES (NEW.id, NEW.state);
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER settled AFTER UPDATE ON events FOR EACH ROW"
    " WHEN (OLD.state = 'leased' AND NEW.state <> 'leased') EXECUTE FUNCTION log_settlement()",
)
LIVE_LEASES = "SELECT count(DISTINCT lease_id) FROM events WHERE state = 'leased'"


def event(person: int, round_: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{person}-{round_}",
        "userId": f"u{person}",
        "timestamp": f"2026-11-27T09:00:{round_:02d}Z",
        "traits": {
            "email": f"person{person}@x.io",
            "first_name": f"P{person}",
            "plan": f"r{round_}",
        },
    }


async def send_round(client: httpx.AsyncClient, nodes: list[ServiceProcess], round_: int) -> None:
    """The round's events, each person's to one node, the nodes' batches sent at once."""
    shares: dict[int, list[dict[str, Any]]] = {}
    for person in range(3 * (round_ + 1)):
        shares.setdefault((person + round_) % len(nodes), []).append(event(person, round_))

    async def post(node: ServiceProcess, batch: list[dict[str, Any]]) -> None:
        answer = await client.post(f"{node.url}/v1/batch", json={"batch": batch}, auth=AUTH)
        assert answer.status_code == 200, answer.text

    await asyncio.gather(*(post(nodes[n], batch) for n, batch in shares.items()))


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


async def all_three_hold_leases(url: str) -> None:
    """Returns once three leases are live at once: each node's worker holds one."""
    while rows(url, LIVE_LEASES)[0][0] < 3:  # noqa: ASYNC110 - another process to watch
        await asyncio.sleep(0.02)


def add_settle_log(postgres_url: str) -> None:
    """The settlement log, added while the nodes already poll: one transaction that takes the
    queue table's lock first, so the nodes' leases cannot deadlock with its DDL."""
    with psycopg.connect(postgres_url) as conn, conn.transaction():
        conn.execute("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
        for statement in SETTLE_LOG:
            conn.execute(statement)  # type: ignore[arg-type]


async def test_three_nodes_share_one_postgres_and_survive_a_kill_9_mid_stream(
    v4_stack: Stack, postgres_url: str
) -> None:
    fake = v4_stack.fake
    fake.latency = 0.25  # each node holds its lease a while: the victim dies holding one
    nodes = list(
        await asyncio.gather(
            # One batch at a time per node: three leases at once are then three nodes each
            # holding one (a node with several batches in flight holds several itself).
            *(
                v4_stack.service(
                    DESTINATION_QUEUE_URL=postgres_url, DESTINATION_BATCHES_IN_FLIGHT="1"
                )
                for _ in range(3)
            )
        )
    )
    add_settle_log(postgres_url)
    victim = nodes[1]
    async with httpx.AsyncClient(timeout=30) as client:
        crowded = asyncio.create_task(all_three_hold_leases(postgres_url))
        round_ = 0
        while not crowded.done():
            assert round_ < ROUNDS - 2, "the three nodes never held leases at once"
            await send_round(client, nodes, round_)
            round_ += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(crowded), ROUND_SECONDS)
        held = {i for (i,) in rows(postgres_url, "SELECT id FROM events WHERE state = 'leased'")}
        await victim.kill9()
        killed_at = time.monotonic()
        survivors = [node for node in nodes if node is not victim]
        for later in range(round_, ROUNDS):
            await send_round(client, survivors, later)
            await asyncio.sleep(ROUND_SECONDS)

        # Every event the nodes held at the kill, the victim's included, settled soon after.
        while True:
            settled = {i for (i,) in rows(postgres_url, "SELECT id FROM settle_log")}
            if held <= settled:
                break
            assert time.monotonic() - killed_at < 30, f"{len(held - settled)} never settled"
            await asyncio.sleep(0.1)
        resumed = time.monotonic() - killed_at
        await v4_stack.wait_until(survivors[0].url, lambda c: c("delivered") == EVENTS, seconds=30)

    print(f"\nthe dead node's events were delivered {resumed:.1f} s after kill -9")
    assert resumed < 15, f"deliveries resumed only {resumed:.1f} s after the kill"
    print(f"killed after round {round_ - 1} of {ROUNDS}, holding {len(held)} leased events")
    events = rows(postgres_url, "SELECT id, message_id, state, attempts FROM events")
    assert len(events) == EVENTS
    assert {state for _, _, state, _ in events} == {"delivered"}
    assert any(attempts > 1 for _, _, _, attempts in events), "no lease was taken over"
    settlements = rows(postgres_url, "SELECT id, state FROM settle_log ORDER BY id")
    assert sorted(i for i, _ in settlements) == sorted(i for i, _, _, _ in events)  # once each
    assert {state for _, state in settlements} == {"delivered"}

    # A person's events were settled in the order they arrived: no event of a person was
    # settled before an earlier one of theirs (settle_log order is commit-time order).
    order = rows(
        postgres_url,
        "SELECT e.ordering_key, e.message_id FROM settle_log s JOIN events e USING (id)"
        " ORDER BY s.at, e.id",
    )
    for person in range(PEOPLE):
        theirs = [m for key, m in order if key == f"u{person}"]
        assert theirs == [f"m{person}-{r}" for r in range(person // 3, ROUNDS)], theirs

    # No prospect twice, the last values won, Pardot's limit held across the nodes.
    prospects = fake.all_prospects()
    assert sorted(p["email"] for p in prospects) == sorted(f"person{n}@x.io" for n in range(PEOPLE))
    assert {p["plan"] for p in prospects} == {f"r{ROUNDS - 1}"}
    assert fake.max_in_flight <= 5, f"{fake.max_in_flight} calls in flight at Pardot"
    assert 66 not in [e.code for e in fake.errors]
    for node in survivors:
        assert any("event settled" in line for line in node.log), node.log[-5:]
