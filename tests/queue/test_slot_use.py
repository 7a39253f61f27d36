"""Busy Pardot slot time: the ratio's arithmetic on a clock the test moves, the wrapper around
the slots, and the store's log of busy slot-seconds (memory, SQLite, PostgreSQL) that `status`
reads in a process of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.pardot_slots import InMemorySlots
from adapters.memory.slot_busy import InMemorySlotBusyLog
from adapters.postgres.stores import PostgresStores
from adapters.sqlite.stores import SQLiteStores
from entrypoints.slot_use import MeteredSlots, SlotUse, SlotUseRecorder, StoredSlotUse
from tests.postgres import fresh_schema


class Ticks:
    """Seconds that move only when the test says."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_the_ratio_is_busy_slot_seconds_over_limit_times_wall_seconds() -> None:
    ticks = Ticks()
    use = SlotUse(5, clock=ticks)
    assert use.ratio() == 0.0  # nothing yet, no wall time yet
    ticks.advance(10)
    assert use.ratio() == 0.0  # idle: 0
    first, second = use.took(), use.took()
    ticks.advance(10)
    use.gave_back(first)
    # 20 s of life, two slots busy for 10 s (one still in flight, counted up to now).
    assert use.ratio() == pytest.approx(20 / (5 * 20))
    assert use.busy_seconds() == pytest.approx(20)
    ticks.advance(10)
    use.gave_back(second)
    assert use.ratio() == pytest.approx(30 / (5 * 30))


def test_only_the_last_minute_counts() -> None:
    ticks = Ticks()
    use = SlotUse(5, clock=ticks)
    calls = [use.took() for _ in range(5)]
    ticks.advance(30)
    for call in calls:
        use.gave_back(call)
    assert use.ratio() == pytest.approx(1.0)  # all five, all the time so far
    ticks.advance(60)  # a minute of nothing: the busy half-minute left the window
    assert use.ratio() == 0.0
    one = use.took()
    ticks.advance(15)
    # A call that began 15 s ago, the window the last 60 s: 15 / (5 x 60).
    assert use.ratio() == pytest.approx(15 / 300)
    use.gave_back(one)
    ticks.advance(50)  # the call straddles the window's start: only its last 10 s count
    assert use.ratio() == pytest.approx(10 / 300)
    assert use.busy_seconds() == pytest.approx(5 * 30 + 15)  # the total forgets nothing


async def test_metered_slots_count_held_time_not_the_wait_for_a_slot() -> None:
    ticks = Ticks()
    use = SlotUse(1, clock=ticks)
    slots = MeteredSlots(InMemorySlots(1), use)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with slots.slot():
            holding.set()
            await release.wait()
            ticks.advance(4)

    async def wait_then_hold() -> None:
        async with slots.slot():
            ticks.advance(1)

    first = asyncio.create_task(hold())
    await holding.wait()
    second = asyncio.create_task(wait_then_hold())
    await asyncio.sleep(0.01)  # the second waits for the only slot
    ticks.advance(5)  # waiting is not busy time... but the first holder's 5 s are
    release.set()
    await asyncio.gather(first, second)
    assert use.busy_seconds() == pytest.approx(5 + 4 + 1)
    assert use.ratio() == pytest.approx(10 / 10)  # one slot, busy all 10 s


async def test_the_recorder_adds_busy_time_to_the_bucket_and_the_store_gives_the_ratio() -> None:
    ticks, wall = Ticks(), Ticks(1_700_000_005.0)
    use = SlotUse(5, clock=ticks)
    busy_log = InMemorySlotBusyLog()
    recorder = SlotUseRecorder(use, busy_log, wall=wall)
    stored = StoredSlotUse(busy_log, 5, wall=wall)
    assert await stored.ratio() == 0.0
    calls = [use.took() for _ in range(3)]
    ticks.advance(4)
    wall.advance(4)
    await recorder.record()  # 12 busy slot-seconds in the bucket of 1_700_000_000
    assert await busy_log.busy(1_700_000_000, 1_700_000_010) == pytest.approx(12)
    # The minute: the buckets begun in the last 60 s and the one under way, 69 s of wall.
    assert await stored.ratio() == pytest.approx(12 / (5 * 69))
    for call in calls:
        use.gave_back(call)
    await recorder.record()  # nothing new: nothing added
    assert await busy_log.busy(0, 2_000_000_000) == pytest.approx(12)
    wall.advance(120)  # two minutes later the bucket is out of the window
    assert await stored.ratio() == 0.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def busy_logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Two views of one store's log (two processes' adapters, for the file backends)."""
    if request.param == "memory":
        shared = InMemorySlotBusyLog()
        yield [shared, shared]
    elif request.param == "sqlite":
        async with (
            SQLiteStores.opened(tmp_path / "queue.db") as one,
            SQLiteStores.opened(tmp_path / "queue.db") as other,
        ):
            yield [one.slot_busy(), other.slot_busy()]
    else:
        with fresh_schema() as url:
            async with (
                PostgresStores.opened(url, pool_size=2) as one,
                PostgresStores.opened(url, pool_size=2) as other,
            ):
                yield [one.slot_busy(), other.slot_busy()]


async def test_every_process_adds_to_the_same_buckets(busy_logs: list[Any]) -> None:
    one, other = busy_logs
    assert await one.busy(0, 10**10) == 0.0
    await one.add(1_700_000_000, 2.5)
    await other.add(1_700_000_000, 1.25)
    await other.add(1_700_000_010, 4.0)
    assert await one.busy(1_700_000_000, 1_700_000_010) == pytest.approx(3.75)
    assert await other.busy(1_700_000_000, 1_700_000_020) == pytest.approx(7.75)
    assert await one.busy(1_700_000_010, 1_700_000_020) == pytest.approx(4.0)
    # A bucket an hour newer forgets the old ones (the file backends keep an hour).
    await one.add(1_700_003_700, 1.0)
    kept = await other.busy(0, 10**10)
    assert kept in (pytest.approx(1.0), pytest.approx(8.75))  # memory keeps everything
