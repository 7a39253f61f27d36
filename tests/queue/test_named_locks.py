"""`ProspectStore.hold`: one named lock over many keys, shared by every store on one file or
one database (memory: one process), for every backend.

Two store objects on one SQLite file or one PostgreSQL schema stand for two processes (each
has its own owner, or its own lock session); a real second process is killed to show that a
dead holder's locks lapse.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.prospect_store import PostgresProspectStore
from adapters.sqlite.prospect_store import SQLiteProspectStore
from tests.postgres import fresh_schema

ROOT = Path(__file__).resolve().parents[2]
TTL = {"lock_ttl": 1.0, "lock_heartbeat": 0.2}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def two(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """Two stores sharing their locks: two processes' view of one file or one database."""
    if request.param == "memory":
        store = InMemoryProspectStore()
        yield store, store
    elif request.param == "sqlite":
        one = SQLiteProspectStore(tmp_path / "store.db", **TTL)
        other = SQLiteProspectStore(tmp_path / "store.db", **TTL)
        yield one, other
        await one.close()
        await other.close()
    else:
        with fresh_schema() as url:
            async with PostgresDatabase(url) as first, PostgresDatabase(url) as second:
                yield PostgresProspectStore(first), PostgresProspectStore(second)


async def entered(store: Any, keys: list[str], seconds: float) -> bool:
    """Whether `hold(keys)` gets in within `seconds` (and is given back at once)."""
    try:
        async with asyncio.timeout(seconds), store.hold(keys):
            return True
    except TimeoutError:
        return False


async def test_a_hold_excludes_a_second_holder_of_any_shared_key(two: tuple[Any, Any]) -> None:
    one, other = two
    async with one.hold(["prospect:1", "prospect:2"]):
        assert not await entered(other, ["prospect:3", "PROSPECT:2 "], 0.5)
        assert await entered(other, ["prospect:3", "lookup:org_id=7"], 2)  # nothing shared
    assert await entered(other, ["prospect:3", "prospect:2"], 2)


async def test_a_waiter_keeps_no_key_after_the_one_it_waits_for(two: tuple[Any, Any]) -> None:
    """Sorted acquisition: waiting for k2 while holding k3 could close a cycle."""
    one, other = two
    async with one.hold(["k2"]):
        waiting = asyncio.create_task(entered(other, ["k3", "k2", "k1"], 60))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert await entered(one, ["k3"], 2), "the waiter for k2 kept k3"
        assert not await entered(one, ["k1"], 0.3), "the waiter for k2 let go of k1"
    assert await asyncio.wait_for(waiting, 5)


async def test_overlapping_sets_in_opposite_orders_do_not_deadlock(two: tuple[Any, Any]) -> None:
    one, other = two
    inside: dict[str, int] = {}
    clashes: list[str] = []

    async def use(store: Any, keys: list[str]) -> None:
        async with store.hold(keys):
            for key in keys:
                inside[key] = inside.get(key, 0) + 1
                if inside[key] > 1:
                    clashes.append(key)
            await asyncio.sleep(0.01)
            for key in keys:
                inside[key] -= 1

    forward, backward = ["a", "b", "c", "d"], ["d", "c", "b", "a"]
    async with asyncio.timeout(30):  # a deadlock fails here, not at the suite's timeout
        await asyncio.gather(
            *(use(one, forward) for _ in range(5)),
            *(use(other, backward) for _ in range(5)),
            *(use(other, ["c", "a"]) for _ in range(3)),
            *(use(one, ["d", "b"]) for _ in range(3)),
        )
    assert clashes == []


async def test_cancelling_a_waiting_or_holding_task_gives_its_keys_back(
    two: tuple[Any, Any],
) -> None:
    one, other = two
    async with one.hold(["k2"]):
        # Takes k1 (the free prefix), then waits for k2: cancelled while waiting.
        waiting = asyncio.create_task(entered(other, ["k1", "k2"], 60))
        await asyncio.sleep(0.5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await entered(one, ["k1"], 2), "the cancelled waiter kept k1"
    got_in = asyncio.Event()

    async def holder() -> None:
        async with other.hold(["k1", "k2"]):
            got_in.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(holder())
    await asyncio.wait_for(got_in.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await entered(one, ["k1", "k2"], 2), "the cancelled holder kept its keys"


async def test_sqlite_keys_taken_while_waiting_for_the_rest_outlive_the_ttl(
    tmp_path: Path,
) -> None:
    """The heartbeat renews the free prefix a hold took while it waits (1 s expiry, 2.5 s
    wait): a third process never slips in."""
    path = tmp_path / "store.db"
    first, second, third = (SQLiteProspectStore(path, **TTL) for _ in range(3))
    order: list[str] = []

    async def second_holds() -> None:
        async with second.hold(["k1", "k2"]):
            order.append("second")

    async with first.hold(["k2"]):
        waiting = asyncio.create_task(second_holds())
        await asyncio.sleep(0.3)
        assert not await entered(third, ["k1"], 2.2)
    await asyncio.wait_for(waiting, 5)
    assert order == ["second"]
    for store in (first, second, third):
        await store.close()


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from adapters.postgres.database import PostgresDatabase
    from adapters.postgres.prospect_store import PostgresProspectStore
    from adapters.sqlite.prospect_store import SQLiteProspectStore

    async def main(kind, where):
        keys = ["prospect:1", "lookup:org_id=7", "pat@x.io"]
        if kind == "sqlite":
            store = SQLiteProspectStore(where, lock_ttl=1.0, lock_heartbeat=0.2)
            async with store.hold(keys):
                print("holding", flush=True)
                await asyncio.sleep(60)
        else:
            async with PostgresDatabase(where) as database:
                async with PostgresProspectStore(database).hold(keys):
                    print("holding", flush=True)
                    await asyncio.sleep(60)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def _holder(kind: str, where: str) -> asyncio.subprocess.Process:
    """A process holding three keys until it is killed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, kind, where, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"holding\n"
    return process


async def test_a_dead_holders_keys_lapse_sqlite_within_its_ttl(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteProspectStore(path, **TTL)
    process = await _holder("sqlite", str(path))
    assert not await entered(store, ["lookup:org_id=7", "prospect:1"], 1.5)
    process.kill()  # kill -9: no release, no more heartbeats
    await process.wait()
    started = time.monotonic()
    assert await entered(store, ["lookup:org_id=7", "prospect:1"], 10)
    assert time.monotonic() - started < 3.0
    await store.close()


async def test_a_dead_holders_keys_lapse_postgres_with_its_session(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url) as database:
        store = PostgresProspectStore(database)
        process = await _holder("postgres", postgres_url)
        assert not await entered(store, ["pat@x.io", "prospect:1"], 0.5)
        process.kill()  # PostgreSQL ends its session: its advisory locks go at once
        await process.wait()
        started = time.monotonic()
        assert await entered(store, ["pat@x.io", "prospect:1"], 10)
        assert time.monotonic() - started < 2.0


async def test_a_create_lock_is_the_hold_of_its_email(two: tuple[Any, Any]) -> None:
    one, other = two
    async with one.create_lock("Pat@X.io"):
        assert not await entered(other, ["prospect:1", "pat@x.io"], 0.5)


async def test_a_batch_worth_of_keys_is_held_and_given_back_as_one(two: tuple[Any, Any]) -> None:
    """1,200 prospects (more than SQLite binds in one statement) in one hold."""
    one, other = two
    keys = [f"prospect:{n}" for n in range(1200)]
    async with one.hold(keys):
        assert not await entered(other, ["prospect:1150"], 0.5)
    assert await entered(other, keys, 5)
