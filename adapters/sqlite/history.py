"""The DeliveryHistory in SQLite, in the queue's file: what each event came to, and when.

One row per settled attempt (the prospect it reached and the fields it wrote), a count per
minute and outcome for the status page's chart (so a refresh reads sixty rows, not an hour of
events), and the field ids events carried, for `fields check`. Rows older than the retention
are dropped as new ones arrive, at most once an hour.

`prospects_with_email` and `identities_of` read the prospect store's tables (same file,
`prospect_links` and `prospect_fields`): they answer `explain`, never a delivery.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from adapters.shared.field_json import fields_json
from adapters.shared.history_tally import MINUTES_KEPT, PurgeSchedule, minute_of, tally
from adapters.sqlite.database import SQLiteDatabase, from_micros, to_micros
from adapters.sqlite.migrations import Step, migrate
from domain.ports import HistoryEntry

SCHEMA_COMPONENT = "history"

_V1 = (
    """CREATE TABLE IF NOT EXISTS history (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,  -- when it was settled, microseconds since the epoch
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL,
        message_id TEXT,
        user_id TEXT,
        email TEXT,  -- lower case
        prospect TEXT,  -- the prospect store's key
        fields TEXT NOT NULL,  -- JSON object: the fields this event wrote
        source TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS history_by_prospect ON history (prospect, id)"
    " WHERE prospect IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS history_by_user ON history (user_id, id) WHERE user_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS history_by_email ON history (email, id) WHERE email IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS history_by_time ON history (at)",
    """CREATE TABLE IF NOT EXISTS history_minutes (
        minute INTEGER NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (minute, outcome)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS fields_seen (
        field TEXT PRIMARY KEY, last_seen INTEGER NOT NULL, events INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)
# Numbered steps (adapters.sqlite.migrations); add new ones at the end, never edit old ones.
MIGRATIONS: tuple[Step, ...] = (_V1,)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SQLiteDeliveryHistory:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    def __init__(
        self,
        path: str | Path | SQLiteDatabase,
        *,
        retention: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))
        self._retention = retention
        self._clock = clock
        self._purges = PurgeSchedule()

    async def record(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        purge_before = self._purges.due(self._clock())
        await self._db.write(partial(self._record, list(entries), purge_before))

    async def touching(
        self,
        *,
        prospects: Sequence[str],
        user_ids: Sequence[str],
        emails: Sequence[str],
        limit: int = 20,
    ) -> list[HistoryEntry]:
        wanted = {
            "prospect": list(prospects),
            "user_id": list(user_ids),
            "email": [e.lower() for e in emails],
        }
        return await self._db.read(partial(_touching, wanted, limit))

    async def purge(self, settled_before: datetime) -> int:
        return await self._db.write(partial(_purge, to_micros(settled_before)))

    async def per_minute(self, since: datetime) -> dict[datetime, dict[str, int]]:
        return await self._db.read(partial(_per_minute, to_micros(minute_of(since))))

    async def fields_seen(self, since: datetime) -> dict[str, int]:
        return await self._db.read(partial(_fields_seen, to_micros(since)))

    async def prospects_with_email(self, email: str) -> list[str]:
        return await self._db.read(partial(_prospects_with_email, email.strip().lower()))

    async def identities_of(self, prospect: str) -> list[str]:
        return await self._db.read(partial(_identities_of, prospect))

    async def note(self, key: str, value: Any) -> None:
        await self._db.write(partial(_note, key, None if value is None else json.dumps(value)))

    async def noted(self, key: str) -> Any:
        text = await self._db.read(partial(_noted, key))
        return None if text is None else json.loads(text)

    async def close(self) -> None:
        if self._owned:
            await self._db.close()

    # On the database thread, inside its transaction.

    def _record(
        self, entries: list[HistoryEntry], purge_before: datetime | None, conn: sqlite3.Connection
    ) -> None:
        conn.executemany(
            "INSERT INTO history (at, outcome, reason, message_id, user_id, email, prospect,"
            " fields, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    to_micros(e.at),
                    e.outcome,
                    e.reason,
                    e.message_id,
                    e.user_id,
                    e.email.lower() if e.email else None,
                    e.prospect,
                    fields_json(e.fields),
                    e.source,
                )
                for e in entries
            ],
        )
        counted = tally(entries)
        conn.executemany(
            "INSERT INTO history_minutes (minute, outcome, n) VALUES (?, ?, ?)"
            " ON CONFLICT (minute, outcome) DO UPDATE SET n = n + excluded.n",
            [(to_micros(m), outcome, n) for (m, outcome), n in counted.minutes.items()],
        )
        conn.executemany(
            "INSERT INTO fields_seen (field, last_seen, events) VALUES (?, ?, ?)"
            " ON CONFLICT (field) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen),"
            " events = events + excluded.events",
            [(name, to_micros(last), count) for name, (last, count) in counted.seen.items()],
        )
        if purge_before is not None:
            _purge(to_micros(purge_before - self._retention), conn)
            conn.execute(
                "DELETE FROM history_minutes WHERE minute < ?",
                (to_micros(purge_before - MINUTES_KEPT),),
            )


def _purge(cutoff: int, conn: sqlite3.Connection) -> int:
    purged = conn.execute("DELETE FROM history WHERE at < ?", (cutoff,)).rowcount
    conn.execute("DELETE FROM fields_seen WHERE last_seen < ?", (cutoff,))
    return purged


def _entry(row: tuple[Any, ...]) -> HistoryEntry:
    at, outcome, reason, message_id, user_id, email, prospect, fields, source = row
    written = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(fields).items()}
    return HistoryEntry(
        from_micros(at), outcome, reason, message_id, user_id, email, prospect, written, source
    )


def _touching(
    wanted: dict[str, list[str]], limit: int, conn: sqlite3.Connection
) -> list[HistoryEntry]:
    ids: set[int] = set()
    for column, values in wanted.items():
        for value in values:
            # One indexed walk per value, newest first (the partial indexes above).
            ids.update(
                i
                for (i,) in conn.execute(
                    f"SELECT id FROM history WHERE {column} = ? ORDER BY id DESC LIMIT ?",  # noqa: S608
                    (value, limit),
                )
            )
    newest = sorted(ids, reverse=True)[:limit]
    if not newest:
        return []
    rows = conn.execute(
        "SELECT at, outcome, reason, message_id, user_id, email, prospect, fields, source"
        " FROM history WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id DESC",
        (json.dumps(newest),),
    )
    return [_entry(row) for row in rows]


def _per_minute(since: int, conn: sqlite3.Connection) -> dict[datetime, dict[str, int]]:
    found: dict[datetime, dict[str, int]] = {}
    for minute, outcome, n in conn.execute(
        "SELECT minute, outcome, n FROM history_minutes WHERE minute >= ? ORDER BY minute",
        (since,),
    ):
        found.setdefault(from_micros(minute), {})[outcome] = n
    return found


def _fields_seen(since: int, conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT field, events FROM fields_seen WHERE last_seen >= ? ORDER BY field", (since,)
    )
    return dict(rows.fetchall())


def _prospects_with_email(email: str, conn: sqlite3.Connection) -> list[str]:
    keys = [
        prospect
        for (prospect,) in conn.execute(
            "SELECT prospect FROM prospect_fields WHERE field = 'email'"
            " AND lower(json_extract(value, '$')) = ?",
            (email,),
        )
    ]
    if conn.execute(
        "SELECT 1 FROM prospect_fields WHERE prospect = ? LIMIT 1", (f"email:{email}",)
    ).fetchone():
        keys.append(f"email:{email}")
    keys += [
        prospect
        for (prospect,) in conn.execute(
            "SELECT DISTINCT prospect FROM history WHERE email = ? AND prospect IS NOT NULL",
            (email,),
        )
    ]
    return list(dict.fromkeys(keys))


def _identities_of(prospect: str, conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT identity FROM prospect_links WHERE prospect = ? ORDER BY identity", (prospect,)
    )
    return [identity for (identity,) in rows]


def _note(key: str, text: str | None, conn: sqlite3.Connection) -> None:
    if text is None:
        conn.execute("DELETE FROM notes WHERE key = ?", (key,))
    else:
        conn.execute(
            "INSERT INTO notes (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, text),
        )


def _noted(key: str, conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM notes WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])
