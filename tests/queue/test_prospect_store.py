"""One contract for every ProspectStore (memory, SQLite, PostgreSQL), plus what only a
shared store can do.

The SQLite and PostgreSQL stores are shared by processes: their create locks are tested with
a real second process holding one and being killed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.prospect_store import PostgresProspectStore
from adapters.sqlite.prospect_store import SQLiteProspectStore
from domain.ports import FieldStamp
from tests.postgres import fresh_schema

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryProspectStore()
    elif request.param == "sqlite":
        sqlite = SQLiteProspectStore(tmp_path / "store.db")
        yield sqlite
        await sqlite.close()
    else:
        with fresh_schema() as url:
            async with PostgresDatabase(url) as database:
                yield PostgresProspectStore(database)


async def test_unknown_identities_and_prospects_know_nothing(store: Any) -> None:
    assert await store.links(["user:u1", "lookup:org_id=acme"]) == {}
    assert await store.stamps("1001") == {}


async def test_links_point_identities_at_prospects_and_can_be_replaced_or_dropped(
    store: Any,
) -> None:
    await store.link({"user:u1": "1001", "anonymous:a1": "1001", "lookup:org_id=7": "1002"})
    await store.link({"user:u1": "1003"})
    await store.unlink(["anonymous:a1", "fid:never-linked"])
    found = await store.links(["user:u1", "anonymous:a1", "lookup:org_id=7"])
    assert found == {"user:u1": "1003", "lookup:org_id=7": "1002"}


async def test_a_field_keeps_the_stamp_of_the_later_event(store: Any) -> None:
    await store.record("1001", {"email": FieldStamp("new@x.io", T0 + timedelta(minutes=10))})
    await store.record(
        "1001",
        {
            "email": FieldStamp("old@x.io", T0 + timedelta(minutes=5)),  # older: ignored
            "interests": FieldStamp(("a", "b"), T0),
        },
    )
    assert await store.stamps("1001") == {
        "email": FieldStamp("new@x.io", T0 + timedelta(minutes=10)),
        "interests": FieldStamp(("a", "b"), T0),
    }
    assert await store.stamps("1002") == {}


async def test_times_in_other_zones_compare_as_instants(store: Any) -> None:
    paris = datetime(2026, 1, 1, 1, 30, tzinfo=UTC).astimezone().tzinfo
    await store.record("1", {"plan": FieldStamp("a", T0)})
    await store.record("1", {"plan": FieldStamp("b", (T0 - timedelta(hours=1)).astimezone(paris))})
    assert (await store.stamps("1"))["plan"].value == "a"


async def test_the_create_lock_lets_one_holder_in_at_a_time_per_email(store: Any) -> None:
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def hold(name: str, email: str) -> None:
        async with store.create_lock(email):
            inside.append(name)
            overlaps.append(tuple(inside))
            await asyncio.sleep(0.02)
            inside.remove(name)

    await asyncio.gather(hold("a", "Pat@x.io"), hold("b", "pat@X.io "), hold("c", "pat@x.io"))
    assert all(len(seen) == 1 for seen in overlaps)
    # Other emails do not wait for each other.
    started = time.monotonic()
    await asyncio.gather(*(hold(str(n), f"p{n}@x.io") for n in range(5)))
    assert time.monotonic() - started < 0.5


async def test_sqlite_knowledge_survives_a_reopen(tmp_path: Path) -> None:
    first = SQLiteProspectStore(tmp_path / "store.db")
    await first.link({"user:u1": "1001"})
    await first.record("1001", {"email": FieldStamp("a@x.io", T0)})
    await first.close()
    again = SQLiteProspectStore(tmp_path / "store.db")
    assert await again.links(["user:u1"]) == {"user:u1": "1001"}
    assert await again.stamps("1001") == {"email": FieldStamp("a@x.io", T0)}
    await again.close()


async def test_field_times_of_the_identity_keyed_store_are_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the layout before issue 9
        conn.execute("CREATE TABLE identities (identity TEXT PRIMARY KEY, prospect_id INTEGER)")
        conn.execute(
            "CREATE TABLE identity_field_times (identity TEXT NOT NULL, field TEXT NOT NULL,"
            " set_at INTEGER NOT NULL, PRIMARY KEY (identity, field))"
        )
        micros = int(T0.timestamp() * 1_000_000)
        conn.executemany("INSERT INTO identities VALUES (?, ?)", [("lookup:org_id=acme", 1002)])
        conn.executemany(
            "INSERT INTO identity_field_times VALUES (?, ?, ?)",
            [
                ("id:1001", "plan", micros),
                ("email:pat@x.io", "first_name", micros),
                ("lookup:org_id=acme", "vip", micros),
                ("latest-email:nobody@x.io", "plan", micros),  # never tied to a prospect
            ],
        )
    store = SQLiteProspectStore(path)
    assert (await store.stamps("1001"))["plan"].at == T0
    assert (await store.stamps("email:pat@x.io"))["first_name"].at == T0
    assert (await store.stamps("1002"))["vip"].at == T0
    assert await store.links(["lookup:org_id=acme"]) == {"lookup:org_id=acme": "1002"}
    await store.close()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "identity_field_times" not in tables and "identities" not in tables


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from adapters.sqlite.prospect_store import SQLiteProspectStore

    async def main():
        store = SQLiteProspectStore(sys.argv[1], lock_ttl=1.0, lock_heartbeat=0.2)
        async with store.create_lock("pat@x.io"):
            print("holding", flush=True)
            await asyncio.sleep(float(sys.argv[2]))
        print("released", flush=True)
        await store.close()

    asyncio.run(main())
    """
)


async def _holder(path: Path, seconds: float) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(path), str(seconds),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"holding\n"
    return process


async def test_another_process_waits_for_a_live_holder_whose_heartbeat_outlasts_the_ttl(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    holder = await _holder(path, 2.5)  # longer than its 1 s expiry: only heartbeats keep it
    store = SQLiteProspectStore(path, lock_ttl=1.0, lock_heartbeat=0.2)
    started = time.monotonic()
    async with store.create_lock("PAT@x.io"):
        waited = time.monotonic() - started
        assert holder.returncode is None or await holder.wait() == 0
    await holder.wait()
    assert waited >= 2.0
    await store.close()


async def test_a_lock_whose_holder_was_killed_lapses_within_its_ttl(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    holder = await _holder(path, 60)
    holder.kill()  # kill -9: no release, no more heartbeats
    await holder.wait()
    store = SQLiteProspectStore(path, lock_ttl=1.0, lock_heartbeat=0.2)
    started = time.monotonic()
    async with asyncio.timeout(10):  # a lock that never lapses fails here, not at the suite's
        async with store.create_lock("pat@x.io"):
            waited = time.monotonic() - started
    assert waited < 3.0
    await store.close()


PG_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from adapters.postgres.database import PostgresDatabase
    from adapters.postgres.prospect_store import PostgresProspectStore

    async def main():
        async with PostgresDatabase(sys.argv[1]) as database:
            store = PostgresProspectStore(database)
            async with store.create_lock("pat@x.io"):
                print("holding", flush=True)
                await asyncio.sleep(float(sys.argv[2]))
            print("released", flush=True)

    asyncio.run(main())
    """
)


async def _pg_holder(url: str, seconds: float) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PG_HOLDER, url, str(seconds),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"holding\n"
    return process


async def test_postgres_create_lock_waits_for_another_node_and_its_death_frees_it_at_once(
    postgres_url: str,
) -> None:
    """Another process (a node) holds the lock: we wait; once it is killed (kill -9, no
    release) PostgreSQL ends its session and the advisory lock is ours at once."""
    async with PostgresDatabase(postgres_url) as database:
        store = PostgresProspectStore(database)
        holder = await _pg_holder(postgres_url, 60)
        waiter = asyncio.create_task(_hold_briefly(store, "PAT@x.io"))
        await asyncio.sleep(1.0)
        assert not waiter.done(), "the lock was taken while another node held it"
        holder.kill()
        await holder.wait()
        started = time.monotonic()
        await asyncio.wait_for(waiter, 10)
        assert time.monotonic() - started < 2.0
        # Unrelated emails never waited, and a released lock can be taken again at once.
        async with (
            asyncio.timeout(2),
            store.create_lock("other@x.io"),
            store.create_lock("pat@x.io"),
        ):
            pass


async def test_postgres_create_locks_are_scoped_to_their_schema(postgres_url: str) -> None:
    """Two installations in one database (two schemas) do not share locks."""
    with fresh_schema() as other_url:
        async with (
            PostgresDatabase(postgres_url) as one,
            PostgresDatabase(other_url) as two,
            asyncio.timeout(5),
            PostgresProspectStore(one).create_lock("pat@x.io"),
            PostgresProspectStore(two).create_lock("pat@x.io"),
        ):
            pass


async def _hold_briefly(store: Any, email: str) -> None:
    async with store.create_lock(email):
        await asyncio.sleep(0.01)
