"""Pardot calls per account day in PostgreSQL: one counter row per day that every node adds
to, as Pardot counts every caller of the business unit. The account's import files per day
are counted the same way, in a table of their own."""

from __future__ import annotations

from datetime import date

from adapters.postgres.database import PostgresDatabase

KEEP_DAYS = 40  # older days are forgotten as new ones begin


class PostgresApiCallCounts:
    """ApiCallCounts on an opened PostgresDatabase (left open on close)."""

    _table = "api_calls"

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def add(self, day: str, calls: int = 1) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"INSERT INTO {self._table} (day, used) VALUES (%s, %s) ON CONFLICT (day)"  # noqa: S608
                f" DO UPDATE SET used = {self._table}.used + excluded.used RETURNING used",
                (date.fromisoformat(day), calls),
            )
            row = await cursor.fetchone()
            used = int(row[0]) if row else calls
            if used == calls:  # a new day: forget the oldest
                await conn.execute(
                    f"DELETE FROM {self._table} WHERE day NOT IN"  # noqa: S608
                    f" (SELECT day FROM {self._table} ORDER BY day DESC LIMIT %s)",
                    (KEEP_DAYS,),
                )
        return used

    async def used(self, day: str) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT used FROM {self._table} WHERE day = %s",  # noqa: S608
                (date.fromisoformat(day),),
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        """The database belongs to whoever opened it."""


class PostgresImportFileCounts(PostgresApiCallCounts):
    """The account's import files per day (`domain.import_files`), beside the calls."""

    _table = "import_files"
