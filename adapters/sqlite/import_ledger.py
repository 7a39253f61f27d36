"""The imports in flight in SQLite, in the queue's own file: every process on the machine
finds an import another one recorded before it died (domain/ports/ledger.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from functools import partial
from pathlib import Path

from adapters.shared.ledger_rows import columns_text, imports_from, lines_of
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.migrations import Step, migrate
from domain.ports import RecordedImport

SCHEMA_COMPONENT = "import_ledger"
_V1 = (
    """CREATE TABLE IF NOT EXISTS import_ledger (
        import_id INTEGER PRIMARY KEY,  -- Pardot's id of the import
        match TEXT NOT NULL,  -- the match column
        columns TEXT NOT NULL,  -- JSON: the columns written (names, never values)
        finished INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS import_ledger_rows (
        import_id INTEGER NOT NULL,
        event_id INTEGER NOT NULL,
        row_no INTEGER NOT NULL,
        match TEXT NOT NULL,  -- digest of the match value as sent, never the email
        prospect TEXT NOT NULL,  -- digest of the prospect store's key
        prospect_id INTEGER,
        PRIMARY KEY (import_id, event_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS import_ledger_by_event ON import_ledger_rows (event_id)",
    "CREATE INDEX IF NOT EXISTS import_ledger_by_row ON import_ledger_rows (import_id, row_no)",
    "CREATE INDEX IF NOT EXISTS import_ledger_by_prospect ON import_ledger_rows (prospect)",
)
# Numbered steps (adapters.sqlite.migrations); add new ones at the end, never edit old ones.
MIGRATIONS: tuple[Step, ...] = (_V1,)


class SQLiteImportLedger:
    """ImportLedger over the queue's open SQLiteDatabase (its `events` table must exist)."""

    def __init__(self, path: str | Path | SQLiteDatabase) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))

    async def record(self, entry: RecordedImport) -> None:
        await self._db.write(partial(_record, entry))

    async def holding(self, event_ids: Collection[int]) -> list[RecordedImport]:
        if not event_ids:
            return []
        return await self._db.read(partial(_holding, json.dumps(sorted(event_ids))))

    async def finish(self, import_id: int) -> None:
        await self._db.write(
            lambda conn: conn.execute(
                "UPDATE import_ledger SET finished = 1 WHERE import_id = ?", (import_id,)
            )
        )

    async def waiting_on(self, prospects: Collection[str]) -> dict[str, int]:
        if not prospects:
            return {}
        return await self._db.read(partial(_waiting_on, json.dumps(sorted(prospects))))

    async def forget(self, event_ids: Sequence[int]) -> None:
        if event_ids:
            await self._db.write(partial(_forget, json.dumps(sorted(event_ids))))

    async def unfinished(self) -> list[RecordedImport]:
        return await self._db.read(_unfinished)

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


def _record(entry: RecordedImport, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO import_ledger (import_id, match, columns, finished) VALUES (?, ?, ?, 0)"
        " ON CONFLICT (import_id) DO UPDATE SET match = excluded.match,"
        " columns = excluded.columns, finished = 0",
        (entry.id, entry.match, columns_text(entry)),
    )
    conn.executemany(
        "INSERT OR REPLACE INTO import_ledger_rows"
        " (import_id, event_id, row_no, match, prospect, prospect_id) VALUES (?, ?, ?, ?, ?, ?)",
        lines_of(entry),
    )


_HEADS = "SELECT import_id, match, columns, finished FROM import_ledger"
_LINES = "SELECT r.import_id, r.event_id, r.row_no, r.match, r.prospect, r.prospect_id"


def _holding(event_ids: str, conn: sqlite3.Connection) -> list[RecordedImport]:
    hits = conn.execute(
        "SELECT DISTINCT import_id, row_no FROM import_ledger_rows"
        " WHERE event_id IN (SELECT value FROM json_each(?))",
        (event_ids,),
    ).fetchall()
    # The rows hit, each found by its own index (without statistics SQLite would walk
    # every row of the import for each).
    lines = conn.execute(
        f"{_LINES} FROM json_each(?) hit CROSS JOIN import_ledger_rows r"
        " INDEXED BY import_ledger_by_row"
        " ON r.import_id = json_extract(hit.value, '$[0]')"
        " AND r.row_no = json_extract(hit.value, '$[1]')",
        (json.dumps([list(hit) for hit in hits]),),
    ).fetchall()
    heads = conn.execute(
        f"{_HEADS} WHERE import_id IN (SELECT value FROM json_each(?))",  # noqa: S608
        (json.dumps(sorted({hit[0] for hit in hits})),),
    ).fetchall()
    return imports_from(heads, lines)


def _unfinished(conn: sqlite3.Connection) -> list[RecordedImport]:
    heads = conn.execute(f"{_HEADS} WHERE finished = 0").fetchall()
    lines = conn.execute(
        f"{_LINES} FROM import_ledger_rows r"  # noqa: S608
        " WHERE r.import_id IN (SELECT import_id FROM import_ledger WHERE finished = 0)"
    ).fetchall()
    return imports_from(heads, lines)


def _waiting_on(prospects: str, conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT r.prospect, r.import_id FROM import_ledger_rows r"
        " JOIN import_ledger i ON i.import_id = r.import_id"
        " WHERE NOT i.finished AND r.prospect IN (SELECT value FROM json_each(?))"
        "   AND EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id"
        "     AND e.state IN ('pending', 'retry', 'leased'))",
        (prospects,),
    ).fetchall()
    return {prospect: int(import_id) for prospect, import_id in rows}


def _forget(event_ids: str, conn: sqlite3.Connection) -> None:
    conn.execute(
        "DELETE FROM import_ledger_rows WHERE event_id IN (SELECT value FROM json_each(?))"
        " AND import_id IN (SELECT import_id FROM import_ledger WHERE finished)",
        (event_ids,),
    )
    conn.execute(
        "DELETE FROM import_ledger WHERE finished AND NOT EXISTS"
        " (SELECT 1 FROM import_ledger_rows r WHERE r.import_id = import_ledger.import_id)"
    )
