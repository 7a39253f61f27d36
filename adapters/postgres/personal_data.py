"""Forgetting a person in the PostgreSQL store: PersonalData and SuppressionList for many nodes.

The SQLite twin's queries (see adapters.sqlite.personal_data), in one transaction: the
person's events, history rows, field stamps, identity links and create marks go, and their
digests join the suppression list, together; a node that leased one of their events finds
the event gone when it settles, and its worker checks the list before writing.

PostgreSQL keeps a deleted row's bytes in the table's files (and its WAL) until VACUUM reclaims
the space and new rows overwrite it: docs/operating.md ("What we keep") says what to run when
that matters. Create locks here are advisory locks, numbers that hold no email.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from psycopg import AsyncConnection

from adapters.postgres.database import PostgresDatabase
from adapters.shared.forget_match import (
    create_names,
    is_theirs,
    lookup_suffixes,
    names_in,
    needles,
    tally,
)
from domain.forget import emails_of, users_of
from domain.ports.forget import Person, Removed


class _DryRun(Exception):
    """Raised out of a dry run's transaction so that it rolls back; carries the counts."""

    def __init__(self, removed: Removed) -> None:
        self.removed = removed


class PostgresPersonalData:
    """PersonalData and SuppressionList on an opened PostgresDatabase (left open)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    async def forget(self, person: Person, *, suppress: Collection[str], dry_run: bool) -> Removed:
        async def work(conn: AsyncConnection[Any]) -> Removed:
            removed = await _remove(person, conn)
            await conn.execute(
                "INSERT INTO suppressed (digest) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (sorted(suppress),),
            )
            if dry_run:
                raise _DryRun(removed)
            return removed

        try:
            return await self._db.transact(work)
        except _DryRun as done:
            return done.removed

    async def identities_in_events(self, identities: Collection[str]) -> frozenset[str]:
        person = Person(frozenset(identities))
        async with self._db.connection() as conn:
            named = [names_in(payload) for _, _, payload in await _candidates(person, conn)]
        return frozenset().union(*(names for names in named if names & person.identities))

    async def drop_events(self, event_ids: Sequence[int]) -> int:
        if not event_ids:
            return 0
        async with self._db.connection() as conn:
            cursor = await conn.execute("DELETE FROM events WHERE id = ANY(%s)", (list(event_ids),))
            return cursor.rowcount

    async def scrub(self) -> bool:
        # Dead rows stay in the table files until VACUUM FULL rewrites them, which locks each
        # table for its whole run: the operator's call (docs/operating.md, "What we keep").
        return False

    async def salt(self) -> bytes:
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT salt FROM suppression_salt WHERE id = 1")
            row = await cursor.fetchone()
        assert row is not None, "the suppression schema step makes the salt"
        return bytes.fromhex(row[0])

    async def suppressed(self, digests: Collection[str]) -> set[str]:
        if not digests:
            return set()
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT digest FROM suppressed WHERE digest = ANY(%s)", (sorted(digests),)
            )
            return {digest for (digest,) in await cursor.fetchall()}

    async def everyone(self) -> frozenset[str]:
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT digest FROM suppressed")
            return frozenset(digest for (digest,) in await cursor.fetchall())

    async def lift(self, digests: Collection[str]) -> int:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM suppressed WHERE digest = ANY(%s)", (sorted(digests),)
            )
            return cursor.rowcount


async def _candidates(
    person: Person, conn: AsyncConnection[Any], *, lock: bool = False
) -> list[tuple[int, str, str]]:
    """Events whose text holds one of the person's ids or emails (a cheap filter; the exact
    test reads each payload); `lock` keeps other nodes off them until the transaction ends."""
    query = (
        "SELECT id, state, payload FROM events"
        " WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) n"
        "     WHERE strpos(payload, n) > 0 OR strpos(lower(payload), n) > 0)"
    )
    cursor = await conn.execute(query + " FOR UPDATE" if lock else query, (needles(person),))
    return [(int(i), str(state), str(payload)) for i, state, payload in await cursor.fetchall()]


async def _remove(person: Person, conn: AsyncConnection[Any]) -> Removed:
    prospects = sorted(person.prospects)
    users, emails = users_of(person.identities), emails_of(person.identities)
    rows = await _candidates(person, conn, lock=True)
    theirs = [(i, state) for i, state, payload in rows if is_theirs(payload, person)]
    await conn.execute("DELETE FROM events WHERE id = ANY(%s)", ([i for i, _ in theirs],))
    counted = tally(state for _, state in theirs)
    cursor = await conn.execute(
        "DELETE FROM history WHERE prospect = ANY(%s) OR user_id = ANY(%s) OR email = ANY(%s)"
        " OR EXISTS (SELECT 1 FROM unnest(%s::text[]) v"
        "     WHERE strpos(lower(history.reason), lower(v)) > 0)",
        (prospects, users, emails, users + emails),
    )
    history_rows = cursor.rowcount
    cursor = await conn.execute(
        "DELETE FROM prospect_fields WHERE prospect = ANY(%s)", (prospects,)
    )
    stamps = cursor.rowcount
    cursor = await conn.execute(
        "SELECT identity FROM prospect_links"
        " WHERE prospect = ANY(%s) AND identity LIKE 'lookup:%%'",
        (prospects,),
    )
    names = create_names(person, [identity for (identity,) in await cursor.fetchall()])
    cursor = await conn.execute(
        "DELETE FROM prospect_links WHERE prospect = ANY(%s) OR identity = ANY(%s)"
        " OR identity = ANY(%s)"
        " OR (identity LIKE 'creating:lookup:%%' AND EXISTS (SELECT 1 FROM unnest(%s::text[]) s"
        "     WHERE right(prospect_links.identity, length(s)) = s))",
        (prospects, sorted(person.identities), names, lookup_suffixes(person)),
    )
    return Removed(history=history_rows, stamps=stamps, links=cursor.rowcount, **counted)
