"""A store that comes back is used again within seconds, however long it was gone.

psycopg_pool waits twice as long before each new attempt to replace a lost connection (1, 2,
4, 8, 16 s...): left to that, a pool whose server was gone for 3.4 s makes its next attempt
about 3.5 s after the server's return, and after a minute's outage up to a minute after it. Our
pool gives an attempt up after a few seconds, so a caller starts a fresh one at once. The
proxy cuts the store for real; a caller asks for a connection every 0.2 s, as the door and the
worker do while the store is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from adapters.postgres.database import PostgresDatabase
from tests.faults.proxy import proxies

# Just past psycopg_pool's third attempt (at 1 + 2 s, give or take its 10% jitter): left to
# itself, its fourth comes 4 s later, about 3.5 s after the store's return.
OUTAGE_SECONDS = 3.4
BACK_WITHIN = 2.0


async def test_the_pool_reconnects_within_seconds_of_the_store_coming_back(
    postgres_url: str,
) -> None:
    async with proxies(1, postgres_url) as [proxy]:
        database = await PostgresDatabase(proxy.url_for(postgres_url), wait_seconds=1).open()
        try:

            async def ask() -> bool:
                with contextlib.suppress(Exception):
                    async with database.connection() as conn:
                        await conn.execute("SELECT 1")
                        return True
                return False

            assert await ask()
            proxy.cut()
            cut_at = time.monotonic()
            while time.monotonic() - cut_at < OUTAGE_SECONDS:
                assert not await ask(), "a query went through the cut"
                await asyncio.sleep(0.2)
            proxy.reopen()
            reopened_at = time.monotonic()
            while not await ask():
                if time.monotonic() - reopened_at > 20:
                    pytest.fail("the pool did not reconnect within 20 s of the store's return")
                await asyncio.sleep(0.2)
            back = time.monotonic() - reopened_at
        finally:
            await database.close()
    print(f"\nstore gone {OUTAGE_SECONDS:.0f} s: the pool answered again {back:.1f} s after")
    assert back < BACK_WITHIN, f"the pool answered again only {back:.1f} s after the store"
