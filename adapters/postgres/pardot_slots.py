"""Pardot's 5-in-flight limit shared by every node on one PostgreSQL store: advisory locks.

Slot n of a business unit is the session-level advisory lock of (unit, n), held on the
database's lock connection while one request is in flight. A node that dies ends its session,
and PostgreSQL frees its slots at once (process killed) or once keepalives give up on its
machine (see adapters.postgres.database). Nodes configured with fewer slots use the first ones
only, so together they never exceed the largest PARDOT_MAX_CONCURRENCY among them.

A lock freed by a death is not a call ended: Pardot goes on with a request whose sender died
(and counts it against the five) until it answers into the void. So each slot is also marked
in use in a table while it is held; whoever takes a slot still marked in use knows its holder
died mid-call and leaves it unused for `AFTER_DEATH_SECONDS` first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from adapters.postgres.database import PostgresDatabase

DEFAULT_SLOTS = 5  # Pardot answers 66 to the sixth concurrent request
POLL_SECONDS = (0.005, 0.05)  # first and longest wait between tries while all are taken
AFTER_DEATH_SECONDS = 5.0  # how long a call whose sender died may still run at Pardot
_MARK = """WITH before AS (SELECT in_use FROM pardot_slots WHERE key = %(key)s)
    INSERT INTO pardot_slots AS slot (key, in_use) VALUES (%(key)s, true)
    ON CONFLICT (key) DO UPDATE SET in_use = true
    RETURNING (SELECT in_use FROM before)"""


class PostgresSlots:
    """A PardotSlots for every node whose store is this PostgreSQL database and schema."""

    def __init__(
        self,
        database: PostgresDatabase,
        business_unit: str,
        *,
        limit: int = DEFAULT_SLOTS,
        after_death: float = AFTER_DEATH_SECONDS,
    ) -> None:
        if limit < 1:
            raise ValueError("at least one slot is needed")
        self._db = database
        self._after_death = after_death
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
                if await self._db.locks.run(_MARK, key):
                    await asyncio.sleep(self._after_death)  # its last call may still run
                yield
            finally:
                with contextlib.suppress(Exception):  # a lost connection lost the lock too
                    if self._db.locks.holds(key):
                        await self._db.locks.run(
                            "UPDATE pardot_slots SET in_use = false WHERE key = %(key)s", key
                        )
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
