"""The store's failures are nobody's: an outage at any moment of a batch, or of the search for
the people who break it, dead-letters no event and spends no attempt.

The store is down for a drawn window of the batch writes (each write meets psycopg's error for
a server gone, as the Pardot repository's store steps meet it when PostgreSQL goes away); some
drawn people are poison (their writes always fail with an error of their own). With one
attempt allowed, any attempt the store's failure spent would dead-letter at once; with twelve,
a search for the poison that the outage ends or begins midway would blame whoever it met.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.service.test_worker import identify, nonzero, started_rig

MAX_ROUNDS = 60


async def deliver(
    people: int, poison: set[int], down_from: int, down_for: int, attempts: int
) -> Any:
    rig = await started_rig(max_attempts=attempts, batch_size=people + 2)
    original = rig.pardot.write_batch
    writes = 0

    async def outage_then_poison(batch: Any) -> Any:
        nonlocal writes
        writes += 1
        if down_from <= writes < down_from + down_for:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if any(w.key in {f"u{n}@x.io" for n in poison} for w in batch):
            raise UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed")
        return await original(batch)

    rig.pardot.write_batch = outage_then_poison  # type: ignore[method-assign]
    await rig.queue.put([identify(n) for n in range(people)])
    for _ in range(MAX_ROUNDS):
        await rig.worker.run_once()
        counts = nonzero(await rig.queue.counts())
        if not counts.get("retry") and not counts.get("pending"):
            break
        rig.clock.advance(3600)
    return rig


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    people=st.integers(1, 10),
    poison=st.sets(st.integers(0, 9), max_size=3),
    down_from=st.integers(1, 12),
    down_for=st.integers(1, 12),
    attempts=st.sampled_from([1, 12]),
)
def test_a_store_outage_during_a_batch_dead_letters_only_poison_and_spends_nothing(
    people: int, poison: set[int], down_from: int, down_for: int, attempts: int
) -> None:
    poison = {n for n in poison if n < people}
    rig = asyncio.run(deliver(people, poison, down_from, down_for, attempts))
    dead = asyncio.run(rig.queue.recent("dead", limit=50))
    assert {d["messageId"] for d in dead} == {f"m{n}" for n in poison}, [d["reason"] for d in dead]
    assert not any("OperationalError" in d["reason"] for d in dead)
    counts = nonzero(asyncio.run(rig.queue.counts()))
    assert counts == {
        state: n
        for state, n in {"delivered": people - len(poison), "dead": len(poison)}.items()
        if n
    }
    assert {p.email for p in rig.pardot.prospects()} == {
        f"u{n}@x.io" for n in range(people) if n not in poison
    }
