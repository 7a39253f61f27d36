"""Random runs of puts, leases, settlements and passing time: every queue answers alike."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory.queue import InMemoryEventQueue
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.queue import PostgresEventQueue
from adapters.sqlite.queue import SQLiteEventQueue
from domain.ports import QueueFull, Settlement
from tests.postgres import fresh_schema
from tests.queue.conftest import Clock, identify

events = st.builds(
    identify,
    st.one_of(st.none(), st.sampled_from(["m1", "m2", "m3", "m4", "m5", "m6"])),
    st.sampled_from(["ada", "bob", "cy", None]),
)
steps = st.one_of(
    st.tuples(st.just("put"), st.lists(events, max_size=4)),
    st.tuples(st.just("lease"), st.integers(0, 4), st.sampled_from([10, 60])),
    st.tuples(
        st.just("settle"),
        st.integers(0, 3),
        st.sampled_from(["delivered", "retry", "dead", "skipped"]),
        st.sampled_from([None, 5, 30]),
    ),
    st.tuples(st.just("wait"), st.sampled_from([1, 15, 61])),
    st.tuples(st.just("requeue")),
)


async def play(queue: Any, clock: Clock, script: list[tuple[Any, ...]]) -> list[Any]:
    seen: list[Any] = []
    leased: list[int] = []
    names: dict[int, int] = {}

    def name(event_id: int) -> int:
        # Ids only have to grow: SQLite spends one on a duplicate it drops, the dict does not.
        return names.setdefault(event_id, len(names))

    for step in script:
        match step:
            case ("put", payloads):
                try:
                    seen.append(await queue.put(payloads))
                except QueueFull:
                    seen.append("full")
            case ("lease", limit, seconds):
                got = await queue.lease(limit, seconds)
                leased += [e.id for e in got]
                seen.append([(name(e.id), e.payload, e.attempts, e.received_at) for e in got])
            case ("settle", pick, state, delay):
                if leased:
                    event_id = leased.pop(pick % len(leased))
                    when = None if delay is None else clock.now + timedelta(seconds=delay)
                    await queue.settle({event_id: Settlement(state, "why", not_before=when)})
            case ("wait", seconds):
                clock.advance(seconds)
            case ("requeue",):
                seen.append(await queue.requeue_dead())
        seen.append(await queue.counts())
    seen.append([{**row, "id": name(row["id"])} for row in await queue.recent("dead", 100)])
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=25), st.sampled_from([None, 3]))
def test_the_two_queues_agree(script: list[tuple[Any, ...]], max_pending: int | None) -> None:
    async def both() -> tuple[list[Any], list[Any]]:
        memory_clock, sqlite_clock = Clock(), Clock()
        memory = InMemoryEventQueue(max_pending=max_pending, clock=memory_clock)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "queue.db"
            async with SQLiteEventQueue(path, max_pending=max_pending, clock=sqlite_clock) as db:
                return (
                    await play(memory, memory_clock, script),
                    await play(db, sqlite_clock, script),
                )

    in_memory, in_sqlite = asyncio.run(both())
    assert in_memory == in_sqlite


@pytest.fixture(scope="module")
def postgres_schema() -> Iterator[str]:
    """One schema for every example, emptied before each (a schema each would be slow)."""
    with fresh_schema() as url:
        yield url


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(steps, max_size=25), st.sampled_from([None, 3]))
def test_the_postgres_queue_agrees_with_the_memory_queue(
    postgres_schema: str, script: list[tuple[Any, ...]], max_pending: int | None
) -> None:
    async def both() -> tuple[list[Any], list[Any]]:
        memory_clock, postgres_clock = Clock(), Clock()
        memory = InMemoryEventQueue(max_pending=max_pending, clock=memory_clock)
        async with PostgresDatabase(postgres_schema) as database:
            async with database.connection() as conn:
                await conn.execute("TRUNCATE events, event_counts, queue_settings RESTART IDENTITY")
            postgres = PostgresEventQueue(database, max_pending=max_pending, clock=postgres_clock)
            return (
                await play(memory, memory_clock, script),
                await play(postgres, postgres_clock, script),
            )

    in_memory, in_postgres = asyncio.run(both())
    assert in_memory == in_postgres
