"""The ProspectStore in PostgreSQL: links, field stamps and create locks for many nodes.

Named locks (`hold`: emails, prospects, lookup values) are session-level advisory locks, one
key per name (scoped to the database and schema), held on the database's lock connection:
every node waits for them, and a node that dies releases them with its session (see
adapters.postgres.database). A hold tries all its keys in one statement and keeps the longest
free prefix. This process's own waiters queue on an asyncio lock first, since a session may
take a key it already holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

from adapters.postgres.database import PostgresDatabase
from adapters.shared.email_locks import EmailLocks
from adapters.shared.field_json import field_from_json, field_json
from domain.ports import FieldStamp

LOCK_POLL_SECONDS = (0.02, 0.25)  # first and longest wait between tries for a held lock


class PostgresProspectStore:
    """A ProspectStore on an opened PostgresDatabase (left open on close)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database
        self._local = EmailLocks()

    async def links(self, identities: Sequence[str]) -> dict[str, str]:
        if not identities:
            return {}
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT identity, prospect FROM prospect_links WHERE identity = ANY(%s)",
                (list(identities),),
            )
            return dict(await cursor.fetchall())

    async def link(self, links: Mapping[str, str]) -> None:
        if not links:
            return
        pairs = sorted(links.items())  # rows locked in one order by every node
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO prospect_links (identity, prospect)"
                " SELECT i, p FROM unnest(%s::text[], %s::text[]) AS given(i, p) ORDER BY i"
                " ON CONFLICT (identity) DO UPDATE SET prospect = excluded.prospect",
                ([i for i, _ in pairs], [p for _, p in pairs]),
            )

    async def unlink(self, identities: Sequence[str]) -> None:
        if identities:
            async with self._db.connection() as conn:
                await conn.execute(
                    "DELETE FROM prospect_links WHERE identity = ANY(%s)", (list(identities),)
                )

    async def stamps(self, prospect: str) -> dict[str, FieldStamp]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT field, value, set_at FROM prospect_fields WHERE prospect = %s",
                (prospect,),
            )
            rows = await cursor.fetchall()
        return {name: FieldStamp(field_from_json(value), at) for name, value, at in rows}

    async def record(self, prospect: str, stamps: Mapping[str, FieldStamp]) -> None:
        if not stamps:
            return
        ordered = sorted(stamps.items())
        async with self._db.connection() as conn:
            # The later event time wins; an unknown time always replaces (it cannot be compared).
            await conn.execute(
                "INSERT INTO prospect_fields (prospect, field, value, set_at)"
                " SELECT %s, f, v, t FROM unnest(%s::text[], %s::text[], %s::timestamptz[])"
                " AS given(f, v, t) ORDER BY f"
                " ON CONFLICT (prospect, field) DO UPDATE SET value = excluded.value,"
                " set_at = excluded.set_at"
                " WHERE excluded.set_at IS NULL OR prospect_fields.set_at IS NULL"
                " OR excluded.set_at >= prospect_fields.set_at",
                (
                    prospect,
                    [name for name, _ in ordered],
                    [field_json(s.value) for _, s in ordered],
                    [s.at for _, s in ordered],
                ),
            )

    def create_lock(self, email: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.hold([email])

    @contextlib.asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        async with self._local.hold_all(keys) as names:
            # Two names could share a 64-bit key: a session counts each take of it.
            locks = list(dict.fromkeys(self._db.lock_key("create", name) for name in names))
            try:
                await self._db.locks.acquire_all(locks, LOCK_POLL_SECONDS)
                yield
            finally:
                await self._db.locks.unlock_all(locks)

    async def close(self) -> None:
        """The database belongs to whoever opened it."""
