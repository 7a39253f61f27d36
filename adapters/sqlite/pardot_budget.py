"""Pardot calls per account day in SQLite, usually the queue's own file: every process that
shares the file adds to the same count, as Pardot counts every caller of the business unit.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.migrations import Step, migrate

SCHEMA_COMPONENT = "api_budget"
_V1 = (
    """CREATE TABLE IF NOT EXISTS api_calls (
        day TEXT PRIMARY KEY,  -- ISO date in the account's zone
        used INTEGER NOT NULL
    ) WITHOUT ROWID""",
)
# Numbered steps (adapters.sqlite.migrations); add new ones at the end, never edit old ones.
MIGRATIONS: tuple[Step, ...] = (_V1,)
KEEP_DAYS = 40  # older days are forgotten as new ones begin


class SQLiteApiCallCounts:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    def __init__(self, path: str | Path | SQLiteDatabase) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))

    async def add(self, day: str, calls: int = 1) -> int:
        return await self._db.write(partial(_add, day, calls))

    async def used(self, day: str) -> int:
        return await self._db.read(partial(_used, day))

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


def _add(day: str, calls: int, conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "INSERT INTO api_calls (day, used) VALUES (?, ?)"
        " ON CONFLICT (day) DO UPDATE SET used = used + excluded.used RETURNING used",
        (day, calls),
    ).fetchone()
    if row[0] == calls:  # a new day: forget the oldest
        conn.execute(
            "DELETE FROM api_calls WHERE day NOT IN"
            " (SELECT day FROM api_calls ORDER BY day DESC LIMIT ?)",
            (KEEP_DAYS,),
        )
    return int(row[0])


def _used(day: str, conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT used FROM api_calls WHERE day = ?", (day,)).fetchone()
    return int(row[0]) if row else 0
