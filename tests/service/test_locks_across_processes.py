"""Issue 21 rows 6 and 3 (issue 20's per-prospect window): `serve` and `worker` on one SQLite
file, each leasing one of two events, against the fake over HTTP.

The interleaving is made deterministic by Pardot's latency: every call of the fake waits
`latency` seconds *before* it is carried out. The first event is posted, and once its call is
in flight at Pardot (the fake counts it) the second is posted; the first process is busy with
its batch (one at a time), so the other process leases the second event and makes its
decision while the first call is still pending, and its own call lands after the first one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import Stack, open_stack
from tests.service.test_per_prospect import LOOKUP, deliver_in_turn, identify, post

NOW = datetime.now(UTC).replace(microsecond=0)


async def leased_and_calling(stack: Stack, message_id: str) -> None:
    """Returns once a process leased the event and its first call is pending at Pardot."""
    async with asyncio.timeout(20):
        while not _leased(stack, message_id):  # noqa: ASYNC110 - another process to watch
            await asyncio.sleep(0.01)
        while not sum(stack.fake.in_flight.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _leased(stack: Stack, message_id: str) -> bool:
    with sqlite3.connect(stack.tmp / "queue.db") as conn:
        row = conn.execute("SELECT state FROM events WHERE message_id = ?", (message_id,))
        return row.fetchone() == ("leased",)


async def test_an_older_event_leased_by_another_process_never_overwrites_the_newer(
    v4_stack: Stack,
) -> None:
    """Row 6: userId and anonymousId both link to one prospect; the newer event (by userId)
    and one 100 s older (by anonymousId) are written by two processes at once."""
    serve = await v4_stack.service()
    await v4_stack.service("worker")
    # A form fill (anonymousId) and a login (userId) of one email: both link to its prospect.
    form = {"email": "pat@x.io", "plan": "first"}
    await deliver_in_turn(
        v4_stack,
        serve.url,
        identify("m0", NOW - timedelta(seconds=300), form, anonymousId="a1"),
        identify("m1", NOW - timedelta(seconds=299), {"email": "pat@x.io"}, userId="u1"),
    )
    v4_stack.fake.latency = 1.5
    newer = identify("m2", NOW, {"plan": "newer"}, userId="u1")
    older = identify("m3", NOW - timedelta(seconds=100), {"plan": "older"}, anonymousId="a1")
    await post(serve.url, newer)
    await leased_and_calling(v4_stack, "m2")
    await post(serve.url, older)
    await v4_stack.wait_until(serve.url, lambda c: c("delivered") == 4, seconds=30)
    [prospect] = v4_stack.fake.all_prospects()
    assert prospect["plan"] == "newer"
    # Both processes delivered one of the two events: the interleaving the test is about.
    settled = [sum("event settled" in line for line in s.log) for s in v4_stack.services]
    assert all(settled), settled


@pytest.fixture
async def lookup_stack(tmp_path: Path) -> Any:
    async for stack in open_stack(tmp_path, 4, custom_fields={"org_id", "plan"}):
        yield stack


async def test_one_lookup_value_under_two_emails_on_two_processes_is_one_prospect(
    lookup_stack: Stack,
) -> None:
    """Row 3: two people (userIds, emails) send one lookup value, one event to each process:
    "nobody holds V, so create" is decided by one process at a time."""
    serve = await lookup_stack.service(**LOOKUP)
    await lookup_stack.service("worker", **LOOKUP)
    await asyncio.sleep(1.0)  # both processes checked the setup (the lookup field) at start
    lookup_stack.fake.latency = 1.0
    first = identify("m1", NOW, {"email": "ann@x.io", "org_id": "acme"}, userId="u1")
    second = identify("m2", NOW, {"email": "bob@x.io", "org_id": "acme"}, userId="u2")
    await post(serve.url, first)
    await leased_and_calling(lookup_stack, "m1")
    await post(serve.url, second)
    await lookup_stack.wait_until(serve.url, lambda c: c("delivered") == 2, seconds=40)
    holders = [p for p in lookup_stack.fake.all_prospects() if p.get("org_id") == "acme"]
    assert len(holders) == 1, holders
    settled = [sum("event settled" in line for line in s.log) for s in lookup_stack.services]
    assert all(settled), settled
