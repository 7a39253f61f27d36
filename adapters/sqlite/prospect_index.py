"""The ProspectIndex in SQLite, usually the queue's own file and connection.

One row per prospect with the columns decisions search by (email in lower case, fid, lookup
value) and the rest (the email as Pardot spells it, field values, times) as JSON.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from adapters.shared.index_rows import index_row, prospect_from_row
from adapters.shared.index_state import state_from_json, state_to_json
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.migrations import Step, migrate
from domain.ports import IndexState
from domain.prospect import Prospect

SCHEMA_COMPONENT = "prospect_index"
_V1 = (
    """CREATE TABLE IF NOT EXISTS prospect_index (
        id INTEGER PRIMARY KEY,
        email TEXT,  -- lower case, for searching
        fid TEXT,
        lookup TEXT,  -- the lookup field's value as Pardot stores it
        data TEXT NOT NULL  -- JSON: email as spelled, fields, created_at, updated_at
    )""",
    "CREATE INDEX IF NOT EXISTS prospect_index_by_email ON prospect_index (email)",
    "CREATE INDEX IF NOT EXISTS prospect_index_by_fid ON prospect_index (fid)",
    "CREATE INDEX IF NOT EXISTS prospect_index_by_lookup ON prospect_index (lookup)",
    """CREATE TABLE IF NOT EXISTS prospect_index_state (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
)
# Numbered steps (adapters.sqlite.migrations); add new ones at the end, never edit old ones.
MIGRATIONS: tuple[Step, ...] = (_V1,)
_CHUNK = 500  # SQLite's bound-parameter limit is higher, but keep statements small


class SQLiteProspectIndex:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    def __init__(self, path: str | Path | SQLiteDatabase) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))

    async def state(self) -> IndexState:
        return await self._db.read(_state)

    async def clock(self) -> datetime:
        # Every process on the file runs on this machine: the host's clock is the shared one.
        return datetime.now(UTC)

    async def save_state(self, state: IndexState) -> None:
        await self._db.write(partial(_save_state, state_to_json(state)))

    async def put(self, rows: Sequence[tuple[Prospect, str | None]]) -> None:
        if rows:
            await self._db.write(partial(_put, [index_row(p, v) for p, v in rows]))

    async def drop(self, ids: Sequence[int]) -> None:
        if ids:
            await self._db.write(partial(_drop, list(ids)))

    async def by_ids(self, ids: Sequence[int]) -> dict[int, Prospect]:
        rows = await self._db.read(partial(_select_in, "id", list(ids)))
        return {p.id: p for p in rows}

    async def by_emails(self, emails: Sequence[str]) -> dict[str, list[Prospect]]:
        keys = sorted({e.strip().lower() for e in emails})
        found: dict[str, list[Prospect]] = {}
        for prospect in await self._db.read(partial(_select_in, "email", keys)):
            found.setdefault((prospect.email or "").strip().lower(), []).append(prospect)
        return found

    async def by_fid(self, fid: str) -> Prospect | None:
        rows = await self._db.read(partial(_select_in, "fid", [fid]))
        return rows[0] if rows else None

    async def holding(self, value: str) -> list[Prospect]:
        return await self._db.read(partial(_select_in, "lookup", [value]))

    async def rows_after(self, prospect_id: int, limit: int) -> list[Prospect]:
        return await self._db.read(partial(_rows_after, prospect_id, limit))

    async def count(self) -> int:
        return await self._db.read(_count)

    async def clear(self) -> None:
        await self._db.write(_clear)

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


def _state(conn: sqlite3.Connection) -> IndexState:
    row = conn.execute("SELECT value FROM prospect_index_state WHERE name = 'state'").fetchone()
    if row is None:
        return IndexState()
    return state_from_json(row[0])


def _save_state(value: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO prospect_index_state (name, value) VALUES ('state', ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (value,),
    )


def _put(
    rows: list[tuple[int, str, str | None, str | None, str]], conn: sqlite3.Connection
) -> None:
    conn.executemany(
        "INSERT INTO prospect_index (id, email, fid, lookup, data) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET email = excluded.email, fid = excluded.fid,"
        " lookup = excluded.lookup, data = excluded.data",
        rows,
    )


def _drop(ids: list[int], conn: sqlite3.Connection) -> None:
    conn.executemany("DELETE FROM prospect_index WHERE id = ?", [(i,) for i in ids])


def _select_in(column: str, values: list[Any], conn: sqlite3.Connection) -> list[Prospect]:
    assert column in {"id", "email", "fid", "lookup"}
    found: list[Prospect] = []
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT id, fid, data FROM prospect_index WHERE {column} IN ({marks}) ORDER BY id",  # noqa: S608
            chunk,
        )
        found.extend(prospect_from_row(*row) for row in rows)
    return found


def _rows_after(prospect_id: int, limit: int, conn: sqlite3.Connection) -> list[Prospect]:
    rows = conn.execute(
        "SELECT id, fid, data FROM prospect_index WHERE id > ? ORDER BY id LIMIT ?",
        (prospect_id, limit),
    )
    return [prospect_from_row(*row) for row in rows]


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM prospect_index").fetchone()[0])


def _clear(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM prospect_index")
    conn.execute("DELETE FROM prospect_index_state")
