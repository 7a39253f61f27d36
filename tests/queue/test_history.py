"""The delivery history (SQLite, PostgreSQL): per event, per prospect, per minute; kept for
the retention. Each test gets the history with a prospect store on the same store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.postgres.database import PostgresDatabase
from adapters.postgres.history import PostgresDeliveryHistory
from adapters.postgres.prospect_store import PostgresProspectStore
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.history import SQLiteDeliveryHistory
from adapters.sqlite.prospect_store import SQLiteProspectStore
from adapters.sqlite.queue import SQLiteEventQueue
from domain.ports import FieldStamp, HistoryEntry
from tests.postgres import fresh_schema
from tests.queue.conftest import Clock

# (history options) -> (history, prospect store) on one store
Backend = Callable[..., Any]


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        db = SQLiteDatabase(tmp_path / "q.db")

        async def sqlite(**options: Any) -> tuple[Any, Any]:
            return SQLiteDeliveryHistory(db, clock=clock, **options), SQLiteProspectStore(db)

        yield sqlite
        await db.close()
    else:
        with fresh_schema() as url:
            async with PostgresDatabase(url) as database:

                async def postgres(**options: Any) -> tuple[Any, Any]:
                    history = PostgresDeliveryHistory(database, clock=clock, **options)
                    return history, PostgresProspectStore(database)

                yield postgres


def _entry(clock: Clock, outcome: str, **extra: object) -> HistoryEntry:
    return HistoryEntry(at=clock.now, outcome=outcome, reason=f"because {outcome}", **extra)  # type: ignore[arg-type]


async def test_entries_are_found_by_prospect_person_or_email_newest_first(
    backend: Backend, clock: Clock
) -> None:
    history, store = await backend()
    await history.record(
        [
            _entry(clock, "delivered", message_id="m1", user_id="ada", email="Ada@Example.com",
                   prospect="7", fields={"first_name": "Ada", "tags": ("a", "b")}),
            _entry(clock, "rejected", message_id="m2", user_id="ada"),
            _entry(clock, "delivered", message_id="m3", user_id="bob", prospect="8"),
        ]
    )  # fmt: skip
    found = await history.touching(prospects=["7"], user_ids=[], emails=[])
    assert [e.message_id for e in found] == ["m1"]
    assert dict(found[0].fields) == {"first_name": "Ada", "tags": ("a", "b")}
    by_person = await history.touching(prospects=[], user_ids=["ada"], emails=[])
    assert [e.message_id for e in by_person] == ["m2", "m1"]
    by_email = await history.touching(prospects=[], user_ids=[], emails=["ada@example.com"])
    assert [e.message_id for e in by_email] == ["m1"]
    assert (
        len(await history.touching(prospects=["7", "8"], user_ids=["ada"], emails=[], limit=2)) == 2
    )

    await store.record("9", {"email": FieldStamp("ada@example.com", clock.now)})
    await store.link({"user:ada": "9", "lookup:org_id=acme": "9"})
    assert await history.prospects_with_email("ADA@example.com") == ["9", "7"]
    assert await history.identities_of("9") == ["lookup:org_id=acme", "user:ada"]


async def test_minutes_count_outcomes_and_fields_seen_count_events(
    backend: Backend, clock: Clock
) -> None:
    history, _ = await backend()
    start = clock.now
    await history.record([_entry(clock, "delivered", seen=("plan", "email"))] * 3)
    clock.advance(61)
    await history.record([_entry(clock, "retry", seen=("plan",)), _entry(clock, "delivered")])
    minutes = await history.per_minute(start - timedelta(minutes=5))
    assert minutes == {
        start.replace(second=0): {"delivered": 3},
        (start + timedelta(seconds=61)).replace(second=0): {"retry": 1, "delivered": 1},
    }
    assert await history.fields_seen(start) == {"email": 3, "plan": 4}
    assert await history.fields_seen(clock.now + timedelta(seconds=1)) == {}


async def test_old_entries_go_after_the_retention_and_notes_stay(
    backend: Backend, clock: Clock
) -> None:
    history, _ = await backend(retention=timedelta(days=1))
    await history.record([_entry(clock, "delivered", user_id="ada", seen=("plan",))])
    await history.note("progress", {"done": 3})
    clock.advance(2 * 86400)
    await history.record([_entry(clock, "delivered", user_id="bob")])
    assert await history.touching(prospects=[], user_ids=["ada"], emails=[]) == []
    assert await history.fields_seen(clock.now - timedelta(days=30)) == {}
    assert await history.noted("progress") == {"done": 3}
    await history.note("progress", None)
    assert await history.noted("progress") is None


async def test_an_existing_queue_file_gains_the_history(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.db"
    queue = SQLiteEventQueue(path, clock=clock)
    await queue.put([{"type": "identify", "userId": "u", "messageId": "m"}])
    await queue.close()
    history = SQLiteDeliveryHistory(path, clock=clock)
    await history.record([_entry(clock, "delivered", user_id="u")])
    await history.close()
    with sqlite3.connect(path) as conn:
        versions = dict(conn.execute("SELECT component, version FROM schema_versions"))
        assert versions["history"] == 1 and versions["queue"] >= 3
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
