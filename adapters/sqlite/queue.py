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

Beside it: the schema (`queue_schema`), how puts become rows (`queue_inserts`, shared with the
ingest writer process) and the leasing and settling statements (`queue_leases`).
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

from adapters.shared.event_json import event_json
from adapters.sqlite.database import MAX_BATCH, SQLiteDatabase, from_micros, to_micros
from adapters.sqlite.ingest_writer import KeptWriter, WriterGone
from adapters.sqlite.migrations import migrate
from adapters.sqlite.queue_inserts import Inserts
from adapters.sqlite.queue_leases import apply_settlements, lease_due, renew_lease
from adapters.sqlite.queue_schema import MIGRATIONS, SCHEMA_COMPONENT
from domain.ports import (
    SETTLED,
    STATES,
    QueuedEvent,
    QueueFull,
    Settlement,
    message_id_of,
    ordering_key_of,
)

__all__ = ["MIGRATIONS", "SCHEMA_COMPONENT", "Inserts", "QueueFull", "SQLiteEventQueue"]

_PAUSE_KEY = "paused_until"


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
        return await self._db.write(partial(lease_due, now, until, limit, uuid.uuid4().hex))

    async def renew(self, lease: str, lease_seconds: float) -> int:
        until = to_micros(self._clock()) + round(lease_seconds * 1_000_000)
        return await self._db.write(partial(renew_lease, lease, until))

    async def settle(self, settlements: Mapping[int, Settlement]) -> set[int]:
        now = to_micros(self._clock())
        rows = []
        for event_id, s in settlements.items():
            if s.state not in SETTLED:
                raise ValueError(f"cannot settle an event as {s.state!r}")
            retry = s.state == "retry"
            due = to_micros(s.not_before) if retry and s.not_before else now
            refund = int(retry and not s.spent)
            rows.append((s.state, s.reason, due, None if retry else now, event_id, s.lease, refund))
        return await self._db.write(partial(apply_settlements, rows)) if rows else set()

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
