"""Stored events announced to every worker on the PostgreSQL store: NOTIFY on put, LISTEN here.

In: the open `PostgresDatabase` and a callback. Out: `listening(database, on_stored)`, which
keeps a connection of its own LISTENing on the store's channel while its block runs and calls
`on_stored` for each notification, and once after every (re)connection, since events stored
while it was away were announced to nobody. A lost connection is opened again after a growing
wait; meanwhile the worker's poll delivers, so a notification lost is a poll's wait, never an
event. `PostgresEventQueue.put` sends the notifications (`channel`), in its insert's statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable

import psycopg
from psycopg import sql

from adapters.postgres.database import PostgresDatabase

log = logging.getLogger(__name__)

RECONNECT_WAIT = (1.0, 30.0)  # first and longest wait before listening again; doubles between


def channel(namespace: str) -> str:
    """The channel of one store (database and schema): stores side by side do not wake each
    other's workers. A digest keeps it a short, plain identifier whatever the schema's name."""
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:16]
    return f"pardot_destination_events_{digest}"


@contextlib.asynccontextmanager
async def listening(
    database: PostgresDatabase, on_stored: Callable[[], None]
) -> AsyncIterator[None]:
    task = asyncio.create_task(_listen(database, on_stored))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _listen(database: PostgresDatabase, on_stored: Callable[[], None]) -> None:
    failures = 0
    name = channel(database.namespace)
    while True:
        try:
            async with await database.connect() as conn:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                failures = 0
                on_stored()  # whatever was stored before this LISTEN took effect
                async for _ in conn.notifies():
                    on_stored()
        except (psycopg.Error, OSError) as error:
            failures += 1
            wait = min(RECONNECT_WAIT[1], RECONNECT_WAIT[0] * 2 ** (failures - 1))
            log.warning(
                "lost the store's notifications (%s); the worker polls meanwhile, listening "
                "again in %g s",
                type(error).__name__,
                wait,
            )
            await asyncio.sleep(wait)
