"""Leasing, renewing and settling queued events in SQLite, inside the write transaction.

In: a connection, the time in microseconds and the lease's id. Out: `lease_due` takes the
oldest due events, a person's events whole and only while no live lease holds that person;
`renew_lease` keeps a lease's events; `apply_settlements` settles events, each only while
still held by the lease its settlement names, and returns the ids that applied.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from adapters.sqlite.database import from_micros
from domain.ports import QueuedEvent


def apply_settlements(rows: list[tuple[Any, ...]], conn: sqlite3.Connection) -> set[int]:
    """The ids whose settlement applied (one statement each: rowcount per row, and no
    RETURNING, which needs SQLite 3.35)."""
    return {
        row[4]
        for row in rows
        if conn.execute(
            "UPDATE events SET state = ?1, reason = ?2, due_at = ?3, settled_at = ?4,"
            " lease_id = NULL, attempts = max(attempts - ?7, 0)"
            " WHERE id = ?5 AND (?6 IS NULL OR (state = 'leased' AND lease_id = ?6))",
            row,
        ).rowcount
    }


def renew_lease(lease: str, until: int, conn: sqlite3.Connection) -> int:
    renewed: int = conn.execute(
        "UPDATE events SET due_at = ? WHERE lease_id = ? AND state = 'leased'", (until, lease)
    ).rowcount
    return renewed


def lease_due(
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
        " RETURNING id, payload, attempts, received_at, dedupe_scope",
        (until, lease, json.dumps(chosen)),
    ).fetchall()
    return [
        QueuedEvent(
            id=i,
            payload=json.loads(p),
            attempts=a,
            received_at=from_micros(r),
            lease=lease,
            scope=scope,
        )
        for i, p, a, r, scope in sorted(leased)
    ]
