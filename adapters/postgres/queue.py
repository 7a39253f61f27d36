"""The EventQueue in PostgreSQL, for several nodes sharing one queue.

The same states, columns and promises as the SQLite queue (see its docstring): `due_at` says
when an open event may be leased next, leases have ids renewed by the worker's heartbeat, a
settlement naming its lease applies only while the event is still held under it.

Leasing runs in one transaction that never waits for another node:

1. the oldest due events whose person holds no live lease, `FOR UPDATE SKIP LOCKED`, so two
   nodes leasing at once get different events;
2. a transaction-level advisory lock per person (`pg_try_advisory_xact_lock`): of two nodes
   that both picked events of one person, one gets the person and the other skips them;
3. with the person's lock, whether a lease committed meanwhile holds them (each statement sees
   every commit before it, and the lock is only free once the other lease committed);
4. the person's due events, oldest first, as far as this transaction could lock them
   (`SKIP LOCKED` again): taking a later one while skipping an earlier one would reorder them.

No statement waits for a row or a lock another transaction holds, so leasing nodes cannot
deadlock one another.

Times come from the PostgreSQL server's clock unless a clock is given (tests), so the nodes'
own clocks need not agree for leases to mean the same everywhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from psycopg import AsyncConnection

from adapters.postgres.database import PostgresDatabase
from adapters.postgres.notifications import channel
from adapters.shared.event_json import event_json
from domain.ports import (
    SETTLED,
    STATES,
    QueuedEvent,
    QueueFull,
    Settlement,
    message_id_of,
    ordering_key_of,
)

__all__ = ["PostgresEventQueue", "QueueFull"]

_OPEN = "state IN ('pending', 'retry', 'leased')"
_NOW = "coalesce(%(now)s::timestamptz, now())"
_PAUSE_KEY = "paused_until"
_ROW = "id, message_id, reason, attempts, payload, settled_at, received_at"

_CANDIDATES = f"""
    SELECT id, ordering_key FROM events
    WHERE {_OPEN} AND due_at <= {_NOW}
      AND (ordering_key IS NULL OR ordering_key NOT IN (
          SELECT ordering_key FROM events
          WHERE state = 'leased' AND due_at > {_NOW} AND ordering_key IS NOT NULL))
    ORDER BY id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED"""  # noqa: S608
_PEOPLE_LOCKED = """
    SELECT key FROM unnest(%(keys)s::text[], %(locks)s::bigint[]) AS people(key, lock)
    WHERE pg_try_advisory_xact_lock(lock)"""
_PEOPLE_BUSY = f"""
    SELECT DISTINCT ordering_key FROM events
    WHERE ordering_key = ANY(%(keys)s) AND state = 'leased' AND due_at > {_NOW}"""  # noqa: S608
_PEOPLES_EVENTS = f"""
    SELECT people.key, due.id FROM unnest(%(keys)s::text[]) AS people(key)
    CROSS JOIN LATERAL (
        SELECT id FROM events
        WHERE ordering_key = people.key AND {_OPEN} AND due_at <= {_NOW}
        ORDER BY id LIMIT %(limit)s
    ) AS due"""  # noqa: S608
_LOCKABLE = f"""
    SELECT id FROM events WHERE id = ANY(%(ids)s) AND {_OPEN} AND due_at <= {_NOW}
    FOR UPDATE SKIP LOCKED"""  # noqa: S608
_TAKE = f"""
    UPDATE events SET state = 'leased', attempts = attempts + 1,
        due_at = {_NOW} + make_interval(secs => %(seconds)s::float8), lease_id = %(lease)s
    WHERE id = ANY(%(ids)s)
    RETURNING id, payload, attempts, received_at, dedupe_scope"""  # noqa: S608


class PostgresEventQueue:
    """An EventQueue on an opened PostgresDatabase (left open on close: the caller owns it)."""

    def __init__(
        self,
        database: PostgresDatabase,
        *,
        max_pending: int | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = database
        self._max_pending = max_pending
        self._clock = clock

    def _now(self) -> datetime | None:
        """The time to use, or None for the server's (`_NOW` in the statements)."""
        return self._clock() if self._clock is not None else None

    async def put(self, payloads: Sequence[Mapping[str, Any]], *, scope: str = "") -> int:
        if not payloads:
            return 0
        rows = [(message_id_of(p), ordering_key_of(p), event_json(p)) for p in payloads]
        async with self._db.connection() as conn:
            if self._max_pending is not None:
                waiting = await _waiting(conn)
                if waiting >= self._max_pending:
                    raise QueueFull(f"{waiting} events await delivery (limit {self._max_pending})")
            # Workers LISTENing (adapters.postgres.notifications) are told at commit, in the
            # same statement: no round trip more for the door.
            cursor = await conn.execute(
                f"""WITH added AS (
                    INSERT INTO events
                        (dedupe_scope, message_id, ordering_key, payload, received_at, due_at)
                    SELECT %(scope)s, m, k, p, {_NOW}, {_NOW}
                    FROM unnest(%(m)s::text[], %(k)s::text[], %(p)s::text[])
                        WITH ORDINALITY AS given(m, k, p, n)
                    ORDER BY n
                    ON CONFLICT (dedupe_scope, message_id) DO NOTHING
                    RETURNING 1)
                SELECT n, CASE WHEN n > 0 THEN pg_notify(%(channel)s, '') END
                FROM (SELECT count(*) AS n FROM added) AS counted""",  # noqa: S608
                {
                    "scope": scope,
                    "now": self._now(),
                    "channel": channel(self._db.namespace),
                    "m": [r[0] for r in rows],
                    "k": [r[1] for r in rows],
                    "p": [r[2] for r in rows],
                },
            )
            found = await cursor.fetchone()
            return int(found[0]) if found is not None else 0

    async def lease(self, limit: int, lease_seconds: float) -> list[QueuedEvent]:
        if limit <= 0:
            return []
        lease = uuid.uuid4().hex
        params = {"now": self._now(), "limit": limit, "seconds": lease_seconds, "lease": lease}

        async def take(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            return await self._take(conn, params)

        rows = await self._db.transact(take)
        return [
            QueuedEvent(
                id=i, payload=json.loads(p), attempts=a, received_at=r, lease=lease, scope=scope
            )
            for i, p, a, r, scope in sorted(rows)
        ]

    async def _take(self, conn: AsyncConnection[Any], params: dict[str, Any]) -> list[Any]:
        limit: int = params["limit"]
        candidates = await (await conn.execute(_CANDIDATES, params)).fetchall()
        if not candidates:
            return []
        keys = list(dict.fromkeys(key for _, key in candidates if key is not None))
        mine: set[str] = set()
        queued: dict[str, list[int]] = {}
        locked: set[int] = {i for i, _ in candidates}
        if keys:
            locks = [self._db.lock_key("person", key) for key in keys]
            cursor = await conn.execute(_PEOPLE_LOCKED, {"keys": keys, "locks": locks})
            mine = {key for (key,) in await cursor.fetchall()}
            if mine:
                cursor = await conn.execute(_PEOPLE_BUSY, {**params, "keys": list(mine)})
                mine -= {key for (key,) in await cursor.fetchall()}
            if mine:
                cursor = await conn.execute(_PEOPLES_EVENTS, {**params, "keys": list(mine)})
                for key, event_id in await cursor.fetchall():
                    queued.setdefault(key, []).append(event_id)
                wanted = [i for ids in queued.values() for i in ids if i not in locked]
                if wanted:
                    cursor = await conn.execute(_LOCKABLE, {**params, "ids": wanted})
                    locked.update(i for (i,) in await cursor.fetchall())
        chosen: list[int] = []
        for event_id, key in candidates:
            if len(chosen) >= limit:
                break
            if key is None:
                chosen.append(event_id)
            elif key in mine:
                mine.discard(key)  # taken whole now: later candidates of this person skip
                for queued_id in sorted(queued.get(key, [])):
                    if len(chosen) >= limit or queued_id not in locked:
                        break  # an earlier event held elsewhere: never take a later one
                    chosen.append(queued_id)
        if not chosen:
            return []
        return await (await conn.execute(_TAKE, {**params, "ids": chosen})).fetchall()

    async def renew(self, lease: str, lease_seconds: float) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"UPDATE events SET due_at = {_NOW} + make_interval(secs => %(seconds)s::float8)"  # noqa: S608
                " WHERE lease_id = %(lease)s AND state = 'leased'",
                {"now": self._now(), "seconds": lease_seconds, "lease": lease},
            )
            return cursor.rowcount

    async def settle(self, settlements: Mapping[int, Settlement]) -> set[int]:
        for s in settlements.values():
            if s.state not in SETTLED:
                raise ValueError(f"cannot settle an event as {s.state!r}")
        if not settlements:
            return set()
        ordered = sorted(settlements.items())  # one order for every node: fewer deadlocks
        params = {
            "now": self._now(),
            "ids": [event_id for event_id, _ in ordered],
            "states": [s.state for _, s in ordered],
            "reasons": [s.reason for _, s in ordered],
            "not_before": [s.not_before for _, s in ordered],
            "leases": [s.lease for _, s in ordered],
            "refunds": [int(s.state == "retry" and not s.spent) for _, s in ordered],
        }

        async def settle(conn: AsyncConnection[Any]) -> set[int]:
            cursor = await conn.execute(
                f"""UPDATE events AS e SET state = s.state, reason = s.reason, lease_id = NULL,
                    attempts = greatest(e.attempts - s.refund, 0),
                    due_at = CASE WHEN s.state = 'retry'
                        THEN coalesce(s.not_before, {_NOW}) ELSE {_NOW} END,
                    settled_at = CASE WHEN s.state = 'retry' THEN NULL ELSE {_NOW} END
                FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(reasons)s::text[],
                    %(not_before)s::timestamptz[], %(leases)s::text[], %(refunds)s::int[])
                    AS s(id, state, reason, not_before, lease, refund)
                WHERE e.id = s.id
                  AND (s.lease IS NULL OR (e.state = 'leased' AND e.lease_id = s.lease))
                RETURNING e.id""",  # noqa: S608
                params,
            )
            return {row[0] for row in await cursor.fetchall()}

        return await self._db.transact(settle)

    async def pause_until(self, when: datetime | None) -> None:
        async with self._db.connection() as conn:
            if when is None:
                await conn.execute("DELETE FROM queue_settings WHERE key = %s", (_PAUSE_KEY,))
            else:
                await conn.execute(
                    "INSERT INTO queue_settings (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_PAUSE_KEY, when.isoformat()),
                )

    async def paused_until(self) -> datetime | None:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT value FROM queue_settings WHERE key = %s", (_PAUSE_KEY,)
            )
            row = await cursor.fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    async def counts(self) -> dict[str, int]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT state, sum(n)::bigint FROM event_counts GROUP BY state"
            )
            found = dict(await cursor.fetchall())
        return {state: int(found.get(state, 0)) for state in STATES}

    async def recent(self, state: str, limit: int = 20) -> list[dict[str, Any]]:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        return await self._rows(
            f"SELECT {_ROW} FROM events WHERE state = %s ORDER BY id DESC LIMIT %s",  # noqa: S608
            (state, limit),
        )

    async def dead_letter(self, event_id: int) -> dict[str, Any] | None:
        rows = await self._rows(
            f"SELECT {_ROW} FROM events WHERE id = %s AND state = 'dead'",  # noqa: S608
            (event_id,),
        )
        return rows[0] if rows else None

    async def requeue_dead(self) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "UPDATE events SET state = 'pending', attempts = 0, reason = NULL,"  # noqa: S608
                f" settled_at = NULL, due_at = {_NOW} WHERE state = 'dead'",
                {"now": self._now()},
            )
            return cursor.rowcount

    async def replay(self, event_ids: Sequence[int]) -> list[int]:
        # received_at is kept: the event's time is judged against its own arrival.
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "UPDATE events SET state = 'pending', attempts = 0, reason = NULL,"  # noqa: S608
                f" settled_at = NULL, due_at = {_NOW}"
                " WHERE state = 'dead' AND id = ANY(%(ids)s) RETURNING id",
                {"now": self._now(), "ids": list(event_ids)},
            )
            return sorted(i for (i,) in await cursor.fetchall())

    async def purge_dead(self, settled_before: datetime) -> int:
        return await self._delete("state = 'dead'", settled_before)

    async def purge(self, settled_before: datetime) -> int:
        return await self._delete("state IN ('delivered', 'skipped', 'rejected')", settled_before)

    async def oldest_pending(self) -> datetime | None:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT received_at FROM events WHERE {_OPEN} ORDER BY id LIMIT 1"  # noqa: S608
            )
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _delete(self, which: str, settled_before: datetime) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"DELETE FROM events WHERE {which} AND settled_at < %s",  # noqa: S608
                (settled_before,),
            )
            return cursor.rowcount

    async def _rows(self, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(query, params)
            return [_row(row) for row in await cursor.fetchall()]

    async def close(self) -> None:
        """The database belongs to whoever opened it."""

    async def __aenter__(self) -> PostgresEventQueue:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _waiting(conn: AsyncConnection[Any]) -> int:
    cursor = await conn.execute(
        "SELECT coalesce(sum(n), 0)::bigint FROM event_counts"
        " WHERE state IN ('pending', 'retry', 'leased')"
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    i, m, r, a, p, settled, received = row
    return {
        "id": i,
        "messageId": m,
        "reason": r,
        "attempts": a,
        "payload": json.loads(p),
        "settled_at": settled,
        "received_at": received,
    }
