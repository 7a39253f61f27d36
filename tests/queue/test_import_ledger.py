"""One contract for the import ledger (domain/ports/ledger.py) over memory, SQLite and
PostgreSQL: imports found by their events, writes made to wait only by unfinished imports
whose events still wait, and rows dropped only once their import is finished."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.import_ledger import InMemoryImportLedger
from adapters.memory.queue import InMemoryEventQueue
from adapters.postgres.stores import PostgresStores
from adapters.sqlite.stores import SQLiteStores
from domain.ports import RecordedImport, RecordedRow, Settlement, ledger_digest
from tests.postgres import fresh_schema
from tests.queue.conftest import identify


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """(queue, ledger) over one store; four events leased."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "memory":
            queue: Any = InMemoryEventQueue()
            ledger: Any = InMemoryImportLedger(queue.open_ids)
        else:
            if request.param == "sqlite":
                opened: Any = SQLiteStores.opened(tmp_path / "queue.db")
            else:
                url = stack.enter_context(fresh_schema())
                opened = PostgresStores.opened(url, pool_size=2)
            stores = await stack.enter_async_context(opened)
            queue = stores.queue(max_pending=None)
            ledger = stores.import_ledger()
        await queue.put([identify(f"m{i}", f"u{i}") for i in range(4)])
        leased = await queue.lease(10, 60)
        yield queue, ledger, sorted(e.id for e in leased)


def entry(import_id: int, ids: list[int], *, rows: int = 2) -> RecordedImport:
    """`rows` rows, the first holding two events when there are enough."""
    groups = [ids[:2], *([i] for i in ids[2:])][:rows] if len(ids) > rows else [[i] for i in ids]
    return RecordedImport(
        import_id,
        "prospect_id",
        ("prospect_id", "company"),
        tuple(
            RecordedRow(
                tuple(events),
                ledger_digest(str(500 + n)),
                ledger_digest(str(500 + n)),
                500 + n,
            )
            for n, events in enumerate(groups)
        ),
    )


async def test_an_import_is_found_by_any_of_its_events_with_every_row(store: Any) -> None:
    _, ledger, ids = store
    recorded = entry(7001, ids[:3])
    await ledger.record(recorded)
    await ledger.record(entry(7002, ids[3:], rows=1))
    assert await ledger.holding(ids) == [recorded, entry(7002, ids[3:], rows=1)]
    # Only the rows holding the events asked for, each with all its events.
    [found] = await ledger.holding([ids[1]])
    assert found.rows == recorded.rows[:1] and found.rows[0].events == (ids[0], ids[1])
    [found] = await ledger.holding([ids[2]])
    assert found.rows == recorded.rows[1:] and found.columns == recorded.columns
    assert await ledger.holding([999_999]) == []
    assert [e.id for e in await ledger.unfinished()] == [7001, 7002]


async def test_only_an_unfinished_import_whose_events_still_wait_makes_writes_wait(
    store: Any,
) -> None:
    queue, ledger, ids = store
    await ledger.record(entry(7001, ids[:3]))
    first, second = ledger_digest("500"), ledger_digest("501")
    assert await ledger.waiting_on([first, second, ledger_digest("9")]) == {
        first: 7001,
        second: 7001,
    }
    # The second row's event settled (the import's rows were never forgotten): no wait.
    await queue.settle({ids[2]: Settlement("delivered", "by import 7001")})
    assert await ledger.waiting_on([first, second]) == {first: 7001}
    await ledger.finish(7001)
    assert await ledger.waiting_on([first, second]) == {}
    assert await ledger.unfinished() == []
    [found] = await ledger.holding([ids[0]])
    assert found.finished


async def test_settled_events_leave_finished_imports_only(store: Any) -> None:
    _, ledger, ids = store
    await ledger.record(entry(7001, ids[:3]))
    await ledger.record(entry(7002, ids[3:], rows=1))
    await ledger.forget(ids)  # 7001 and 7002 unfinished: a restart still needs them
    assert [e.id for e in await ledger.holding(ids)] == [7001, 7002]
    await ledger.finish(7001)
    await ledger.forget([ids[0]])
    [left] = await ledger.holding(ids[:3])
    assert left.rows[0].events == (ids[1],) and len(left.rows) == 2
    await ledger.forget([ids[1], ids[2]])
    assert await ledger.holding(ids[:3]) == []  # no rows left: the import went too
    assert [e.id for e in await ledger.holding(ids)] == [7002]


async def test_recording_again_replaces_and_keeps_no_email(store: Any) -> None:
    _, ledger, ids = store
    await ledger.record(entry(7001, ids[:2], rows=2))
    await ledger.finish(7001)
    again = entry(7001, ids[:2], rows=2)
    await ledger.record(again)  # as a retried record would: unfinished again
    assert await ledger.holding(ids[:2]) == [again]
    assert all("@" not in r.match for r in again.rows)
