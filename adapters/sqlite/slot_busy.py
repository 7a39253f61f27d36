"""Busy Pardot slot-seconds per 10-second bucket in SQLite, usually the queue's own file:
every process that shares the file adds to the same buckets, as they share the slots.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.migrations import Step, migrate

SCHEMA_COMPONENT = "slot_busy"
_V1 = (
    """CREATE TABLE IF NOT EXISTS slot_busy (
        bucket INTEGER PRIMARY KEY,  -- Unix seconds, a multiple of 10
        seconds REAL NOT NULL
    )""",
)
# Numbered steps (adapters.sqlite.migrations); add new ones at the end, never edit old ones.
MIGRATIONS: tuple[Step, ...] = (_V1,)
KEEP_SECONDS = 3600  # older buckets are forgotten as new ones begin


class SQLiteSlotBusyLog:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    def __init__(self, path: str | Path | SQLiteDatabase) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))

    async def add(self, bucket: int, seconds: float) -> None:
        await self._db.write(partial(_add, bucket, seconds))

    async def busy(self, start: int, end: int) -> float:
        return await self._db.read(partial(_busy, start, end))

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


def _add(bucket: int, seconds: float, conn: sqlite3.Connection) -> None:
    row = conn.execute(
        "INSERT INTO slot_busy (bucket, seconds) VALUES (?, ?) ON CONFLICT (bucket)"
        " DO UPDATE SET seconds = seconds + excluded.seconds RETURNING seconds",
        (bucket, seconds),
    ).fetchone()
    if row[0] == seconds:  # a new bucket: forget the old ones
        conn.execute("DELETE FROM slot_busy WHERE bucket < ?", (bucket - KEEP_SECONDS,))


def _busy(start: int, end: int, conn: sqlite3.Connection) -> float:
    row = conn.execute(
        "SELECT coalesce(sum(seconds), 0) FROM slot_busy WHERE bucket >= ? AND bucket < ?",
        (start, end),
    ).fetchone()
    return float(row[0])
