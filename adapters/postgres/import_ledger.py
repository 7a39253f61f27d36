"""The imports in flight in PostgreSQL: any node finds an import another node recorded before
it died, by the ids of the events it leased (domain/ports/ledger.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from psycopg import AsyncConnection

from adapters.postgres.database import PostgresDatabase
from adapters.shared.ledger_rows import columns_text, imports_from, lines_of
from domain.ports import RecordedImport


class PostgresImportLedger:
    """ImportLedger on an opened PostgresDatabase (left open on close)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def record(self, entry: RecordedImport) -> None:
        async def work(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO import_ledger (import_id, match, columns, finished)"
                " VALUES (%s, %s, %s, false) ON CONFLICT (import_id) DO UPDATE SET"
                " match = excluded.match, columns = excluded.columns, finished = false",
                (entry.id, entry.match, columns_text(entry)),
            )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO import_ledger_rows"
                    " (import_id, event_id, row_no, match, prospect, prospect_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (import_id, event_id)"
                    " DO UPDATE SET row_no = excluded.row_no, match = excluded.match,"
                    " prospect = excluded.prospect, prospect_id = excluded.prospect_id",
                    lines_of(entry),
                )

        await self._db.transact(work)

    async def holding(self, event_ids: Collection[int]) -> list[RecordedImport]:
        if not event_ids:
            return []
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT r.import_id, r.event_id, r.row_no, r.match, r.prospect, r.prospect_id"
                " FROM import_ledger_rows r JOIN (SELECT DISTINCT import_id, row_no"
                "  FROM import_ledger_rows WHERE event_id = ANY(%s)) hit USING (import_id, row_no)",
                (list(event_ids),),
            )
            lines = await cursor.fetchall()
            cursor = await conn.execute(
                "SELECT import_id, match, columns, finished FROM import_ledger"
                " WHERE import_id = ANY(%s)",
                (sorted({line[0] for line in lines}),),
            )
            heads = await cursor.fetchall()
        return imports_from(heads, lines)

    async def finish(self, import_id: int) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE import_ledger SET finished = true WHERE import_id = %s", (import_id,)
            )

    async def waiting_on(self, prospects: Collection[str]) -> dict[str, int]:
        if not prospects:
            return {}
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT r.prospect, r.import_id FROM import_ledger_rows r"
                " JOIN import_ledger i USING (import_id)"
                " WHERE NOT i.finished AND r.prospect = ANY(%s)"
                "   AND EXISTS (SELECT 1 FROM events e WHERE e.id = r.event_id"
                "     AND e.state IN ('pending', 'retry', 'leased'))",
                (list(prospects),),
            )
            rows = await cursor.fetchall()
        return {prospect: int(import_id) for prospect, import_id in rows}

    async def forget(self, event_ids: Sequence[int]) -> None:
        if not event_ids:
            return

        async def work(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "DELETE FROM import_ledger_rows WHERE event_id = ANY(%s)"
                " AND import_id IN (SELECT import_id FROM import_ledger WHERE finished)",
                (list(event_ids),),
            )
            await conn.execute(
                "DELETE FROM import_ledger i WHERE finished AND NOT EXISTS"
                " (SELECT 1 FROM import_ledger_rows r WHERE r.import_id = i.import_id)"
            )

        await self._db.transact(work)

    async def unfinished(self) -> list[RecordedImport]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT import_id, match, columns, finished FROM import_ledger WHERE NOT finished"
            )
            heads = await cursor.fetchall()
            cursor = await conn.execute(
                "SELECT import_id, event_id, row_no, match, prospect, prospect_id"
                " FROM import_ledger_rows WHERE import_id = ANY(%s)",
                ([h[0] for h in heads],),
            )
            lines = await cursor.fetchall()
        return imports_from(heads, lines)

    async def close(self) -> None:
        """The database belongs to whoever opened it."""
