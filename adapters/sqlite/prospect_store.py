"""The ProspectStore in SQLite, usually the queue's own file and connection.

Named locks (`hold`: emails, prospects, lookup values) are rows of `create_locks` with an
owner and an expiry that the holder keeps pushing forward (a heartbeat, one UPDATE for every
key it holds), so every process on the file respects them and a dead holder's locks lapse
within `LOCK_TTL_SECONDS`. A hold takes the longest free prefix of its sorted keys in one
transaction and waits only for the first key another process holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from pathlib import Path

from adapters.shared.email_locks import EmailLocks
from adapters.shared.field_json import field_from_json, field_json
from adapters.sqlite.database import SQLiteDatabase, from_micros, to_micros
from adapters.sqlite.migrations import Step, migrate
from domain.ports import FieldStamp

LOCK_TTL_SECONDS = 10.0
LOCK_HEARTBEAT_SECONDS = 3.0
LOCK_POLL_SECONDS = (0.02, 0.25)  # first and longest wait between tries for a held lock

SCHEMA_COMPONENT = "prospect_store"
_V1 = (
    """CREATE TABLE IF NOT EXISTS prospect_links (
        identity TEXT PRIMARY KEY,
        prospect TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS prospect_links_by_prospect ON prospect_links (prospect)",
    """CREATE TABLE IF NOT EXISTS prospect_fields (
        prospect TEXT NOT NULL,
        field TEXT NOT NULL,
        value TEXT,  -- JSON; NULL for stamps carried over from the identity-keyed store
        set_at INTEGER,  -- event time in microseconds since the epoch; NULL when unknown
        PRIMARY KEY (prospect, field)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS create_locks (
        email TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL  -- seconds since the epoch
    ) WITHOUT ROWID""",
    # The store before issue 9 kept field times per identity string; carry over what can be
    # tied to a prospect (explicit ids, v3 emails, remembered lookup links), then drop it.
    "CREATE TABLE IF NOT EXISTS identities (identity TEXT PRIMARY KEY, prospect_id INTEGER)",
    """CREATE TABLE IF NOT EXISTS identity_field_times (
        identity TEXT NOT NULL, field TEXT NOT NULL, set_at INTEGER NOT NULL,
        PRIMARY KEY (identity, field))""",
    """INSERT INTO prospect_links (identity, prospect)
        SELECT identity, CAST(prospect_id AS TEXT) FROM identities
        WHERE identity LIKE 'lookup:%' AND prospect_id IS NOT NULL
        ON CONFLICT (identity) DO NOTHING""",
    """INSERT INTO prospect_fields (prospect, field, value, set_at)
        SELECT prospect, field, NULL, set_at FROM (
            SELECT CASE
                WHEN t.identity LIKE 'id:%' THEN substr(t.identity, 4)
                WHEN t.identity LIKE 'email:%' THEN t.identity
                ELSE CAST(i.prospect_id AS TEXT) END AS prospect, t.field, t.set_at
            FROM identity_field_times t LEFT JOIN identities i ON i.identity = t.identity)
        WHERE prospect IS NOT NULL
        ON CONFLICT (prospect, field) DO UPDATE SET set_at = max(set_at, excluded.set_at)""",
    "DROP TABLE identity_field_times",
    "DROP TABLE identities",
)
# Numbered steps (adapters.sqlite.migrations); add new ones at the end, never edit old ones.
MIGRATIONS: tuple[Step, ...] = (_V1,)


class SQLiteProspectStore:
    """`path` may be an open SQLiteDatabase to share with the queue (left open on close)."""

    def __init__(
        self,
        path: str | Path | SQLiteDatabase,
        *,
        lock_ttl: float = LOCK_TTL_SECONDS,
        lock_heartbeat: float = LOCK_HEARTBEAT_SECONDS,
    ) -> None:
        self._lock_ttl = lock_ttl
        self._lock_heartbeat = lock_heartbeat
        self._owned = not isinstance(path, SQLiteDatabase)
        self._db = path if isinstance(path, SQLiteDatabase) else SQLiteDatabase(path)
        self._db.prepare(partial(migrate, component=SCHEMA_COMPONENT, steps=MIGRATIONS))
        self._owner = uuid.uuid4().hex
        # Waiters of this process queue here instead of polling the file one by one.
        self._local = EmailLocks()

    async def links(self, identities: Sequence[str]) -> dict[str, str]:
        return await self._db.read(partial(_links, list(identities)))

    async def link(self, links: Mapping[str, str]) -> None:
        if links:
            await self._db.write(partial(_link, list(links.items())))

    async def unlink(self, identities: Sequence[str]) -> None:
        if identities:
            await self._db.write(partial(_unlink, list(identities)))

    async def stamps(self, prospect: str) -> dict[str, FieldStamp]:
        return await self._db.read(partial(_stamps, prospect))

    async def record(self, prospect: str, stamps: Mapping[str, FieldStamp]) -> None:
        rows = [(prospect, name, field_json(s.value), _micros(s)) for name, s in stamps.items()]
        if rows:
            await self._db.write(partial(_record, rows))

    def create_lock(self, email: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.hold([email])

    @contextlib.asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        async with self._local.hold_all(keys) as names:
            if not names:
                yield
                return
            # Beating from the start keeps the keys taken alive while waiting for the rest.
            beat = asyncio.create_task(self._heartbeat(names))
            try:
                await self._acquire(names)
                yield
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
                # Every name: this process's other tasks wait on the in-process locks, so a
                # row of ours among them is this hold's (or a lost answer's) to give back.
                await asyncio.shield(self._db.write(partial(_release, names, self._owner)))

    async def _acquire(self, names: list[str]) -> None:
        wait, longest = LOCK_POLL_SECONDS
        taken = 0
        while taken < len(names):
            attempt = partial(_try_lock, names[taken:], self._owner, self._lock_ttl)
            call = asyncio.ensure_future(self._db.write(attempt))
            try:
                got = await asyncio.shield(call)
            except asyncio.CancelledError:
                # Let the transaction finish, so the release that follows comes after it.
                with contextlib.suppress(Exception):
                    await call
                raise
            taken += got
            if taken < len(names):
                await asyncio.sleep(wait)
                wait = min(wait * 2, longest)

    async def _heartbeat(self, names: list[str]) -> None:
        while True:
            await asyncio.sleep(self._lock_heartbeat)
            await self._db.write(partial(_renew, names, self._owner, self._lock_ttl))

    async def close(self) -> None:
        if self._owned:
            await self._db.close()


def _micros(stamp: FieldStamp) -> int | None:
    return None if stamp.at is None else to_micros(stamp.at)


def _links(identities: list[str], conn: sqlite3.Connection) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(identities), 500):  # SQLite's bound-parameter limit
        chunk = identities[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT identity, prospect FROM prospect_links WHERE identity IN ({marks})",  # noqa: S608
            chunk,
        )
        found.update(dict(rows))
    return found


def _link(pairs: list[tuple[str, str]], conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO prospect_links (identity, prospect) VALUES (?, ?)"
        " ON CONFLICT (identity) DO UPDATE SET prospect = excluded.prospect",
        pairs,
    )


def _unlink(identities: list[str], conn: sqlite3.Connection) -> None:
    conn.executemany("DELETE FROM prospect_links WHERE identity = ?", [(i,) for i in identities])


def _stamps(prospect: str, conn: sqlite3.Connection) -> dict[str, FieldStamp]:
    rows = conn.execute(
        "SELECT field, value, set_at FROM prospect_fields WHERE prospect = ?", (prospect,)
    )
    return {
        name: FieldStamp(field_from_json(value), None if at is None else from_micros(at))
        for name, value, at in rows
    }


def _record(rows: list[tuple[str, str, str, int | None]], conn: sqlite3.Connection) -> None:
    # The later event time wins; an unknown time always replaces (it cannot be compared).
    conn.executemany(
        "INSERT INTO prospect_fields (prospect, field, value, set_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (prospect, field) DO UPDATE SET value = excluded.value,"
        " set_at = excluded.set_at"
        " WHERE excluded.set_at IS NULL OR prospect_fields.set_at IS NULL"
        " OR excluded.set_at >= prospect_fields.set_at",
        rows,
    )


def _try_lock(keys: list[str], owner: str, ttl: float, conn: sqlite3.Connection) -> int:
    """Take `keys` in order until one is held by another owner; returns how many are ours."""
    now = time.time()
    for taken, key in enumerate(keys):
        conn.execute("DELETE FROM create_locks WHERE email = ? AND expires_at < ?", (key, now))
        conn.execute(
            "INSERT INTO create_locks (email, owner, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (email) DO NOTHING",
            (key, owner, now + ttl),
        )
        row = conn.execute("SELECT owner FROM create_locks WHERE email = ?", (key,)).fetchone()
        if not (row and row[0] == owner):
            return taken
    return len(keys)


def _renew(keys: list[str], owner: str, ttl: float, conn: sqlite3.Connection) -> None:
    expires = time.time() + ttl
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            f"UPDATE create_locks SET expires_at = ? WHERE owner = ? AND email IN ({marks})",  # noqa: S608
            [expires, owner, *chunk],
        )


def _release(keys: list[str], owner: str, conn: sqlite3.Connection) -> None:
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        conn.execute(
            f"DELETE FROM create_locks WHERE owner = ? AND email IN ({marks})",  # noqa: S608
            [owner, *chunk],
        )


def _chunks(keys: list[str]) -> list[list[str]]:
    """Slices within SQLite's bound-parameter limit."""
    return [keys[start : start + 500] for start in range(0, len(keys), 500)]
