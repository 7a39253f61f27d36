"""Issue 21 rows 6 and 3 (issue 20's per-prospect window): two processes on one store
(`serve` and `worker` on one SQLite file, or two `serve` nodes on one PostgreSQL), each leasing
one of two events, against the fake over HTTP.

The interleaving is made deterministic by Pardot's latency: every call of the fake waits
`latency` seconds *before* it is carried out. The first event is posted, and once its call is
in flight at Pardot (the fake counts it) the second is posted; the first process is busy with
its batch (one at a time: `DESTINATION_BATCHES_IN_FLIGHT=1`), so the other process leases the second event and makes its
decision while the first call is still pending, and its own call lands after the first one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.service.conftest import ServiceProcess, Stack, open_stack
from tests.service.test_index_changes import rebuild_index
from tests.service.test_per_prospect import LOOKUP, deliver_in_turn, identify, post

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Two:
    """Two processes sharing one store, and where to read its queue."""

    stack: Stack
    first: ServiceProcess
    postgres_url: str | None

    def leased(self, message_id: str) -> bool:
        query = "SELECT state FROM events WHERE message_id = %s"
        if self.postgres_url is not None:
            with psycopg.connect(self.postgres_url, autocommit=True) as pg:
                row = pg.execute(query, (message_id,)).fetchone()
        else:
            with sqlite3.connect(self.stack.tmp / "queue.db") as conn:
                row = conn.execute(query.replace("%s", "?"), (message_id,)).fetchone()
        return row == ("leased",)

    async def leased_and_calling(self, message_id: str) -> None:
        """Returns once a process leased the event and its first call is pending at Pardot."""
        async with asyncio.timeout(20):
            while not self.leased(message_id):  # noqa: ASYNC110 - another process to watch
                await asyncio.sleep(0.01)
            while not sum(self.stack.fake.in_flight.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    def both_settled_one(self) -> None:
        """Each process delivered one of the two events: the interleaving under test."""
        settled = [sum("event settled" in line for line in s.log) for s in self.stack.services]
        assert all(settled), settled


async def start_two(request: pytest.FixtureRequest, stack: Stack, store: str, **env: str) -> Two:
    # One batch at a time per process: a process with several in flight would lease the second
    # event itself (the same interleaving within one process), not leave it to the other.
    env = {"DESTINATION_BATCHES_IN_FLIGHT": "1", **env}
    if store == "postgres":
        url: str | None = request.getfixturevalue("postgres_url")
        first = await stack.service(DESTINATION_QUEUE_URL=str(url), **env)
        await stack.service(DESTINATION_QUEUE_URL=str(url), **env)
    else:
        url = None
        first = await stack.service(**env)
        await stack.service("worker", **env)
    await asyncio.sleep(1.0)  # both processes checked the setup at start, before any latency
    return Two(stack, first, url)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_an_older_event_leased_by_another_process_never_overwrites_the_newer(
    v4_stack: Stack, store: str, request: pytest.FixtureRequest
) -> None:
    """Row 6: userId and anonymousId both link to one prospect; the newer event (by userId)
    and one 100 s older (by anonymousId) are written by two processes at once."""
    two = await start_two(request, v4_stack, store)
    # A form fill (anonymousId) and a login (userId) of one email: both link to its prospect.
    form = {"email": "pat@x.io", "plan": "first"}
    await deliver_in_turn(
        v4_stack,
        two.first.url,
        identify("m0", NOW - timedelta(seconds=300), form, anonymousId="a1"),
        identify("m1", NOW - timedelta(seconds=299), {"email": "pat@x.io"}, userId="u1"),
    )
    v4_stack.fake.latency = 1.5
    newer = identify("m2", NOW, {"plan": "newer"}, userId="u1")
    older = identify("m3", NOW - timedelta(seconds=100), {"plan": "older"}, anonymousId="a1")
    await post(two.first.url, newer)
    await two.leased_and_calling("m2")
    await post(two.first.url, older)
    await v4_stack.wait_until(two.first.url, lambda c: c("delivered") == 4, seconds=30)
    [prospect] = v4_stack.fake.all_prospects()
    assert prospect["plan"] == "newer"
    two.both_settled_one()


@pytest.fixture
async def lookup_stack(tmp_path: Path) -> Any:
    async for stack in open_stack(tmp_path, 4, custom_fields={"org_id", "plan"}):
        yield stack


@pytest.mark.parametrize(
    ("store", "indexed"), [("sqlite", False), ("sqlite", True), ("postgres", False)]
)
async def test_one_lookup_value_under_two_emails_on_two_processes_is_one_prospect(
    lookup_stack: Stack, store: str, indexed: bool, request: pytest.FixtureRequest
) -> None:
    """Row 3: two people (userIds, emails) send one lookup value, one event to each process:
    "nobody holds V, so create" is decided by one process at a time, whether it is decided
    by reading Pardot or from the index."""
    if indexed:
        lookup_stack.fake.seed_prospect(email="someone@x.io", org_id="other")
        await rebuild_index(lookup_stack, **LOOKUP)
    two = await start_two(request, lookup_stack, store, **LOOKUP)
    lookup_stack.fake.latency = 1.0
    first = identify("m1", NOW, {"email": "ann@x.io", "org_id": "acme"}, userId="u1")
    second = identify("m2", NOW, {"email": "bob@x.io", "org_id": "acme"}, userId="u2")
    await post(two.first.url, first)
    await two.leased_and_calling("m1")
    await post(two.first.url, second)
    await lookup_stack.wait_until(two.first.url, lambda c: c("delivered") == 2, seconds=40)
    holders = [p for p in lookup_stack.fake.all_prospects() if p.get("org_id") == "acme"]
    assert len(holders) == 1, holders
    two.both_settled_one()
