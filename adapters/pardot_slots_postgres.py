"""Pardot's 5-in-flight limit shared by every node on one PostgreSQL store: advisory locks.

Slot n of a business unit is the session-level advisory lock of (unit, n), held on the
database's lock connection while one request is in flight. A node that dies ends its session,
and PostgreSQL frees its slots at once (process killed) or once keepalives give up on its
machine (see adapters.postgres_db). Nodes configured with fewer slots use the first ones
only, so together they never exceed the largest PARDOT_MAX_CONCURRENCY among them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from adapters.postgres_db import PostgresDatabase

DEFAULT_SLOTS = 5  # Pardot answers 66 to the sixth concurrent request
POLL_SECONDS = (0.005, 0.05)  # first and longest wait between tries while all are taken


class PostgresSlots:
    """A PardotSlots for every node whose store is this PostgreSQL database and schema."""

    def __init__(
        self, database: PostgresDatabase, business_unit: str, *, limit: int = DEFAULT_SLOTS
    ) -> None:
        if limit < 1:
            raise ValueError("at least one slot is needed")
        self._db = database
        self._keys = [
            database.lock_key("pardot slot", f"{business_unit}.{n}") for n in range(limit)
        ]
        self._mine_free = list(self._keys)  # slots this process is not using
        # At most `limit` tasks of this process try the locks; the rest wait here, cheaply.
        self._local = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._local:
            key = await self._take()
            try:
                yield
            finally:
                await self._db.locks.unlock(key)
                self._mine_free.append(key)

    async def _take(self) -> int:
        wait, longest = POLL_SECONDS
        while True:
            for key in list(self._mine_free):
                if key not in self._mine_free:
                    continue  # another task of this process took it while we asked
                self._mine_free.remove(key)
                try:
                    got = await self._db.locks.try_lock(key)
                except BaseException:
                    self._mine_free.append(key)
                    raise
                if got:
                    return key
                self._mine_free.append(key)  # another node holds it
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)

    def close(self) -> None:
        """Slots are released with the database's lock connection."""
