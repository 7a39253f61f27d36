"""Forgetting a person in the SQLite store (the queue's file): PersonalData and SuppressionList.

One write transaction removes the person's events, history rows, field stamps, identity links,
create marks and create locks, and adds their digests to the suppression list. The connection
runs with `PRAGMA secure_delete = ON` (every connection to the file does), so freed cells and
pages are overwritten with zeros rather than left for a reader of the file; afterwards the
write-ahead log is checkpointed and truncated by `scrub` (once the whole forget is over, the
index's rows dropped too), waiting for other connections' reads to end, so the old page images
it and the file held go too.

The suppression list's salt is made by the schema step that creates the list (SQLite's
`randomblob`), in the same file: a copy of the file without it suppresses nobody.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from adapters.shared.forget_match import (
    as_list,
    create_names,
    is_theirs,
    lookup_suffixes,
    names_in,
    needles,
    tally,
)
from adapters.sqlite import history, prospect_index, prospect_store, queue_schema
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.migrations import Step, migrate
from domain.forget import emails_of, users_of
from domain.ports.forget import Person, Removed

SCHEMA_COMPONENT = "suppression"
_V1 = (
    """CREATE TABLE IF NOT EXISTS suppressed (
        digest TEXT PRIMARY KEY,  -- domain.forget.digest: HMAC-SHA256, never the email or id
        added_at INTEGER NOT NULL  -- seconds since the epoch
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS suppression_salt (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        salt TEXT NOT NULL  -- hex; keep it with the list, or the list suppresses nobody
    )""",
    "INSERT OR IGNORE INTO suppression_salt (id, salt) VALUES (1, lower(hex(randomblob(32))))",
)
MIGRATIONS: tuple[Step, ...] = (_V1,)
# For the other connections' reads to end: a busy service starts new ones all the time, and
# each try waits only while a reader is in the log (SQLite's busy handler), so try again.
WAL_TRUNCATE_TRY_SECONDS = 1.0
WAL_TRUNCATE_WAIT_SECONDS = 15.0
# Every component whose tables a forget reads, in the order a file is created.
_COMPONENTS = (
    (queue_schema.SCHEMA_COMPONENT, queue_schema.MIGRATIONS),
    (prospect_store.SCHEMA_COMPONENT, prospect_store.MIGRATIONS),
    (history.SCHEMA_COMPONENT, history.MIGRATIONS),
    (prospect_index.SCHEMA_COMPONENT, prospect_index.MIGRATIONS),
    (SCHEMA_COMPONENT, MIGRATIONS),
)


class _DryRun(Exception):
    """Raised out of a dry run's transaction so that it rolls back; carries the counts."""

    def __init__(self, removed: Removed) -> None:
        self.removed = removed


class SQLitePersonalData:
    """PersonalData and SuppressionList on an open SQLiteDatabase (left open)."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self._db = database
        for component, steps in _COMPONENTS:
            self._db.prepare(partial(migrate, component=component, steps=steps))

    async def forget(self, person: Person, *, suppress: Collection[str], dry_run: bool) -> Removed:
        try:
            removed = await self._db.write(partial(_forget, person, sorted(suppress), dry_run))
        except _DryRun as done:
            return done.removed
        return removed

    async def scrub(self) -> bool:
        deadline = time.monotonic() + WAL_TRUNCATE_WAIT_SECONDS
        while not await asyncio.to_thread(_truncate_wal, self._db.path):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def identities_in_events(self, identities: Collection[str]) -> frozenset[str]:
        person = Person(frozenset(identities))
        return await self._db.read(partial(_identities_in_events, person))

    async def drop_events(self, event_ids: Sequence[int]) -> int:
        if not event_ids:
            return 0
        return await self._db.write(partial(_drop_events, as_list(event_ids)))

    async def salt(self) -> bytes:
        return bytes.fromhex(await self._db.read(_salt))

    async def suppressed(self, digests: Collection[str]) -> set[str]:
        if not digests:
            return set()
        return await self._db.read(partial(_suppressed, as_list(digests)))

    async def everyone(self) -> frozenset[str]:
        return frozenset(await self._db.read(_everyone))

    async def lift(self, digests: Collection[str]) -> int:
        return await self._db.write(partial(_lift, as_list(digests)))


# On the database thread, inside its transaction.


def _forget(
    person: Person, suppress: list[str], dry_run: bool, conn: sqlite3.Connection
) -> Removed:
    conn.execute("PRAGMA secure_delete = ON")  # as `connect` set it; a forget depends on it
    removed = _remove(person, conn)
    conn.executemany(
        "INSERT INTO suppressed (digest, added_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(d, int(time.time())) for d in suppress],
    )
    if dry_run:
        raise _DryRun(removed)
    return removed


def _candidates(person: Person, conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    """Events whose text holds one of the person's ids or emails (a cheap filter; the exact
    test reads each payload)."""
    # SQLite's own lower() folds ASCII only: `Ü` in a userId would slip past the filter.
    conn.create_function("unicode_lower", 1, _lower, deterministic=True)
    found = " OR ".join(["instr(unicode_lower(payload), ?) > 0"] * len(needles(person))) or "0"
    return conn.execute(
        f"SELECT id, state, payload FROM events WHERE {found}",  # noqa: S608
        needles(person),
    ).fetchall()


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def _identities_in_events(person: Person, conn: sqlite3.Connection) -> frozenset[str]:
    named = [names_in(payload) for _, _, payload in _candidates(person, conn)]
    return frozenset().union(*(names for names in named if names & person.identities))


def _remove(person: Person, conn: sqlite3.Connection) -> Removed:
    prospects = as_list(person.prospects)
    rows = _candidates(person, conn)
    theirs = [(event_id, state) for event_id, state, payload in rows if is_theirs(payload, person)]
    _delete_ids(conn, "events", [event_id for event_id, _ in theirs])
    counted = tally(state for _, state in theirs)
    values = as_list(users_of(person.identities) + emails_of(person.identities))
    history_rows = conn.execute(
        "DELETE FROM history WHERE prospect IN (SELECT value FROM json_each(?))"
        " OR user_id IN (SELECT value FROM json_each(?))"
        " OR email IN (SELECT value FROM json_each(?))"
        " OR EXISTS (SELECT 1 FROM json_each(?)"
        "     WHERE instr(lower(history.reason), lower(value)) > 0)",
        (
            prospects,
            as_list(users_of(person.identities)),
            as_list(emails_of(person.identities)),
            values,
        ),
    ).rowcount
    stamps = conn.execute(
        "DELETE FROM prospect_fields WHERE prospect IN (SELECT value FROM json_each(?))",
        (prospects,),
    ).rowcount
    lookups = [
        identity
        for (identity,) in conn.execute(
            "SELECT identity FROM prospect_links WHERE prospect IN (SELECT value FROM json_each(?))"
            " AND identity LIKE 'lookup:%'",
            (prospects,),
        )
    ]
    names = as_list(create_names(person, lookups))
    suffixes = as_list(lookup_suffixes(person))
    links = conn.execute(
        "DELETE FROM prospect_links WHERE prospect IN (SELECT value FROM json_each(?))"
        " OR identity IN (SELECT value FROM json_each(?))"
        " OR identity IN (SELECT value FROM json_each(?))"
        " OR (identity LIKE 'creating:lookup:%' AND EXISTS (SELECT 1 FROM json_each(?)"
        "     WHERE substr(prospect_links.identity, -length(value)) = value))",
        (prospects, as_list(person.identities), names, suffixes),
    ).rowcount
    links += conn.execute(
        "DELETE FROM create_locks WHERE lower(trim(email)) IN (SELECT value FROM json_each(?))"
        " OR (email LIKE 'lookup:%' AND EXISTS (SELECT 1 FROM json_each(?)"
        "     WHERE substr(create_locks.email, -length(value)) = value))",
        (names, suffixes),
    ).rowcount
    return Removed(history=history_rows, stamps=stamps, links=links, **counted)


def _delete_ids(conn: sqlite3.Connection, table: str, ids: list[int]) -> int:
    return conn.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",  # noqa: S608
        (as_list(ids),),
    ).rowcount


def _drop_events(ids: str, conn: sqlite3.Connection) -> int:
    conn.execute("PRAGMA secure_delete = ON")
    return conn.execute(
        "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))", (ids,)
    ).rowcount


def _truncate_wal(path: Path) -> bool:
    """Copy the WAL into the file and empty it, unless another connection still reads from it.
    A connection of its own: the
    database thread's is always in or between transactions, where SQLite refuses this."""
    conn = sqlite3.connect(path, timeout=WAL_TRUNCATE_TRY_SECONDS, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    return not busy


def _salt(conn: sqlite3.Connection) -> str:
    row: Any = conn.execute("SELECT salt FROM suppression_salt WHERE id = 1").fetchone()
    return str(row[0])


def _suppressed(digests: str, conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT digest FROM suppressed WHERE digest IN (SELECT value FROM json_each(?))",
        (digests,),
    )
    return {digest for (digest,) in rows}


def _everyone(conn: sqlite3.Connection) -> list[str]:
    return [digest for (digest,) in conn.execute("SELECT digest FROM suppressed")]


def _lift(digests: str, conn: sqlite3.Connection) -> int:
    return conn.execute(
        "DELETE FROM suppressed WHERE digest IN (SELECT value FROM json_each(?))", (digests,)
    ).rowcount
