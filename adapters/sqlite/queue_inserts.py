"""How puts become rows: one INSERT for every put that meets in one write transaction.

In: a connection inside its write transaction and the rows of one or more puts (scope,
messageId, ordering key, payload JSON, arrival). Out: per put, how many rows were new, or
QueueFull while the backlog is at its limit. The queue in the service's process
(`SQLiteDatabase.write_combined`) and the ingest writer process both store with `Inserts`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from domain.ports import QueueFull

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
