"""One contract for every PardotSlots (memory, SQLite file locks, PostgreSQL advisory locks):
at most the limit in flight, shared by every process on the store, freed when a holder dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.pardot_slots import InMemorySlots
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.pardot_slots import PostgresSlots
from adapters.sqlite import pardot_slots as sqlite_slots
from adapters.sqlite.pardot_slots import SQLiteStoreSlots
from tests.postgres import fresh_schema

ROOT = Path(__file__).resolve().parents[2]
UNIT = "0Uv000000000001AAA"
# A process of its own ("another node") holds every slot until it is killed.
HOLDER = textwrap.dedent(
    """
    import asyncio, contextlib, sys, time

    async def main(kind, where):
        if kind == "sqlite":
            from adapters.sqlite.pardot_slots import SQLiteStoreSlots
            slots, database = SQLiteStoreSlots(where, sys.argv[3], limit=5), None
        else:
            from adapters.postgres.pardot_slots import PostgresSlots
            from adapters.postgres.database import PostgresDatabase
            database = await PostgresDatabase(where).open()
            slots = PostgresSlots(database, sys.argv[3], limit=5)
        async with contextlib.AsyncExitStack() as held:
            for _ in range(5):
                await held.enter_async_context(slots.slot())
            print("holding", time.time(), flush=True)
            await asyncio.sleep(60)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)

# () -> a PardotSlots on the test's store; every call is another process's view of it.
MakeSlots = Callable[..., Any]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def make_slots(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeSlots]:
    if request.param == "memory":
        shared = InMemorySlots(3)  # one process only: every caller shares the one object
        yield lambda: shared
    elif request.param == "sqlite":
        made: list[SQLiteStoreSlots] = []

        def sqlite() -> SQLiteStoreSlots:
            made.append(SQLiteStoreSlots(tmp_path / "queue.db", UNIT, limit=3))
            return made[-1]

        yield sqlite
        for slots in made:
            slots.close()
    else:
        with fresh_schema() as url:
            databases = [await PostgresDatabase(url).open() for _ in range(2)]

            def postgres() -> PostgresSlots:
                databases.append(databases.pop(0))  # each call another database connection
                return PostgresSlots(databases[-1], UNIT, limit=3)

            yield postgres
            for database in databases:
                await database.close()


async def test_no_more_than_the_limit_are_in_flight_across_processes(make_slots: MakeSlots) -> None:
    first, second = make_slots(), make_slots()
    in_flight, most = 0, 0

    async def call(slots: Any) -> None:
        nonlocal in_flight, most
        async with slots.slot():
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1

    started = time.monotonic()
    await asyncio.gather(*(call(first if n % 2 else second) for n in range(24)))
    assert most == 3
    # A slot given back is taken again at once (only a dead holder's slot is held back).
    assert time.monotonic() - started < 4.0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_slots_of_a_killed_process_come_back(kind: str, tmp_path: Path) -> None:
    """Once the killed call may have ended at Pardot (here 1 s), not before: Pardot counts a
    call whose sender died until it answers. PostgreSQL counts that second from the death,
    SQLite from the start of the dead call."""
    with fresh_schema() if kind == "postgres" else contextlib.nullcontext("") as url:
        where = url if kind == "postgres" else str(tmp_path / "queue.db")
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, kind, where, UNIT,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert holder.stdout is not None
        said = (await asyncio.wait_for(holder.stdout.readline(), 30)).split()
        assert said[0] == b"holding"
        calls_began = float(said[1])  # just after the five calls began (the holder's clock)
        database = await PostgresDatabase(url).open() if kind == "postgres" else None
        slots: Any = (
            PostgresSlots(database, UNIT, limit=5, after_death=1.0)
            if database is not None
            else SQLiteStoreSlots(where, UNIT, limit=5, after_death=1.0)
        )
        try:
            waiting = asyncio.create_task(_one_call(slots))
            await asyncio.sleep(0.5)
            assert not waiting.done(), "a sixth call went out while five were in flight"
            holder.kill()  # kill -9: no release
            await holder.wait()
            died = time.time()
            await asyncio.wait_for(waiting, 10)
            since = time.time() - (calls_began if kind == "sqlite" else died)
            # 0.1 s of slack for SQLite: the calls began a moment before the holder said so.
            assert (0.9 if kind == "sqlite" else 1.0) <= since < 3.0, since
        finally:
            if holder.returncode is None:
                holder.kill()
                await holder.wait()
            if database is not None:
                await database.close()
            else:
                slots.close()


async def _one_call(slots: Any) -> None:
    async with slots.slot():
        pass


class _no_schema:
    def __enter__(self) -> str:
        return ""

    def __exit__(self, *exc_info: object) -> None:
        return None


async def test_a_wait_for_a_dead_call_cut_short_keeps_the_slot_held_back(tmp_path: Path) -> None:
    slots = SQLiteStoreSlots(tmp_path / "queue.db", UNIT, limit=1, after_death=1.0)
    try:
        # As a holder killed mid-call leaves its slot: marked in use, since just now.
        marked = time.time()
        os.pwrite(slots._fd(0), sqlite_slots.IN_USE + sqlite_slots._SINCE.pack(marked), 0)
        cut_short = asyncio.create_task(_one_call(slots))
        await asyncio.sleep(0.2)
        cut_short.cancel()  # a shutdown, say, while it waited for the dead call
        with contextlib.suppress(asyncio.CancelledError):
            await cut_short
        await _one_call(slots)
        assert time.time() - marked >= 1.0  # the next caller still waited it out
        started = time.time()
        await _one_call(slots)
        assert time.time() - started < 0.5  # a slot given back in order is free at once
    finally:
        slots.close()
