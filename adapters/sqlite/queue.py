"""The embedded default EventQueue: accepted events in one SQLite file, leased to workers.

An event is pending, then leased, then delivered, skipped, rejected or dead, or back to
retry until `not_before`. One column, `due_at`, says when an open event may be leased next:
its arrival, its `not_before`, or the end of its lease. Settled rows are kept, so a late
duplicate of a delivered event is still recognised by its messageId. MessageIds are unique
per `scope` (the sender, see `put`), so one sender cannot make another's events vanish.

Leases are short and kept alive by the worker's heartbeat (`renew`), so a dead worker's
events come back within seconds. Every lease has an id, stored on its events; `renew` and a
settlement that names its lease only touch events still held under it, so a worker that
stalled past its lease cannot settle (or keep) what another worker took over.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from adapters.shared.event_json import event_json
from adapters.sqlite.database import MAX_BATCH, SQLiteDatabase, from_micros, to_micros
from adapters.sqlite.ingest_writer import KeptWriter, WriterGone
from adapters.sqlite.migrations import Step, migrate
from domain.ports import (
    SETTLED,
    STATES,
    QueuedEvent,
    QueueFull,
    Settlement,
    message_id_of,
    ordering_key_of,
)

__all__ = ["QueueFull", "SQLiteEventQueue"]

# Spelled out in each query: SQLite uses a partial index only when a query repeats its WHERE.
_OPEN = "state IN ('pending', 'retry', 'leased')"
_PAUSE_KEY = "paused_until"

# The schema's history: each entry brings a file from the previous version to the next.
# Never edit a released step; append one (sqlite_migrations explains the mechanism).
_INDEXES = (
    # Leasing walks open events oldest first, then fetches each chosen person's others.
    f"CREATE INDEX IF NOT EXISTS events_open ON events(id, due_at, ordering_key) WHERE {_OPEN}",
    f"CREATE INDEX IF NOT EXISTS events_open_by_key ON events(ordering_key, id) WHERE {_OPEN}",
    "CREATE INDEX IF NOT EXISTS events_by_state ON events(state, id)",
)
_V1_FIRST_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a stale settle hits nothing
        message_id TEXT UNIQUE,
        ordering_key TEXT,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        reason TEXT,
        settled_at INTEGER
    )""",
    *_INDEXES,
    "CREATE TABLE IF NOT EXISTS queue_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _v2_dedupe_scope(conn: sqlite3.Connection) -> None:
    """messageId is unique per sender (write key), no longer across senders.

    SQLite cannot drop a column's UNIQUE, so the table is rebuilt (SQLite's documented
    12-step way). Events stored before have no known sender: they share the scope ''.
    """
    (sequence,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'"
    ).fetchone()
    conn.execute(
        """CREATE TABLE events_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stale settle hits nothing
            dedupe_scope TEXT NOT NULL DEFAULT '',  -- who sent it; see webhook.py
            message_id TEXT,
            ordering_key TEXT,
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            received_at INTEGER NOT NULL,
            due_at INTEGER NOT NULL,
            reason TEXT,
            settled_at INTEGER,
            UNIQUE (dedupe_scope, message_id)
        )"""
    )
    columns = (
        "id, message_id, ordering_key, payload, state, attempts, received_at, due_at,"
        " reason, settled_at"
    )
    conn.execute(f"INSERT INTO events_v2 ({columns}) SELECT {columns} FROM events")  # noqa: S608
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_v2 RENAME TO events")
    # Keep AUTOINCREMENT's promise across the rebuild: ids of purged rows stay unused.
    conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'events'", (sequence,))
    for statement in _INDEXES:
        conn.execute(statement)


def _v3_state_counts(conn: sqlite3.Connection) -> None:
    """Counts per state kept by triggers, so /metrics and the backlog limit read a few rows
    instead of counting the table; every process writing the file keeps them right."""
    conn.execute(
        "CREATE TABLE event_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO event_counts (state, n) SELECT state, count(*) FROM events GROUP BY state"
    )
    add = (
        "INSERT INTO event_counts (state, n) VALUES (NEW.state, 1)"
        " ON CONFLICT (state) DO UPDATE SET n = n + 1;"
    )
    remove = "UPDATE event_counts SET n = n - 1 WHERE state = OLD.state;"
    conn.execute(f"CREATE TRIGGER events_counted_in AFTER INSERT ON events BEGIN {add} END")
    conn.execute(f"CREATE TRIGGER events_counted_out AFTER DELETE ON events BEGIN {remove} END")
    conn.execute(
        "CREATE TRIGGER events_counted_move AFTER UPDATE OF state ON events"
        f" WHEN OLD.state IS NOT NEW.state BEGIN {remove} {add} END"
    )


# Which lease holds a leased event: renewals and settlements name it (see the docstring).
_V4_LEASE_IDS = ("ALTER TABLE events ADD COLUMN lease_id TEXT",)

# Ingest adds to the pending count once per INSERT statement (`_insert_rows`): a trigger
# firing per row was about a sixth of an insert's time (32 rows, measured here). The row
# for 'pending' must exist for that UPDATE, whatever the table held before.
_V5_COUNT_INSERTS_PER_STATEMENT = (
    "DROP TRIGGER events_counted_in",
    "INSERT INTO event_counts (state, n) VALUES ('pending', 0) ON CONFLICT (state) DO NOTHING",
)

MIGRATIONS: tuple[Step, ...] = (
    _V1_FIRST_SCHEMA,
    _v2_dedupe_scope,
    _v3_state_counts,
    _V4_LEASE_IDS,
    _V5_COUNT_INSERTS_PER_STATEMENT,
)
SCHEMA_COMPONENT = "queue"


def utc_now() -> datetime:
    return datetime.now(UTC)


class SQLiteEventQueue:
    """`path` may be an open SQLiteDatabase to share with the identity map (left open on close).

    `group_commit=False` gives every call its own transaction and fsync: a benchmark baseline.
    """

    def __init__(
        self,
        path: str | Path | SQLiteDatabase,
        *,
        max_pending: int | None = None,
        clock: Callable[[], datetime] = utc_now,
        group_commit: bool = True,
    ) -> None:
        self._owned = not isinstance(path, SQLiteDatabase)
        if isinstance(path, SQLiteDatabase):
            self._db = path
        else:
            self._db = SQLiteDatabase(path, max_batch=MAX_BATCH if group_commit else 1)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))
        self._insert_all = Inserts(max_pending)  # one object: puts sharing it combine
        self._clock = clock
        self._writer: KeptWriter | None = None

    async def put(self, payloads: Sequence[Mapping[str, Any]], *, scope: str = "") -> int:
        """Store new events; returns how many were new (a known messageId is not).

        Puts that meet in one write transaction become one INSERT (`Inserts`): at ingest
        rates, a statement and a savepoint per request were most of the database's work.
        Once `start_writer` has run, that transaction is the writer process's.
        """
        # The real clock read directly: converting a datetime was a measurable share of a put.
        now = time.time_ns() // 1000 if self._clock is utc_now else to_micros(self._clock())
        rows = [(scope, message_id_of(p), ordering_key_of(p), event_json(p), now) for p in payloads]
        if not rows:
            return 0
        writer = self._writer.writer if self._writer is not None else None
        if writer is not None:
            line = writer.encode(rows)
            if line is not None:
                try:
                    return await writer.put(line)
                except WriterGone:
                    pass  # perhaps stored: here a known messageId counts as not new
        added: int = await self._db.write_combined(self._insert_all, rows)
        return added

    async def start_writer(self) -> bool:
        """Store puts in an ingest writer process from now on (`adapters.sqlite.ingest_writer`):
        for `serve`, whose event loop then never waits its turn with a database thread.
        False when it could not start (puts stay in this process). One that dies is
        replaced after a few seconds; meanwhile puts are stored here."""
        if self._writer is None:
            await self._db.read(lambda conn: None)  # the migrations queued before have run
            kept = KeptWriter(self._db.path, self._insert_all.max_pending)
            if await kept.start():
                self._writer = kept
        return self._writer is not None

    async def stop_writer(self) -> None:
        """Wait for the writer's answers, then end it; later puts are stored here."""
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()

    async def lease(self, limit: int, lease_seconds: float) -> list[QueuedEvent]:
        now = to_micros(self._clock())
        until = now + round(lease_seconds * 1_000_000)
        return await self._db.write(partial(_lease, now, until, limit, uuid.uuid4().hex))

    async def renew(self, lease: str, lease_seconds: float) -> int:
        until = to_micros(self._clock()) + round(lease_seconds * 1_000_000)
        return await self._db.write(partial(_renew, lease, until))

    async def settle(self, settlements: Mapping[int, Settlement]) -> set[int]:
        now = to_micros(self._clock())
        rows = []
        for event_id, s in settlements.items():
            if s.state not in SETTLED:
                raise ValueError(f"cannot settle an event as {s.state!r}")
            retry = s.state == "retry"
            due = to_micros(s.not_before) if retry and s.not_before else now
            rows.append((s.state, s.reason, due, None if retry else now, event_id, s.lease))
        return await self._db.write(partial(_update, rows)) if rows else set()

    async def pause_until(self, when: datetime | None) -> None:
        await self._db.write(partial(_set_pause, when))

    async def paused_until(self) -> datetime | None:
        return await self._db.read(_get_pause)

    async def counts(self) -> dict[str, int]:
        found = await self._db.read(_count_states)
        return {state: found.get(state, 0) for state in STATES}

    async def recent(self, state: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest events in `state`, for the dead-letter listing."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        return await self._db.read(partial(_recent, state, limit))

    async def requeue_dead(self) -> int:
        """Give every dead event a fresh start, once an operator has fixed what killed it."""
        return await self._db.write(partial(self._revive, to_micros(self._clock())))

    async def purge(self, settled_before: datetime) -> int:
        return await self._db.write(partial(_purge, to_micros(settled_before)))

    async def dead_letter(self, event_id: int) -> dict[str, Any] | None:
        return await self._db.read(partial(_dead_letter, event_id))

    async def replay(self, event_ids: Sequence[int]) -> list[int]:
        now = to_micros(self._clock())
        return await self._db.write(partial(_replay, now, list(event_ids)))

    async def purge_dead(self, settled_before: datetime) -> int:
        return await self._db.write(partial(_purge_dead, to_micros(settled_before)))

    async def oldest_pending(self) -> datetime | None:
        return await self._db.read(_oldest_pending)

    async def close(self) -> None:
        await self.stop_writer()
        if self._owned:
            await self._db.close()

    async def __aenter__(self) -> SQLiteEventQueue:
        await self._db.read(lambda conn: None)  # surfaces a file that cannot be opened now
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # The methods below run on the database thread, inside its transaction.

    def _revive(self, now: int, conn: sqlite3.Connection) -> int:
        revived: int = conn.execute(
            "UPDATE events SET state = 'pending', attempts = 0, reason = NULL,"
            " settled_at = NULL, due_at = ? WHERE state = 'dead'",
            (now,),
        ).rowcount
        return revived


_Row = tuple[str, str | None, str | None, str, int]  # scope, messageId, person, payload, now


class Inserts:
    """The combine of `put` (`SQLiteDatabase.write_combined`): the rows of every put in one
    INSERT; per put, how many were new, or QueueFull. The ingest writer process
    (`adapters.sqlite.ingest_writer_process`) stores its puts with the same rules.

    Alone, a put's rowcount is its answer. Together, the statement itself refuses all
    when the backlog is at its limit; unless every row turned out new, the count cannot
    be shared out among the puts, so `_Undecided` makes each run again alone (a duplicate
    is rare: a sender's retry of a request whose answer it lost).
    """

    def __init__(self, max_pending: int | None) -> None:
        self.max_pending = max_pending

    def __call__(self, conn: sqlite3.Connection, puts: list[list[_Row]]) -> list[Any]:
        if len(puts) == 1:
            (rows,) = puts
            try:
                self._check_room(conn)
            except QueueFull as full:
                return [full]
            return [_insert_rows(conn, rows, limit=None)]
        admitted = [row for rows in puts for row in rows]
        if _insert_rows(conn, admitted, limit=self.max_pending) != len(admitted):
            raise _Undecided
        return [len(rows) for rows in puts]

    def _check_room(self, conn: sqlite3.Connection) -> None:
        """Refuse new events while the backlog is at its limit (counted in event_counts)."""
        if self.max_pending is None:
            return
        (count,) = conn.execute(_OPEN_COUNT).fetchone()
        if count >= self.max_pending:
            raise QueueFull(f"{count} events await delivery (limit {self.max_pending})")


_OPEN_COUNT = (
    "SELECT coalesce(sum(n), 0) FROM event_counts WHERE state IN ('pending', 'retry', 'leased')"
)
# The rows come as one JSON array: one statement whatever their number. With a limit, the
# statement stores nothing while the backlog is at it.
_INSERT = (
    "INSERT INTO events (dedupe_scope, message_id, ordering_key, payload, received_at, due_at)"  # noqa: S608
    # json_extract rather than ->>, which needs SQLite 3.38
    " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
    " json_extract(value, '$[4]'), json_extract(value, '$[4]')"
    f" FROM json_each(?1) WHERE ?2 IS NULL OR ({_OPEN_COUNT}) < ?2"
    " ON CONFLICT (dedupe_scope, message_id) DO NOTHING"
)


def _insert_rows(conn: sqlite3.Connection, rows: list[_Row], *, limit: int | None) -> int:
    """Store the new rows of `rows`; returns how many were new. The insert trigger went in
    schema step 5: one count update per statement, not one per row."""
    added: int = conn.execute(_INSERT, (orjson.dumps(rows).decode(), limit)).rowcount
    if added:
        conn.execute("UPDATE event_counts SET n = n + ? WHERE state = 'pending'", (added,))
    return added


class _Undecided(Exception):
    """Puts stored together whose rows were not all new: each must run alone to know."""


def _update(rows: list[tuple[Any, ...]], conn: sqlite3.Connection) -> set[int]:
    """The ids whose settlement applied (one statement each: rowcount per row, and no
    RETURNING, which needs SQLite 3.35)."""
    return {
        row[4]
        for row in rows
        if conn.execute(
            "UPDATE events SET state = ?, reason = ?, due_at = ?, settled_at = ?, lease_id = NULL"
            " WHERE id = ? AND (?6 IS NULL OR (state = 'leased' AND lease_id = ?6))",
            row,
        ).rowcount
    }


def _renew(lease: str, until: int, conn: sqlite3.Connection) -> int:
    renewed: int = conn.execute(
        "UPDATE events SET due_at = ? WHERE lease_id = ? AND state = 'leased'", (until, lease)
    ).rowcount
    return renewed


def _lease(
    now: int, until: int, limit: int, lease: str, conn: sqlite3.Connection
) -> list[QueuedEvent]:
    busy = {
        key
        for (key,) in conn.execute(
            "SELECT DISTINCT ordering_key FROM events WHERE state = 'leased' AND due_at > ?",
            (now,),
        )
    }
    chosen: list[int] = []
    due = conn.execute(
        # Without statistics the planner prefers events_by_state and sorts the whole backlog.
        "SELECT id, ordering_key FROM events INDEXED BY events_open"
        " WHERE state IN ('pending', 'retry', 'leased') AND due_at <= ? ORDER BY id",
        (now,),
    )
    for event_id, key in due:
        if len(chosen) >= limit:
            break
        if key is None:
            chosen.append(event_id)
        elif key not in busy:
            busy.add(key)  # taken whole now, so later rows of this person are skipped
            chosen.extend(
                i
                for (i,) in conn.execute(
                    "SELECT id FROM events WHERE ordering_key = ? AND due_at <= ?"
                    " AND state IN ('pending', 'retry', 'leased') ORDER BY id LIMIT ?",
                    (key, now, limit - len(chosen)),
                )
            )
    due.close()
    leased = conn.execute(
        "UPDATE events SET state = 'leased', attempts = attempts + 1, due_at = ?, lease_id = ?"
        " WHERE id IN (SELECT value FROM json_each(?))"
        " RETURNING id, payload, attempts, received_at",
        (until, lease, json.dumps(chosen)),
    ).fetchall()
    return [
        QueuedEvent(
            id=i, payload=json.loads(p), attempts=a, received_at=from_micros(r), lease=lease
        )
        for i, p, a, r in sorted(leased)
    ]


def _set_pause(when: datetime | None, conn: sqlite3.Connection) -> None:
    if when is None:
        conn.execute("DELETE FROM queue_settings WHERE key = ?", (_PAUSE_KEY,))
    else:
        conn.execute(
            "INSERT INTO queue_settings (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_PAUSE_KEY, when.isoformat()),
        )


def _get_pause(conn: sqlite3.Connection) -> datetime | None:
    row = conn.execute("SELECT value FROM queue_settings WHERE key = ?", (_PAUSE_KEY,)).fetchone()
    return datetime.fromisoformat(row[0]) if row else None


def _count_states(conn: sqlite3.Connection) -> dict[str, int]:
    # Kept by triggers (see _v3_state_counts): a scrape reads a few rows, whatever the backlog.
    return dict(conn.execute("SELECT state, n FROM event_counts").fetchall())


_ROW = "id, message_id, reason, attempts, payload, settled_at, received_at"


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    i, m, r, a, p, settled, received = row
    return {
        "id": i,
        "messageId": m,
        "reason": r,
        "attempts": a,
        "payload": json.loads(p),
        "settled_at": None if settled is None else from_micros(settled),
        "received_at": from_micros(received),
    }


def _recent(state: str, limit: int, conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {_ROW} FROM events WHERE state = ? ORDER BY id DESC LIMIT ?",  # noqa: S608
        (state, limit),
    )
    return [_row(row) for row in rows]


def _dead_letter(event_id: int, conn: sqlite3.Connection) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_ROW} FROM events WHERE id = ? AND state = 'dead'",  # noqa: S608
        (event_id,),
    ).fetchone()
    return None if row is None else _row(row)


def _replay(now: int, event_ids: list[int], conn: sqlite3.Connection) -> list[int]:
    # received_at is kept: the event's time is judged against its own arrival, so a value
    # newer events replaced meanwhile is not written back.
    rows = conn.execute(
        "UPDATE events SET state = 'pending', attempts = 0, reason = NULL, settled_at = NULL,"
        " due_at = ? WHERE state = 'dead' AND id IN (SELECT value FROM json_each(?))"
        " RETURNING id",
        (now, json.dumps(event_ids)),
    ).fetchall()
    return sorted(i for (i,) in rows)


def _purge_dead(cutoff: int, conn: sqlite3.Connection) -> int:
    deleted: int = conn.execute(
        "DELETE FROM events WHERE state = 'dead' AND settled_at < ?", (cutoff,)
    ).rowcount
    return deleted


def _oldest_pending(conn: sqlite3.Connection) -> datetime | None:
    # Ids grow with arrival, so the first open id is the oldest: one step of events_open.
    row = conn.execute(
        "SELECT received_at FROM events INDEXED BY events_open"
        " WHERE state IN ('pending', 'retry', 'leased') ORDER BY id LIMIT 1"
    ).fetchone()
    return None if row is None else from_micros(row[0])


def _purge(cutoff: int, conn: sqlite3.Connection) -> int:
    deleted: int = conn.execute(
        "DELETE FROM events WHERE state IN ('delivered', 'skipped', 'rejected') AND settled_at < ?",
        (cutoff,),
    ).rowcount
    return deleted
