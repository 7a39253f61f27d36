"""Pardot calls per account day in SQLite, usually the queue's own file: every process that
shares the file adds to the same count, as Pardot counts every caller of the business unit.
The account's import files per day are counted the same way, in a table of their own.
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
FILES_COMPONENT = "import_files"
_FILES_V1 = (
    """CREATE TABLE IF NOT EXISTS import_files (
        day TEXT PRIMARY KEY,  -- ISO date in the account's zone
        used INTEGER NOT NULL
    ) WITHOUT ROWID""",
)
FILES_MIGRATIONS: tuple[Step, ...] = (_FILES_V1,)
KEEP_DAYS = 40  # older days are forgotten as new ones begin


class SQLiteApiCallCounts:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    _table, _component, _steps = "api_calls", SCHEMA_COMPONENT, MIGRATIONS

    def __init__(self, path: str | Path | SQLiteDatabase) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=self._component, steps=self._steps))

    async def add(self, day: str, calls: int = 1) -> int:
        return await self._db.write(partial(_add, self._table, day, calls))

    async def used(self, day: str) -> int:
        return await self._db.read(partial(_used, self._table, day))

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


class SQLiteImportFileCounts(SQLiteApiCallCounts):
    """The account's import files per day (`domain.import_files`), beside the calls."""

    _table, _component, _steps = "import_files", FILES_COMPONENT, FILES_MIGRATIONS


# `table` is one of the two class constants above, never input.
def _add(table: str, day: str, calls: int, conn: sqlite3.Connection) -> int:
    row = conn.execute(
        f"INSERT INTO {table} (day, used) VALUES (?, ?)"  # noqa: S608
        " ON CONFLICT (day) DO UPDATE SET used = used + excluded.used RETURNING used",
        (day, calls),
    ).fetchone()
    if row[0] == calls:  # a new day: forget the oldest
        conn.execute(
            f"DELETE FROM {table} WHERE day NOT IN"  # noqa: S608
            f" (SELECT day FROM {table} ORDER BY day DESC LIMIT ?)",
            (KEEP_DAYS,),
        )
    return int(row[0])


def _used(table: str, day: str, conn: sqlite3.Connection) -> int:
    row = conn.execute(f"SELECT used FROM {table} WHERE day = ?", (day,)).fetchone()  # noqa: S608
    return int(row[0]) if row else 0
