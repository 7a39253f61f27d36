"""Issue 25 through `serve` against the fake Pardot, on SQLite and on PostgreSQL.

A person has an event delivered (a prospect in Pardot and the index), one dead-lettered and one
waiting (deliveries paused by Pardot's daily limit); another person's events sit in the same
batches. `POST /admin/forget` with `inPardot` forgets them: afterwards `explain` finds nothing,
`dead-letters` lists none of theirs, no table and no text column of the store (nor the SQLite
file's bytes) holds their email or userId, the fake no longer has the prospect, a rebuild of
the index does not bring it back, a new identify of theirs is answered 200 and counted as
suppressed but never stored, and the other person's events are as they were. Bad requests
(no key, a wrong key, an unknown person, a malformed email, the key unset) remove nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from tests.forget.scan import file_bytes_hits, postgres_hits, sqlite_hits
from tests.postgres import fresh_schema
from tests.service.conftest import WRITE_KEY, ServiceProcess, Stack

AUTH = (WRITE_KEY, "")
ADMIN_KEY = "e2e-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
EMAIL, USER, ANONYMOUS = "grace.hopper@navy.example", "grace-hopper-1906", "anon-grace-0909"
OTHER = "alan-turing-1912"


def identify(message_id: str, user: str, **extra: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "userId": user, **extra}


@contextlib.contextmanager
def store_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'queue.db'}"
    else:
        with fresh_schema() as url:
            yield url


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        # Closed at once: a connection left open keeps the file's WAL from being emptied when
        # the service closes, which is not what the scan below is about.
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return conn.execute(query).fetchall()
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def others(url: str) -> list[tuple[Any, ...]]:
    return rows(url, f"SELECT id, state FROM events WHERE payload LIKE '%{OTHER}%' ORDER BY id")


def plain_text(url: str) -> dict[str, int]:
    needles = [EMAIL, USER, ANONYMOUS]
    if url.startswith("sqlite"):
        return sqlite_hits(Path(url.removeprefix("sqlite:///")), needles)
    return postgres_hits(url, needles)


@dataclass
class Ran:
    returncode: int
    stdout: str


async def cli(service: ServiceProcess, *args: str) -> Ran:
    """A command as a process of its own, with the service's settings; the fake Pardot keeps
    answering on this loop meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "entrypoints.cli.main",
        *args,
        env=service.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode())


async def post(client: httpx.AsyncClient, url: str, *events: dict[str, Any]) -> None:
    answer = await client.post(f"{url}/v1/batch", json={"batch": list(events)}, auth=AUTH)
    assert answer.status_code == 200, answer.text


async def counts_when(
    client: httpx.AsyncClient,
    url: str,
    predicate: Callable[[Callable[[str], int]], bool],
    seconds: float = 40.0,
) -> dict[str, int]:
    """`Stack.wait_until` with the admin key, which /metrics asks for once it is set."""
    deadline = asyncio.get_running_loop().time() + seconds
    counts: dict[str, int] = {}
    while asyncio.get_running_loop().time() < deadline:
        metrics = (await client.get(f"{url}/metrics", headers=ADMIN)).text
        counts = {
            state: int(float(value))
            for state, value in re.findall(
                r'pardot_destination_queue_events\{state="(\w+)"\} (\S+)', metrics
            )
        }
        if predicate(lambda state, now=counts: now.get(state, 0)):
            return counts
        await asyncio.sleep(0.1)
    raise AssertionError(f"the queue never got there: {counts}")


async def forget(
    client: httpx.AsyncClient, url: str, body: Any, key: str | None = ADMIN_KEY
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return await client.post(f"{url}/admin/forget", json=body, headers=headers)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_forgotten_person_leaves_no_trace_and_is_refused_at_the_door(
    v4_stack: Stack, kind: str
) -> None:
    fake = v4_stack.fake
    with store_url(kind, v4_stack.tmp) as queue_url:
        service = await v4_stack.service(
            DESTINATION_QUEUE_URL=queue_url,
            DESTINATION_ADMIN_KEY=ADMIN_KEY,
            DESTINATION_MAX_ATTEMPTS="2",
        )
        url = service.url
        async with httpx.AsyncClient(timeout=30) as client:
            # Delivered: her prospect, and another person's.
            grace = {"email": EMAIL, "first_name": "Grace", "org_id": "navy"}
            await post(
                client,
                url,
                identify("g1", USER, traits=grace),
                identify("o1", OTHER, traits={"email": "alan@bletchley.example"}),
            )
            await counts_when(client, url, lambda c: c("delivered") == 2)
            # Dead: Pardot fails every try of her next event.
            fake.fail_next(60, status=503, err_code=None)
            await post(client, url, identify("g2", USER, traits={"org_id": "fleet"}))
            await counts_when(client, url, lambda c: c("dead") == 1)
            fake.failures.clear()
            # Waiting: the daily limit is met, deliveries pause until the account's midnight.
            fake.daily_budget = fake.budget_used[DEFAULT_BUSINESS_UNIT_ID]
            await post(
                client,
                url,
                identify("g3", USER, anonymousId=ANONYMOUS, traits={"first_name": "Amazing"}),
                identify("o2", OTHER, traits={"first_name": "Alan"}),
            )
            await counts_when(client, url, lambda c: c("retry") == 2)
            fake.daily_budget = None
            [prospect] = fake.prospects_by_email(EMAIL)
            assert (
                await cli(service, "index", "rebuild")
            ).returncode == 0  # the index holds her row
            assert "prospect_index.email" in plain_text(queue_url)
            before = others(queue_url)
            assert [state for _, state in before] == ["delivered", "retry"]

            # Bad requests first: each refused, nothing removed.
            refused = [
                (await forget(client, url, {"email": EMAIL}, key=None), 401),
                (await forget(client, url, {"email": EMAIL}, key="wrong"), 401),
                (await forget(client, url, {"email": "grace.hopper@"}), 400),
                (await forget(client, url, {"email": "nobody@navy.example"}), 404),
                (await forget(client, url, {"userId": USER, "email": EMAIL}), 400),
            ]
            assert [answer.status_code for answer, _ in refused] == [s for _, s in refused]
            assert "not a valid email address" in refused[2][0].json()["message"]
            assert refused[3][0].json()["code"] == "unknown_person"
            assert plain_text(queue_url) != {} and len(fake.prospects_by_email(EMAIL)) == 1

            answer = await forget(client, url, {"email": EMAIL, "inPardot": True})
            assert answer.status_code == 200, answer.text
            report = answer.json()
            removed = report["removed"]
            assert (removed["settled"], removed["dead"], removed["waiting"]) == (1, 1, 1)
            assert removed["index"] == 1 and removed["history"] >= 2
            assert report["prospects"] == [
                {"prospect": str(prospect["id"]), "prospectId": prospect["id"],
                 "fate": "deleted in Pardot"}
            ]  # fmt: skip

            assert fake.prospects_by_email(EMAIL) == []
            assert others(queue_url) == before
            assert plain_text(queue_url) == {}
            # The running service's file holds no old copy either (free pages, the WAL).
            assert report["scrubbed"] is (kind == "sqlite")
            if kind == "sqlite":
                path = Path(queue_url.removeprefix("sqlite:///"))
                assert file_bytes_hits(path, [EMAIL, USER, ANONYMOUS]) == []
            for who in (EMAIL, USER):
                assert (await cli(service, "explain", who)).returncode == 1
            dead = await cli(service, "dead-letters")
            assert dead.returncode == 0 and "no dead letters" in dead.stdout
            assert (await cli(service, "index", "rebuild")).returncode == 0
            assert plain_text(queue_url) == {}

            # Back again from an upstream that has not caught up: 200, never stored.
            counts = await counts_when(client, url, lambda c: True)
            await post(client, url, identify("g4", USER, traits={"email": EMAIL}))
            await post(client, url, {"type": "identify", "anonymousId": ANONYMOUS})
            metrics = (await client.get(f"{url}/metrics", headers=ADMIN)).text
            assert re.search(
                r'pardot_destination_requests_refused_total\{reason="suppressed"\} 2\.0', metrics
            )
            assert await counts_when(client, url, lambda c: True) == counts
            assert plain_text(queue_url) == {}
        await service.terminate()
        if kind == "sqlite":  # the file's free pages and its WAL too
            path = Path(queue_url.removeprefix("sqlite:///"))
            assert file_bytes_hits(path, [EMAIL, USER, ANONYMOUS]) == []
        assert fake.prospects_by_email(EMAIL) == []


async def test_admin_forget_is_refused_while_the_admin_key_is_unset(v4_stack: Stack) -> None:
    service = await v4_stack.service()
    async with httpx.AsyncClient(timeout=10) as client:
        await post(client, service.url, identify("g1", USER, traits={"email": EMAIL}))
        await v4_stack.wait_until(service.url, lambda c: c("delivered") == 1)
        answer = await forget(client, service.url, {"email": EMAIL}, key=None)
        assert answer.status_code == 403
        assert "DESTINATION_ADMIN_KEY" in answer.json()["message"]
        await asyncio.sleep(0)
    assert len(v4_stack.fake.prospects_by_email(EMAIL)) == 1
    assert (await cli(service, "explain", EMAIL)).returncode == 0
