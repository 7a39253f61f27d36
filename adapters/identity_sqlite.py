"""The IdentityMap in SQLite, usually the queue's own file and connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from pathlib import Path

from adapters.sqlite_db import SQLiteDatabase, from_micros, to_micros

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS identities (
        identity TEXT PRIMARY KEY,
        prospect_id INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS identity_field_times (
        identity TEXT NOT NULL,
        field TEXT NOT NULL,
        set_at INTEGER NOT NULL,  -- microseconds since the epoch, so max() compares instants
        PRIMARY KEY (identity, field)
    ) WITHOUT ROWID""",
)


class SQLiteIdentityMap:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    def __init__(self, path: str | Path | SQLiteDatabase) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(SCHEMA)

    async def prospect_id(self, identity: str) -> int | None:
        return await self._db.read(partial(_prospect_id, identity))

    async def remember(self, identity: str, prospect_id: int) -> None:
        await self._db.write(partial(_remember, identity, prospect_id))

    async def field_times(self, identity: str) -> dict[str, datetime]:
        return await self._db.read(partial(_field_times, identity))

    async def record_field_times(self, identity: str, times: Mapping[str, datetime]) -> None:
        rows = [(identity, name, to_micros(when)) for name, when in times.items()]
        if rows:
            await self._db.write(partial(_record, rows))

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


def _prospect_id(identity: str, conn: sqlite3.Connection) -> int | None:
    row = conn.execute(
        "SELECT prospect_id FROM identities WHERE identity = ?", (identity,)
    ).fetchone()
    return row[0] if row else None


def _remember(identity: str, prospect_id: int, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO identities (identity, prospect_id) VALUES (?, ?)"
        " ON CONFLICT (identity) DO UPDATE SET prospect_id = excluded.prospect_id",
        (identity, prospect_id),
    )


def _field_times(identity: str, conn: sqlite3.Connection) -> dict[str, datetime]:
    rows = conn.execute(
        "SELECT field, set_at FROM identity_field_times WHERE identity = ?", (identity,)
    )
    return {name: from_micros(micros) for name, micros in rows}


def _record(rows: list[tuple[str, str, int]], conn: sqlite3.Connection) -> None:
    # Keeps the newest time per field, so an older event can never pretend a field is fresh.
    conn.executemany(
        "INSERT INTO identity_field_times (identity, field, set_at) VALUES (?, ?, ?)"
        " ON CONFLICT (identity, field) DO UPDATE SET set_at = max(set_at, excluded.set_at)",
        rows,
    )
