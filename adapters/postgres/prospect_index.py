"""The ProspectIndex in PostgreSQL, shared by every node: the SQLite index's twin (one row per
prospect, searched by email in lower case, fid and lookup value; the rest as JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from adapters.postgres.database import PostgresDatabase
from adapters.shared.index_rows import index_row, prospect_from_row
from adapters.shared.index_state import state_from_json, state_to_json
from domain.ports import IndexState
from domain.prospect import Prospect


class PostgresProspectIndex:
    """A ProspectIndex on an opened PostgresDatabase (left open on close)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def state(self) -> IndexState:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT value FROM prospect_index_state WHERE name = 'state'"
            )
            row = await cursor.fetchone()
        if row is None:
            return IndexState()
        return state_from_json(row[0])

    async def clock(self) -> datetime:
        """The server's clock: the one every node's event arrivals were stamped with."""
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT clock_timestamp()")
            row = await cursor.fetchone()
        assert row is not None
        moment: datetime = row[0]
        return moment

    async def save_state(self, state: IndexState) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO prospect_index_state (name, value) VALUES ('state', %s)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (state_to_json(state),),
            )

    async def put(self, rows: Sequence[tuple[Prospect, str | None]]) -> None:
        if not rows:
            return
        # By id, last one wins within a call; sorted so nodes lock rows in one order.
        given = sorted({p.id: index_row(p, v) for p, v in rows}.values())
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO prospect_index (id, email, fid, lookup, data)"
                " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[],"
                " %s::text[]) ON CONFLICT (id) DO UPDATE SET email = excluded.email,"
                " fid = excluded.fid, lookup = excluded.lookup, data = excluded.data",
                tuple([row[n] for row in given] for n in range(5)),
            )

    async def drop(self, ids: Sequence[int]) -> None:
        if ids:
            async with self._db.connection() as conn:
                await conn.execute("DELETE FROM prospect_index WHERE id = ANY(%s)", (list(ids),))

    async def by_ids(self, ids: Sequence[int]) -> dict[int, Prospect]:
        return {p.id: p for p in await self._select("id", "bigint", list(ids))}

    async def by_emails(self, emails: Sequence[str]) -> dict[str, list[Prospect]]:
        keys = sorted({e.strip().lower() for e in emails})
        found: dict[str, list[Prospect]] = {}
        for prospect in await self._select("email", "text", keys):
            found.setdefault((prospect.email or "").strip().lower(), []).append(prospect)
        return found

    async def by_fid(self, fid: str) -> Prospect | None:
        rows = await self._select("fid", "text", [fid])
        return rows[0] if rows else None

    async def holding(self, value: str) -> list[Prospect]:
        return await self._select("lookup", "text", [value])

    async def count(self) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT count(*) FROM prospect_index")
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def clear(self) -> None:
        async def clear(conn: AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM prospect_index")
            await conn.execute("DELETE FROM prospect_index_state")

        await self._db.transact(clear)

    async def rows_after(self, prospect_id: int, limit: int) -> list[Prospect]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT id, fid, data FROM prospect_index WHERE id > %s ORDER BY id LIMIT %s",
                (prospect_id, limit),
            )
            return [prospect_from_row(*row) for row in await cursor.fetchall()]

    async def _select(self, column: str, kind: str, values: list[Any]) -> list[Prospect]:
        assert column in {"id", "email", "fid", "lookup"} and kind in {"bigint", "text"}
        if not values:
            return []
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT id, fid, data FROM prospect_index WHERE {column} = ANY(%s::{kind}[])"  # noqa: S608
                " ORDER BY id",
                (values,),
            )
            return [prospect_from_row(*row) for row in await cursor.fetchall()]

    async def close(self) -> None:
        """The database belongs to whoever opened it."""
