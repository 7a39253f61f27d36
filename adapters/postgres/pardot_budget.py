"""Pardot calls per account day in PostgreSQL: one counter row per day that every node adds
to, as Pardot counts every caller of the business unit."""

from __future__ import annotations

from datetime import date

from adapters.postgres.database import PostgresDatabase

KEEP_DAYS = 40  # older days are forgotten as new ones begin


class PostgresApiCallCounts:
    """ApiCallCounts on an opened PostgresDatabase (left open on close)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def add(self, day: str, calls: int = 1) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO api_calls (day, used) VALUES (%s, %s) ON CONFLICT (day)"
                " DO UPDATE SET used = api_calls.used + excluded.used RETURNING used",
                (date.fromisoformat(day), calls),
            )
            row = await cursor.fetchone()
            used = int(row[0]) if row else calls
            if used == calls:  # a new day: forget the oldest
                await conn.execute(
                    "DELETE FROM api_calls WHERE day NOT IN"
                    " (SELECT day FROM api_calls ORDER BY day DESC LIMIT %s)",
                    (KEEP_DAYS,),
                )
        return used

    async def used(self, day: str) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT used FROM api_calls WHERE day = %s", (date.fromisoformat(day),)
            )
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        """The database belongs to whoever opened it."""
