"""What only the PostgreSQL store shows: nodes leasing at once, migrations, start-up errors,
and the rule that CI runs these tests or fails."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from adapters.postgres.database import PostgresDatabase
from adapters.postgres.queue import PostgresEventQueue
from adapters.postgres.schema import COMPONENTS
from domain.errors import StoreUnusable
from domain.ports import Settlement
from tests.postgres import POSTGRES_URL, with_schema
from tests.queue.conftest import identify

ROOT = Path(__file__).resolve().parents[2]


async def test_nodes_leasing_at_once_never_share_a_person_and_keep_each_persons_order(
    postgres_url: str,
) -> None:
    """Three nodes (three pools), two workers each, leasing and settling as fast as they can:
    a person is held by one lease at a time, and their events come out in arrival order."""
    nodes = [await PostgresDatabase(postgres_url, pool_size=3).open() for _ in range(3)]
    queues = [PostgresEventQueue(node) for node in nodes]
    people, per_person = 12, 15
    await queues[0].put(
        [
            identify(f"{person}-{n}", user=f"p{person}", seq=n)
            for n in range(per_person)
            for person in range(people)
        ]
    )
    holders: dict[str, str] = {}
    order: dict[str, list[int]] = {}
    settled = 0

    async def work(queue: PostgresEventQueue) -> None:
        nonlocal settled
        while settled < people * per_person:
            events = await queue.lease(random.choice([1, 4, 9]), 30)
            if not events:
                await asyncio.sleep(0.005)
                continue
            mine = {e.payload["userId"] for e in events}
            assert not mine & holders.keys(), f"{mine & holders.keys()} leased twice at once"
            holders.update(dict.fromkeys(mine, events[0].lease))
            for event in events:
                order.setdefault(event.payload["userId"], []).append(event.payload["seq"])
            await asyncio.sleep(random.random() * 0.01)
            for person in mine:  # before the settlement commits, not after: see the assert
                del holders[person]
            lease = events[0].lease
            applied = await queue.settle(
                {e.id: Settlement("delivered", "ok", lease=lease) for e in events}
            )
            settled += len(applied)  # not `+= await`: that would add to a stale total

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(work(queue) for queue in queues for _ in range(2)))
        assert order == {f"p{p}": list(range(per_person)) for p in range(people)}
        assert (await queues[1].counts())["delivered"] == people * per_person
    finally:
        for node in nodes:
            await node.close()


async def test_nodes_starting_together_migrate_once_and_record_each_version(
    postgres_url: str,
) -> None:
    nodes = await asyncio.gather(*(PostgresDatabase(postgres_url).open() for _ in range(3)))
    for node in nodes:
        await node.close()
    with psycopg.connect(postgres_url) as conn:
        versions = dict(conn.execute("SELECT component, version FROM schema_versions").fetchall())
    assert versions == {name: len(steps) for name, steps in COMPONENTS.items()}


async def test_a_schema_written_by_a_newer_release_stops_start_up(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_versions SET version = 99 WHERE component = 'queue'")
    with pytest.raises(StoreUnusable, match="version 99, newer than this release"):
        await PostgresDatabase(postgres_url).open()


async def test_a_server_that_does_not_answer_stops_start_up_without_showing_the_password() -> None:
    url = "postgresql://someone:s3cret-word@127.0.0.1:1/events"
    with pytest.raises(StoreUnusable) as refused:
        await PostgresDatabase(url).open()
    message = str(refused.value)
    assert "127.0.0.1:1/events" in message and "DESTINATION_QUEUE_URL" in message
    assert "s3cret" not in message


async def test_a_schema_that_does_not_exist_is_named_at_start_up(postgres_url: str) -> None:
    with pytest.raises(StoreUnusable, match="no schema to create tables in"):
        await PostgresDatabase(with_schema(POSTGRES_URL, "no_such_schema_here")).open()


def test_with_ci_true_the_postgres_tests_fail_when_no_server_answers() -> None:
    """The same test, pointed at a port where nothing listens: skipped (saying why) on a
    developer's machine, failed under CI=true."""
    env = {**os.environ, "PARDOT_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/test"}
    target = f"{Path(__file__).name}::test_a_schema_written_by_a_newer_release_stops_start_up"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:randomly", target]
    local = subprocess.run(
        command, cwd=Path(__file__).parent, env={**env, "CI": ""}, capture_output=True, text=True
    )
    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout and "PARDOT_TEST_POSTGRES_URL" in local.stdout
    ci = subprocess.run(
        command,
        cwd=Path(__file__).parent,
        env={**env, "CI": "true"},
        capture_output=True,
        text=True,
    )
    assert ci.returncode != 0, ci.stdout
    assert "CI=true: the PostgreSQL tests must run" in ci.stdout
