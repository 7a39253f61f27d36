"""An import in flight when `serve` is killed (kill -9), through the real service against the
fake over HTTP (issue 23): after a restart the import is found again by its events' ids in the
store and followed to its end, not submitted again; every event is settled once; a newer
event for one of its prospects, sent after the restart, wins."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx

from tests.service.conftest import Stack
from tests.service.test_bulk_lane import BULK, PEOPLE, identify, known_people, prospect
from tests.service.test_forget_end_to_end import post

RESTARTABLE = {**BULK, "DESTINATION_LEASE_SECONDS": "2"}


async def until_submitted(stack: Stack) -> int:
    for _ in range(200):
        submitted = [j for j in stack.fake.imports.jobs.values() if j.submitted_at is not None]
        if submitted:
            return submitted[0].id
        await asyncio.sleep(0.05)
    raise AssertionError("no import was submitted")


def settled(stack: Stack) -> dict[str, list[tuple[str, str]]]:
    """Each message's settlements other than retries, from the queue file's history."""
    with sqlite3.connect(stack.tmp / "queue.db") as conn:
        rows = conn.execute(
            "SELECT message_id, outcome, reason FROM history WHERE outcome <> 'retry' ORDER BY id"
        ).fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for message_id, outcome, reason in rows:
        found.setdefault(message_id, []).append((outcome, reason))
    return found


async def test_kill_9_during_an_import_then_a_restart_follows_it_and_writes_nothing_twice(
    v4_stack: Stack,
) -> None:
    fake = v4_stack.fake
    first = await v4_stack.service(**RESTARTABLE)
    async with httpx.AsyncClient(timeout=30) as client:
        ids = await known_people(v4_stack, first.url, client)
        fake.import_queue_delay = 6.0  # Pardot starts on it well after the restart
        await post(
            client,
            first.url,
            *(identify(f"old{i}", f"u{i}", company="Old Co") for i in range(PEOPLE)),
        )
        import_id = await until_submitted(v4_stack)
        await first.kill9()
        second = await v4_stack.service(**RESTARTABLE)
        await post(
            client,
            second.url,
            identify("new0", "u0", company="New Co"),  # after u0's import row, in order
            # Another person, same prospect: free to go at once, it must wait for the import.
            identify("new1", "x1", email="u1@bulk.example", company="Newer Co"),
        )
        await v4_stack.wait_until(
            second.url,
            lambda c: c("delivered") == 2 * PEOPLE + 2 and c("leased") + c("retry") == 0,
            seconds=60,
        )
    jobs = list(fake.imports.jobs.values())
    assert [j.id for j in jobs] == [import_id]  # never submitted again, no second import
    assert jobs[0].state == "Complete" and len(jobs[0].rows) == PEOPLE
    history = settled(v4_stack)
    for i in range(PEOPLE):
        [(outcome, reason)] = history[f"old{i}"]  # settled once
        assert outcome == "delivered" and f"(import {import_id})" in reason, reason
    assert [o for o, _ in history["new0"]] == ["delivered"]
    assert [o for o, _ in history["new1"]] == ["delivered"]
    assert prospect(fake, ids[0])["company"] == "New Co"
    assert prospect(fake, ids[1])["company"] == "Newer Co"
    assert [prospect(fake, i)["company"] for i in ids[2:]] == ["Old Co"] * (PEOPLE - 2)
    with sqlite3.connect(v4_stack.tmp / "queue.db") as conn:
        assert conn.execute("SELECT count(*) FROM import_ledger").fetchone() == (0,)
