"""The DeliveryHistory in PostgreSQL, beside the queue: what each event came to, and when.

The SQLite history's twin (see its docstring): one row per settled attempt, a count per
minute and outcome, the field ids events carried, small notes. Every node writes here, so the
status page and `explain` see the deliveries of all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from adapters.postgres.database import PostgresDatabase
from adapters.shared.field_json import fields_json
from adapters.shared.history_tally import MINUTES_KEPT, PurgeSchedule, minute_of, tally
from domain.ports import HistoryEntry

_COLUMNS = "at, outcome, reason, message_id, user_id, email, prospect, fields, source"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PostgresDeliveryHistory:
    """A DeliveryHistory on an opened PostgresDatabase (left open on close)."""

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        retention: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._db = database
        self._retention = retention
        self._clock = clock
        self._purges = PurgeSchedule()

    async def record(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        purge_before = self._purges.due(self._clock())
        counted = tally(entries)

        async def write(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                f"INSERT INTO history ({_COLUMNS}) SELECT * FROM unnest("  # noqa: S608
                "%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::text[], %s::text[])",
                _columns(entries),
            )
            ordered = sorted(counted.minutes.items())
            await conn.execute(
                "INSERT INTO history_minutes (minute, outcome, n)"
                " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bigint[])"
                " ON CONFLICT (minute, outcome) DO UPDATE SET n = history_minutes.n + excluded.n",
                (
                    [m for (m, _), _ in ordered],
                    [o for (_, o), _ in ordered],
                    [n for _, n in ordered],
                ),
            )
            fields = sorted(counted.seen.items())
            if fields:
                await conn.execute(
                    "INSERT INTO fields_seen (field, last_seen, events)"
                    " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[])"
                    " ON CONFLICT (field) DO UPDATE SET"
                    " last_seen = greatest(fields_seen.last_seen, excluded.last_seen),"
                    " events = fields_seen.events + excluded.events",
                    (
                        [f for f, _ in fields],
                        [t for _, (t, _) in fields],
                        [n for _, (_, n) in fields],
                    ),
                )
            if purge_before is not None:
                cutoff = purge_before - self._retention
                await conn.execute("DELETE FROM history WHERE at < %s", (cutoff,))
                await conn.execute("DELETE FROM fields_seen WHERE last_seen < %s", (cutoff,))
                await conn.execute(
                    "DELETE FROM history_minutes WHERE minute < %s", (purge_before - MINUTES_KEPT,)
                )

        await self._db.transact(write)

    async def purge(self, settled_before: datetime) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute("DELETE FROM history WHERE at < %s", (settled_before,))
            await conn.execute("DELETE FROM fields_seen WHERE last_seen < %s", (settled_before,))
            return cursor.rowcount

    async def touching(
        self,
        *,
        prospects: Sequence[str],
        user_ids: Sequence[str],
        emails: Sequence[str],
        limit: int = 20,
    ) -> list[HistoryEntry]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"""SELECT {_COLUMNS} FROM history WHERE id IN (
                    SELECT id FROM (
                        SELECT id FROM history WHERE prospect = ANY(%(p)s)
                        UNION SELECT id FROM history WHERE user_id = ANY(%(u)s)
                        UNION SELECT id FROM history WHERE email = ANY(%(e)s)
                    ) AS touched ORDER BY id DESC LIMIT %(limit)s)
                ORDER BY id DESC""",  # noqa: S608
                {
                    "p": list(prospects),
                    "u": list(user_ids),
                    "e": [e.lower() for e in emails],
                    "limit": limit,
                },
            )
            return [_entry(row) for row in await cursor.fetchall()]

    async def per_minute(self, since: datetime) -> dict[datetime, dict[str, int]]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT minute, outcome, n FROM history_minutes WHERE minute >= %s ORDER BY minute",
                (minute_of(since),),
            )
            rows = await cursor.fetchall()
        found: dict[datetime, dict[str, int]] = {}
        for minute, outcome, n in rows:
            found.setdefault(minute, {})[outcome] = int(n)
        return found

    async def fields_seen(self, since: datetime) -> dict[str, int]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT field, events FROM fields_seen WHERE last_seen >= %s ORDER BY field",
                (since,),
            )
            return {field: int(n) for field, n in await cursor.fetchall()}

    async def prospects_with_email(self, email: str) -> list[str]:
        email = email.strip().lower()
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT prospect FROM prospect_fields WHERE field = 'email'"
                " AND lower(value::json #>> '{}') = %s",
                (email,),
            )
            keys = [prospect for (prospect,) in await cursor.fetchall()]
            cursor = await conn.execute(
                "SELECT 1 FROM prospect_fields WHERE prospect = %s LIMIT 1", (f"email:{email}",)
            )
            if await cursor.fetchone():
                keys.append(f"email:{email}")
            cursor = await conn.execute(
                "SELECT DISTINCT prospect FROM history WHERE email = %s AND prospect IS NOT NULL",
                (email,),
            )
            keys += [prospect for (prospect,) in await cursor.fetchall()]
        return list(dict.fromkeys(keys))

    async def identities_of(self, prospect: str) -> list[str]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT identity FROM prospect_links WHERE prospect = %s ORDER BY identity",
                (prospect,),
            )
            return [identity for (identity,) in await cursor.fetchall()]

    async def note(self, key: str, value: Any) -> None:
        async with self._db.connection() as conn:
            if value is None:
                await conn.execute("DELETE FROM notes WHERE key = %s", (key,))
            else:
                await conn.execute(
                    "INSERT INTO notes (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)),
                )

    async def noted(self, key: str) -> Any:
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT value FROM notes WHERE key = %s", (key,))
            row = await cursor.fetchone()
        return None if row is None else json.loads(row[0])

    async def close(self) -> None:
        """The database belongs to whoever opened it."""


def _columns(entries: Sequence[HistoryEntry]) -> tuple[list[Any], ...]:
    return (
        [e.at for e in entries],
        [e.outcome for e in entries],
        [e.reason for e in entries],
        [e.message_id for e in entries],
        [e.user_id for e in entries],
        [e.email.lower() if e.email else None for e in entries],
        [e.prospect for e in entries],
        [fields_json(e.fields) for e in entries],
        [e.source for e in entries],
    )


def _entry(row: tuple[Any, ...]) -> HistoryEntry:
    at, outcome, reason, message_id, user_id, email, prospect, fields, source = row
    written = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(fields).items()}
    return HistoryEntry(at, outcome, reason, message_id, user_id, email, prospect, written, source)
