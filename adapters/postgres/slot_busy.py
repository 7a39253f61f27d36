"""Busy Pardot slot-seconds per 10-second bucket in PostgreSQL: one row per bucket that every
node adds to, as every node shares the business unit's slots."""

from __future__ import annotations

from adapters.postgres.database import PostgresDatabase

KEEP_SECONDS = 3600  # older buckets are forgotten as new ones begin


class PostgresSlotBusyLog:
    """SlotBusyLog on an opened PostgresDatabase (left open on close)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def add(self, bucket: int, seconds: float) -> None:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO slot_busy (bucket, seconds) VALUES (%s, %s) ON CONFLICT (bucket)"
                " DO UPDATE SET seconds = slot_busy.seconds + excluded.seconds"
                " RETURNING seconds",
                (bucket, seconds),
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == seconds:  # a new bucket: forget the old ones
                await conn.execute(
                    "DELETE FROM slot_busy WHERE bucket < %s", (bucket - KEEP_SECONDS,)
                )

    async def busy(self, start: int, end: int) -> float:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT coalesce(sum(seconds), 0) FROM slot_busy"
                " WHERE bucket >= %s AND bucket < %s",
                (start, end),
            )
            row = await cursor.fetchone()
        return float(row[0]) if row else 0.0

    async def close(self) -> None:
        """The database belongs to whoever opened it."""
