"""Issue 26: six ways in through the door and the store, each tried against a real `serve`.

Each attack ends with a clear refusal or a clear message; nothing accepted is lost and other
senders are unaffected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from adapters.postgres.stores import PostgresStores
from adapters.sqlite.stores import SQLiteStores
from entrypoints.http import ingest
from tests.service.conftest import SHARED_SECRET, WRITE_KEY, Stack

ROOT = Path(__file__).resolve().parents[2]
OTHER_KEY = "e2e-other-write-key"
BOM = b"\xef\xbb\xbf"


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def sign(body: bytes) -> str:
    return hmac.new(SHARED_SECRET.encode(), body, hashlib.sha1).hexdigest()


def identify(user: str, message_id: str, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": user,
        "messageId": message_id,
        "traits": {"email": f"{user}@x.io", **traits},
    }


JSON = {"Content-Type": "application/json"}


async def stored(stack: Stack, url: str) -> int:
    counts = await stack.wait_until(url, lambda _: True)
    return sum(counts.values())


# ---- 1: one sender's messageId never makes another's event vanish ------------------------


async def pause_deliveries(path: Path, until: datetime | None) -> None:
    """Hold every delivery (as Pardot's daily limit does), or lift the hold."""
    async with SQLiteStores.opened(path) as stores:
        await stores.queue(max_pending=None).pause_until(until)


async def test_a_sender_reusing_anothers_message_id_does_not_make_their_event_vanish(
    v4_stack: Stack,
) -> None:
    keys = f"{WRITE_KEY},{OTHER_KEY}"
    path = v4_stack.tmp / "queue.db"
    # Deliveries held while both post, then a fresh `serve` leases both events in one batch.
    await pause_deliveries(path, datetime.now(UTC) + timedelta(hours=1))
    first = await v4_stack.service(DESTINATION_WRITE_KEY=keys)
    async with httpx.AsyncClient(base_url=first.url) as client:
        for key, user in ((OTHER_KEY, "mallory"), (WRITE_KEY, "bea")):
            answer = await client.post(
                "/v1/identify",
                json=identify(user, "shared-id"),
                headers={"Authorization": basic(key)},
            )
            assert answer.status_code == 200, answer.text
    assert await first.terminate() == 0
    await pause_deliveries(path, None)
    service = await v4_stack.service(DESTINATION_WRITE_KEY=keys)
    counts = await v4_stack.wait_until(
        service.url, lambda n: n("delivered") + n("skipped") + n("rejected") == 2
    )
    assert counts.get("delivered") == 2, counts
    assert len(v4_stack.fake.prospects_by_email("bea@x.io")) == 1
    assert len(v4_stack.fake.prospects_by_email("mallory@x.io")) == 1


# ---- 2: unproven slow bodies cannot starve an authenticated sender ----------------------


async def slow_body(port: int, declared: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A signed-webhook request whose body never finishes: who sent it cannot be known."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Signature: {'0' * 40}\r\nContent-Length: {declared}\r\n\r\n{{"
        ).encode()
    )
    await writer.drain()
    return reader, writer


def attack_sizes() -> list[int]:
    """Declared sizes that add up to exactly the whole budget: nothing else fits beside them."""
    whole, part = divmod(ingest.MAX_INGEST_BYTES, ingest.MAX_REQUEST_BYTES)
    return [ingest.MAX_REQUEST_BYTES] * whole + ([part] if part else [])


async def test_slow_unproven_bodies_leave_room_for_an_authenticated_sender(
    v4_stack: Stack,
) -> None:
    service = await v4_stack.service()
    port = urlsplit(service.url).port
    assert port is not None
    padded = json.dumps(identify("probe", "probe", pad="x" * 400_000)).encode()
    attackers = [await slow_body(port, size) for size in attack_sizes()]
    try:
        async with httpx.AsyncClient(base_url=service.url, headers=JSON) as client:
            # Another unproven sender is refused once the attackers hold what they may.
            for _ in range(100):
                probe = await client.post(
                    "/webhook", content=padded, headers={"X-Signature": sign(padded)}
                )
                if probe.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert probe.status_code == 503 and probe.json()["code"] == "busy", probe.text
            await asyncio.sleep(0.5)  # every attacker's headers have been read by now
            for n in range(3):
                answer = await client.post(
                    "/v1/identify",
                    json=identify(f"kept{n}", f"kept{n}"),
                    headers={"Authorization": basic(WRITE_KEY)},
                )
                assert answer.status_code == 200, answer.text
    finally:
        for _, writer in attackers:
            writer.close()
    assert await stored(v4_stack, service.url) == 3


# ---- 3: what a request becomes once stored is bounded ------------------------------------


async def test_a_batch_whose_shared_context_multiplies_it_is_refused_with_413(
    v4_stack: Stack,
) -> None:
    service = await v4_stack.service()
    context = {"page": {"blob": "c" * 30_000}}
    events = [identify(f"u{n}", f"m{n}") for n in range(300)]  # ~9 MB once stored
    async with httpx.AsyncClient(base_url=service.url) as client:
        answer = await client.post(
            "/v1/batch", json={"batch": events, "context": context}, auth=(WRITE_KEY, "")
        )
        assert answer.status_code == 413, answer.text
        refusal = answer.json()
        assert refusal["code"] == "too_large"
        assert f"{ingest.MAX_STORED_BYTES // 1024} KB" in refusal["message"]
        assert await stored(v4_stack, service.url) == 0
        # A shared context of a sensible size is still stored with every event.
        small = {"library": {"name": "analytics-python", "version": "2.3.2"}}
        answer = await client.post(
            "/v1/batch", json={"batch": events, "context": small}, auth=(WRITE_KEY, "")
        )
        assert answer.status_code == 200, answer.text
        assert await stored(v4_stack, service.url) == 300


async def test_an_event_over_32_kb_once_merged_is_refused_alone(v4_stack: Stack) -> None:
    service = await v4_stack.service()
    context = {"page": {"blob": "c" * 20_000}}
    big = {**identify("big", "big"), "context": {"extra": "e" * 20_000}}
    async with httpx.AsyncClient(base_url=service.url) as client:
        answer = await client.post(
            "/v1/batch",
            json={"batch": [identify("ok", "ok"), big], "context": context},
            auth=(WRITE_KEY, ""),
        )
    assert answer.status_code == 400, answer.text
    assert [e["index"] for e in answer.json()["errors"]] == [1]
    assert "over 32 KB" in answer.json()["errors"][0]["reason"]
    assert await stored(v4_stack, service.url) == 1


# ---- 4: a byte-order mark cannot change what the body is ----------------------------------

ARRAY = json.dumps([identify("a1", "a1"), identify("a2", "a2")]).encode()
FIRST = json.dumps(identify("a1", "a1")).encode()


async def test_a_bom_prefixed_array_is_an_array(v4_stack: Stack) -> None:
    service = await v4_stack.service()
    keyless = await v4_stack.service(DESTINATION_WRITE_KEY="")
    async with httpx.AsyncClient(headers=JSON) as client:
        for url in (service.url, keyless.url):
            answer = await client.post(
                f"{url}/webhook", content=BOM + ARRAY, headers={"X-Signature": sign(BOM + ARRAY)}
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["code"] == "batching_off"
            answer = await client.post(
                f"{url}/webhook", content=BOM + ARRAY, headers={"X-Signature": sign(FIRST)}
            )
            assert answer.status_code == 400, answer.text
        # An object after a BOM is still one event, signed as sent.
        one = BOM + FIRST
        answer = await client.post(
            f"{service.url}/webhook", content=one, headers={"X-Signature": sign(one)}
        )
        assert answer.status_code == 200, answer.text
    assert await stored(v4_stack, service.url) == 1
    assert not any("could not store" in line for line in keyless.log + service.log)


async def test_with_batching_on_a_bom_prefixed_array_needs_the_key_and_is_stored(
    v4_stack: Stack,
) -> None:
    service = await v4_stack.service(DESTINATION_WEBHOOK_BATCHING="true")
    async with httpx.AsyncClient(base_url=service.url, headers=JSON) as client:
        signed = {"X-Signature": sign(FIRST)}
        answer = await client.post("/webhook", content=BOM + ARRAY, headers=signed)
        assert answer.status_code == 401, answer.text
        keyed = {**signed, "Authorization": basic(WRITE_KEY)}
        answer = await client.post("/webhook", content=BOM + ARRAY, headers=keyed)
        assert answer.status_code == 200, answer.text
    assert await stored(v4_stack, service.url) == 2


# ---- 5: an event no store can hold is refused alone, the same on every backend ------------


def batch_with_nuls() -> tuple[list[dict[str, Any]], set[int]]:
    events = [identify(f"n{n}", f"nm{n}") for n in range(15)]
    poisoned = {1: "userId", 4: "messageId", 7: "traits", 10: "anonymousId", 13: "key", 14: "long"}
    for index, where in poisoned.items():
        if where == "long":  # past what PostgreSQL can index
            events[index]["userId"] = "l" * 3000
        elif where == "traits":
            events[index]["traits"]["company"] = "A\u0000B"
        elif where == "key":
            events[index]["traits"]["odd\u0000key"] = "x"
        else:
            events[index][where] = f"x\u0000{index}"
    return events, set(poisoned)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_nul_or_a_huge_id_is_refused_per_event_and_its_neighbours_are_stored(
    v4_stack: Stack, backend: str, request: pytest.FixtureRequest
) -> None:
    overrides = {}
    if backend == "postgres":
        overrides["DESTINATION_QUEUE_URL"] = request.getfixturevalue("postgres_url")
    service = await v4_stack.service(**overrides)
    events, poisoned = batch_with_nuls()
    async with httpx.AsyncClient(base_url=service.url) as client:
        answer = await client.post("/v1/batch", json={"batch": events}, auth=(WRITE_KEY, ""))
        assert answer.status_code == 400, answer.text
        refusal = answer.json()
        assert {e["index"] for e in refusal["errors"]} == poisoned
        reasons = [e["reason"] for e in refusal["errors"]]
        assert all("U+0000" in r or "over the 1024" in r for r in reasons), reasons
        assert refusal["accepted"] == 15 - len(poisoned)
        single = await client.post(
            "/webhook",
            content=(body := json.dumps(identify("z\u0000", "z")).encode()),
            headers={**JSON, "X-Signature": sign(body)},
        )
        assert single.status_code == 400 and "U+0000" in single.json()["message"]
    counts = await v4_stack.wait_until(service.url, lambda n: n("delivered") == 15 - len(poisoned))
    assert sum(counts.values()) == 15 - len(poisoned)
    if backend == "postgres":
        async with PostgresStores.opened(overrides["DESTINATION_QUEUE_URL"], pool_size=1) as pg:
            counted = await pg.queue(max_pending=None).counts()
            assert sum(counted.values()) == 15 - len(poisoned)


REFUSE_POISON_PG = """
    CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.message_id LIKE 'poison%' THEN RAISE EXCEPTION 'refused by the test'; END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_poison BEFORE INSERT ON events
        FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""
REFUSE_POISON_SQLITE = """
    CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.message_id LIKE 'poison%'
    BEGIN SELECT RAISE(ABORT, 'refused by the test'); END
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_an_event_the_store_refuses_is_refused_alone_and_its_neighbours_stored(
    v4_stack: Stack, backend: str, request: pytest.FixtureRequest
) -> None:
    overrides = {}
    if backend == "postgres":
        overrides["DESTINATION_QUEUE_URL"] = request.getfixturevalue("postgres_url")
    service = await v4_stack.service(**overrides)
    # A store that refuses some rows for a reason the door cannot know (a real trigger).
    if backend == "postgres":
        with psycopg.connect(overrides["DESTINATION_QUEUE_URL"], autocommit=True) as conn:
            conn.execute(REFUSE_POISON_PG)
    else:
        with contextlib.closing(sqlite3.connect(v4_stack.tmp / "queue.db")) as conn:
            conn.execute(REFUSE_POISON_SQLITE)
    events = [identify(f"p{n}", f"poison{n}" if n in (2, 4) else f"p{n}") for n in range(6)]
    async with httpx.AsyncClient(base_url=service.url) as client:
        answer = await client.post("/v1/batch", json={"batch": events}, auth=(WRITE_KEY, ""))
        assert answer.status_code == 400, answer.text
        assert [e["index"] for e in answer.json()["errors"]] == [2, 4]
        assert answer.json()["accepted"] == 4
        # Nothing at all stored is the store's fault: the sender is told to retry.
        doomed = [identify(f"d{n}", f"poison-d{n}") for n in range(3)]
        answer = await client.post("/v1/batch", json={"batch": doomed}, auth=(WRITE_KEY, ""))
        assert answer.status_code == 503 and answer.json()["code"] == "unavailable"
    counts = await v4_stack.wait_until(service.url, lambda n: n("delivered") == 4)
    assert sum(counts.values()) == 4


# ---- 6: a damaged page stops start-up with one line, not a traceback ----------------------


async def queue_file_with_rows(path: Path, rows: int) -> None:
    async with SQLiteStores.opened(path) as stores:
        queue = stores.queue(max_pending=None)
        pad = "p" * 300
        await queue.put([identify(f"r{n}", f"r{n}", pad=pad) for n in range(rows)])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def damage_a_middle_page(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    middle = pages // 2
    with path.open("r+b") as file:
        file.seek(page_size * (middle - 1))
        file.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    return middle


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"], ["status"]])
def test_a_damaged_page_stops_start_up_with_one_line(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "queue.db"
    asyncio.run(queue_file_with_rows(path, 3000))
    page = damage_a_middle_page(path)
    env = {
        "PATH": "/usr/bin:/bin",
        "PARDOT_ACCOUNT_ID": "507251",
        "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA",
        "PARDOT_ACCESS_TOKEN": "unused",
        "DESTINATION_QUEUE_URL": f"sqlite:///{path}",
        "PARDOT_DESTINATION_CONFIG": str(tmp_path / "absent.toml"),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli.main", *command],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"{command[0]} kept running on a damaged file") from expired
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "move it" in lines[0] and f"Page {page}" in lines[0]
