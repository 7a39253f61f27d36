"""De-duplication per sender, versioned schema migrations, and counts kept by the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.queue import MIGRATIONS, SQLiteEventQueue
from domain.ports import QueueFull, Settlement
from tests.queue.conftest import Clock, identify


async def test_message_ids_are_unique_per_scope_not_across_senders(queue: Any) -> None:
    assert await queue.put([identify("m1")], scope="sender-a") == 1
    assert await queue.put([identify("m1")], scope="sender-b") == 1
    assert await queue.put([identify("m1")], scope="sender-a") == 0
    assert await queue.put([identify("m1")]) == 1  # the open scope is a scope of its own
    assert sum((await queue.counts()).values()) == 3


async def test_a_purged_message_id_is_accepted_again_in_its_scope(queue: Any, clock: Clock) -> None:
    await queue.put([identify("m1")], scope="a")
    [event] = await queue.lease(1, 30)
    await queue.settle({event.id: Settlement("delivered", "ok")})
    clock.advance(10)
    assert await queue.purge(clock.now) == 1
    assert await queue.put([identify("m1")], scope="a") == 1


# The schema as the first release wrote it, before versions were recorded.
LEGACY_SCHEMA = (
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT UNIQUE,
        ordering_key TEXT,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        reason TEXT,
        settled_at INTEGER
    )""",
    "CREATE INDEX events_open ON events(id, due_at, ordering_key)"
    " WHERE state IN ('pending', 'retry', 'leased')",
    "CREATE INDEX events_open_by_key ON events(ordering_key, id)"
    " WHERE state IN ('pending', 'retry', 'leased')",
    "CREATE INDEX events_by_state ON events(state, id)",
    "CREATE TABLE queue_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def legacy_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    for statement in LEGACY_SCHEMA:
        conn.execute(statement)
    rows = [
        (1, "m1", "u1", '{"type":"identify","messageId":"m1","userId":"u1"}', "delivered"),
        (2, "m2", "u2", '{"type":"identify","messageId":"m2","userId":"u2"}', "pending"),
        (3, "m3", "u3", '{"type":"identify","messageId":"m3","userId":"u3"}', "dead"),
        (4, "m4", "u4", '{"type":"identify","messageId":"m4","userId":"u4"}', "pending"),
    ]
    conn.executemany(
        "INSERT INTO events (id, message_id, ordering_key, payload, state, received_at, due_at)"
        " VALUES (?, ?, ?, ?, ?, 0, 0)",
        rows,
    )
    conn.execute("DELETE FROM events WHERE id = 4")  # purged: its id must never come back
    conn.execute("INSERT INTO queue_settings VALUES ('paused_until', '2024-05-01T00:00:00+00:00')")
    conn.commit()
    conn.close()


def versions(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT component, version FROM schema_versions"))


async def test_a_queue_file_from_before_versions_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    legacy_file(path)
    async with SQLiteEventQueue(path) as queue:
        counts = await queue.counts()
        assert (counts["delivered"], counts["pending"], counts["dead"]) == (1, 1, 1)
        assert await queue.paused_until() is not None
        assert await queue.put([identify("m1")]) == 0  # old rows keep de-duplicating
        assert await queue.put([identify("m1")], scope="a-write-key") == 1
        await queue.pause_until(None)
        leased = await queue.lease(10, 30)
        assert sorted(e.payload["messageId"] for e in leased) == ["m1", "m2"]
        assert max(e.id for e in leased) > 4  # the purged id 4 is not reused after the rebuild
    assert versions(path) == {"queue": len(MIGRATIONS)}


async def test_opening_a_migrated_file_again_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    legacy_file(path)
    for _ in range(2):
        async with SQLiteEventQueue(path) as queue:
            assert sum((await queue.counts()).values()) == 3
    assert versions(path) == {"queue": len(MIGRATIONS)}


async def test_a_file_from_a_newer_release_is_refused_with_a_clear_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    async with SQLiteEventQueue(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'queue'")
    queue = SQLiteEventQueue(path)
    with pytest.raises(RuntimeError, match="version 99, newer than this release"):
        await queue.counts()
    await queue.close()


async def test_counts_come_from_kept_counters_not_a_scan(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "q.db")
    queue = SQLiteEventQueue(db)
    await queue.put([identify(f"m{i}", user=f"u{i}") for i in range(50)])
    statements: list[str] = []
    await db.read(lambda conn: conn.set_trace_callback(statements.append))
    assert (await queue.counts())["pending"] == 50
    await db.read(lambda conn: conn.set_trace_callback(None))
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert reads and not [s for s in reads if "events" in s.replace("event_counts", "")]
    await db.close()


def ground_truth(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM events GROUP BY state"))


async def test_counters_stay_exact_through_every_change_from_two_connections(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "q.db"
    first = SQLiteEventQueue(path, clock=clock)
    second = SQLiteEventQueue(path, clock=clock)  # another connection: another process
    try:
        await first.put([identify(f"m{i}", user=f"u{i}") for i in range(30)])
        await second.put([identify(f"m{i}", user=f"u{i}") for i in range(20, 40)], scope="b")
        leased = await second.lease(25, 30)
        await first.settle(
            {
                e.id: Settlement(state, "x", clock.now)
                for e, state in zip(
                    leased, ["delivered", "retry", "dead", "skipped", "rejected"] * 5, strict=False
                )
            }
        )
        await second.requeue_dead()
        clock.advance(60)
        await first.purge(clock.now)
        expected = ground_truth(path)
        for queue in (first, second):
            counts = await queue.counts()
            assert {s: n for s, n in counts.items() if n} == expected
    finally:
        await first.close()
        await second.close()


async def test_the_backlog_limit_sees_other_connections_at_once(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = SQLiteEventQueue(path, max_pending=10)
    second = SQLiteEventQueue(path, max_pending=10)
    try:
        await second.put([identify("warm-up")])  # counted once, then trusted for a while
        await first.put([identify(f"m{i}") for i in range(9)])
        with pytest.raises(QueueFull):
            await second.put([identify("one-too-many")])
    finally:
        await first.close()
        await second.close()
