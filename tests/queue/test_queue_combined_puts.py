"""Puts that meet in one SQLite transaction are stored by one INSERT statement.

Each caller must still learn exactly what a put alone would have told it: how many of its
events were new, or that the backlog is full, and one caller's bad put fails only itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.queue import SQLiteEventQueue
from domain.ports import QueueFull
from tests.queue.conftest import identify
from tests.queue.test_queue_scopes_and_schema import ground_truth, legacy_file


def inserts(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("INSERT INTO EVENTS")]


async def traced(db: SQLiteDatabase, statements: list[str]) -> None:
    await db.read(lambda conn: conn.set_trace_callback(statements.append))


async def test_concurrent_puts_are_one_insert_and_each_learns_its_own_count(
    tmp_path: Path,
) -> None:
    db = SQLiteDatabase(tmp_path / "q.db")
    queue = SQLiteEventQueue(db, max_pending=1000)
    statements: list[str] = []
    await traced(db, statements)
    added = await asyncio.gather(
        *(queue.put([identify(f"m{i}-{j}", user=f"u{i}") for j in range(3)]) for i in range(20))
    )
    assert added == [3] * 20
    assert len(inserts(statements)) < 5  # one per transaction, not one per put
    assert (await queue.counts())["pending"] == 60 == ground_truth(db.path)["pending"]
    await db.close()


async def test_duplicates_across_concurrent_puts_are_counted_as_if_one_by_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    async with SQLiteEventQueue(path) as queue:
        assert await queue.put([identify("known")]) == 1
        added = await asyncio.gather(
            queue.put([identify("a"), identify("known")]),
            queue.put([identify("b"), identify("a")]),  # "a" came first in the put before
            queue.put([identify("c"), identify("c")], scope="other"),
            queue.put([identify(None), identify(None)]),  # no messageId: never a duplicate
        )
        assert added == [1, 1, 1, 2]
        assert (await queue.counts())["pending"] == 6 == ground_truth(path)["pending"]


async def test_a_full_backlog_refuses_every_put_of_the_transaction(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteEventQueue(path, max_pending=5) as queue:
        await queue.put([identify(f"m{i}", user=f"u{i}") for i in range(5)])
        results = await asyncio.gather(
            *(queue.put([identify(f"late{i}")]) for i in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, QueueFull) for r in results), results
        assert (await queue.counts())["pending"] == 5 == ground_truth(path)["pending"]


async def test_one_bad_put_fails_alone_and_its_neighbours_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteEventQueue(path) as queue:
        results: list[Any] = await asyncio.gather(
            queue.put([identify("ok-1")]),
            queue.put([identify("bad-\ud800")]),  # no text: cannot be written at all
            queue.put([identify("ok-2")]),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 1
        assert isinstance(results[1], Exception)
        assert ground_truth(path) == {"pending": 2}
        assert (await queue.counts())["pending"] == 2


async def test_an_older_file_counts_new_events_once_after_the_trigger_went(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    legacy_file(path)
    async with SQLiteEventQueue(path) as queue:
        await asyncio.gather(*(queue.put([identify(f"n{i}", user=f"v{i}")]) for i in range(7)))
        counts = await queue.counts()
    assert {s: n for s, n in counts.items() if n} == ground_truth(path)
    with sqlite3.connect(path) as conn:
        triggers = {
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
    assert "events_counted_in" not in triggers


@pytest.mark.parametrize("together", [1, 8])
async def test_a_cancelled_put_stores_nothing(tmp_path: Path, together: int) -> None:
    path = tmp_path / "q.db"
    async with SQLiteEventQueue(path) as queue:
        puts = [asyncio.ensure_future(queue.put([identify(f"m{i}")])) for i in range(together)]
        puts[0].cancel()
        await asyncio.gather(*puts, return_exceptions=True)
        stored = ground_truth(path).get("pending", 0)
        assert stored == together - 1
        assert (await queue.counts())["pending"] == stored
