"""One contract for every ProspectIndex and ApiCallCounts (memory, SQLite, PostgreSQL), plus
what only a shared store can do: two processes' (or nodes') counts add up, and they see one
index."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.pardot_budget import InMemoryApiCallCounts
from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.pardot_budget import PostgresApiCallCounts, PostgresImportFileCounts
from adapters.postgres.prospect_index import PostgresProspectIndex
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.pardot_budget import SQLiteApiCallCounts, SQLiteImportFileCounts
from adapters.sqlite.prospect_index import SQLiteProspectIndex
from domain.import_files import ImportFileBudget
from domain.ports import IndexState
from domain.prospect import Prospect
from tests.postgres import fresh_schema


def prospect(pid: int, email: str, **fields: Any) -> Prospect:
    fid = fields.pop("fid", None)
    return Prospect(
        pid, email, fid, (f"2026-01-01 00:00:{pid % 60:02d}", 0), fields, "2025-12-31 10:00:00"
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryProspectIndex()
    elif request.param == "sqlite":
        sqlite = SQLiteProspectIndex(tmp_path / "store.db")
        yield sqlite
        await sqlite.close()
    else:
        with fresh_schema() as url:
            async with PostgresDatabase(url) as database:
                yield PostgresProspectIndex(database)


@contextlib.asynccontextmanager
async def day_counts(
    kind: str, tmp_path: Path, sqlite_type: Any, postgres_type: Any
) -> AsyncIterator[Any]:
    """Counts per account day in the store `kind` names (memory keeps both kinds alike)."""
    if kind == "memory":
        yield InMemoryApiCallCounts()
    elif kind == "sqlite":
        sqlite = sqlite_type(tmp_path / "store.db")
        yield sqlite
        await sqlite.close()
    else:
        with fresh_schema() as url:
            async with PostgresDatabase(url) as database:
                yield postgres_type(database)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def counts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kinds = (SQLiteApiCallCounts, PostgresApiCallCounts)
    async with day_counts(request.param, tmp_path, *kinds) as counted:
        yield counted


async def test_an_empty_index_knows_nothing_and_is_not_complete(index: Any) -> None:
    assert await index.state() == IndexState()
    assert await index.count() == 0
    assert await index.by_ids([1]) == {} and await index.by_emails(["a@x.io"]) == {}
    assert await index.by_fid("00Q000000000001AAA") is None and await index.holding("7") == []


async def test_prospects_are_found_by_id_email_fid_and_lookup_value(index: Any) -> None:
    a = prospect(1, "Pat@X.io", plan="pro", tags=("a", "b"), fid="00Q000000000001AAA")
    b = prospect(2, "pat@x.io", org_id="7")
    c = prospect(3, "kim@x.io", org_id="7")
    await index.put([(a, None), (b, "7"), (c, "7")])
    assert await index.by_ids([1, 3, 9]) == {1: a, 3: c}
    assert await index.by_emails([" PAT@x.io", "nobody@x.io"]) == {"pat@x.io": [a, b]}
    assert await index.by_fid("00Q000000000001AAA") == a
    assert await index.holding("7") == [b, c]
    assert await index.count() == 3


async def test_a_put_replaces_by_id_and_a_drop_forgets(index: Any) -> None:
    await index.put([(prospect(1, "a@x.io", org_id="7"), "7")])
    moved = prospect(1, "b@x.io", org_id="8")
    await index.put([(moved, "8")])
    assert await index.holding("7") == [] and await index.holding("8") == [moved]
    assert await index.by_emails(["a@x.io"]) == {}
    await index.drop([1, 2])
    assert await index.count() == 0


async def test_the_state_is_kept_and_a_clear_forgets_everything(index: Any) -> None:
    state = IndexState(
        complete=False, ranges=((1000, 2000), (2000, 3001)), high_water="2026-01-01 10:00:00",
        total=1200,
        watermark_began=datetime(2026, 1, 1, 15, 0, 0, 123456, tzinfo=UTC),
        recent_refreshes=(datetime(2026, 1, 1, 14, 59, tzinfo=UTC),
                          datetime(2026, 1, 1, 15, 0, 0, 123456, tzinfo=UTC)),
        lookup_field="org_id", lookup_type="Number",
    )  # fmt: skip
    await index.save_state(state)
    await index.put([(prospect(1, "a@x.io"), None)])
    assert await index.state() == state
    await index.clear()
    assert await index.state() == IndexState() and await index.count() == 0


async def test_the_store_clock_is_aware_and_moves_on(index: Any) -> None:
    first = await index.clock()
    await asyncio.sleep(0.01)
    second = await index.clock()
    assert first.tzinfo is not None and second > first
    assert abs((first - datetime.now(UTC)).total_seconds()) < 60


async def test_calls_are_counted_per_day(counts: Any) -> None:
    assert await counts.used("2026-01-01") == 0
    assert await counts.add("2026-01-01") == 1
    assert await counts.add("2026-01-01", 4) == 5
    assert await counts.add("2026-01-02") == 1
    assert (await counts.used("2026-01-01"), await counts.used("2026-01-02")) == (5, 1)


async def test_processes_sharing_a_file_share_one_count_and_one_index(tmp_path: Path) -> None:
    first_db, second_db = SQLiteDatabase(tmp_path / "q.db"), SQLiteDatabase(tmp_path / "q.db")
    try:
        one, two = SQLiteApiCallCounts(first_db), SQLiteApiCallCounts(second_db)
        await one.add("2026-01-01", 3)
        await two.add("2026-01-01", 2)
        assert await one.used("2026-01-01") == 5
        await SQLiteProspectIndex(first_db).put([(prospect(1, "a@x.io"), None)])
        assert await SQLiteProspectIndex(second_db).count() == 1
    finally:
        await first_db.close()
        await second_db.close()


async def test_nodes_sharing_a_postgres_store_share_one_count_and_one_index(
    postgres_url: str,
) -> None:
    async with PostgresDatabase(postgres_url) as first, PostgresDatabase(postgres_url) as second:
        one, two = PostgresApiCallCounts(first), PostgresApiCallCounts(second)
        totals = await asyncio.gather(*(node.add("2026-01-01") for node in [one, two] * 20))
        assert sorted(totals) == list(range(1, 41))  # no count lost to a race
        assert await two.used("2026-01-01") == 40
        await PostgresProspectIndex(first).put([(prospect(1, "a@x.io"), None)])
        assert await PostgresProspectIndex(second).count() == 1


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def file_counts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kinds = (SQLiteImportFileCounts, PostgresImportFileCounts)
    async with day_counts(request.param, tmp_path, *kinds) as counted:
        yield counted


async def test_import_files_are_counted_per_day_and_given_back(file_counts: Any) -> None:
    budget = ImportFileBudget(file_counts, limit=10, clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    assert await budget.take(4) and await budget.take(6)
    assert not await budget.take(1)
    await budget.give_back(6)
    assert await budget.take(5) and await file_counts.used("2026-01-01") == 9
    assert await file_counts.used("2026-01-02") == 0


async def test_import_files_and_calls_are_two_counts_in_one_file(tmp_path: Path) -> None:
    database = SQLiteDatabase(tmp_path / "q.db")
    try:
        calls, files = SQLiteApiCallCounts(database), SQLiteImportFileCounts(database)
        await calls.add("2026-01-01", 7)
        await files.add("2026-01-01", 2)
        assert (await calls.used("2026-01-01"), await files.used("2026-01-01")) == (7, 2)
    finally:
        await database.close()


async def test_processes_sharing_a_file_never_take_more_import_files_than_the_day_has(
    tmp_path: Path,
) -> None:
    databases = [SQLiteDatabase(tmp_path / "q.db") for _ in range(2)]
    try:
        day = lambda: datetime(2026, 1, 1, tzinfo=UTC)  # noqa: E731
        budgets = [
            ImportFileBudget(SQLiteImportFileCounts(db), limit=10, clock=day) for db in databases
        ]
        taken = await asyncio.gather(*(budget.take(3) for budget in budgets * 4))
        assert taken.count(True) == 3
        assert await SQLiteImportFileCounts(databases[0]).used("2026-01-01") == 9
    finally:
        for database in databases:
            await database.close()


async def test_nodes_sharing_a_postgres_store_never_take_more_import_files_than_the_day_has(
    postgres_url: str,
) -> None:
    async with PostgresDatabase(postgres_url) as first, PostgresDatabase(postgres_url) as second:
        day = lambda: datetime(2026, 1, 1, tzinfo=UTC)  # noqa: E731
        budgets = [
            ImportFileBudget(PostgresImportFileCounts(db), limit=10, clock=day)
            for db in (first, second)
        ]
        taken = await asyncio.gather(*(budget.take(3) for budget in budgets * 4))
        assert taken.count(True) == 3
        assert await PostgresImportFileCounts(second).used("2026-01-01") == 9
