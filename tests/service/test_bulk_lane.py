"""The bulk lane through `serve` against the fake over HTTP (issue 23): updates of known
prospects go by a Pardot import when enough wait; a newer event for one of them waits for the
import and wins; a row the import refuses is settled with Pardot's reason; an import that
never got submitted leaves its events to batches."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.service.conftest import Stack
from tests.service.test_forget_end_to_end import cli, post

PEOPLE = 6
BULK = {
    "DESTINATION_BULK_MIN_ROWS": "5",
    "DESTINATION_IMPORT_POLL_SECONDS": "0.2",
}


def identify(message_id: str, user: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "userId": user, "traits": traits}


async def known_people(stack: Stack, url: str, client: httpx.AsyncClient) -> list[int]:
    """PEOPLE prospects created through the service, linked to users u0..u5."""
    await post(
        client,
        url,
        *(identify(f"c{i}", f"u{i}", email=f"u{i}@bulk.example") for i in range(PEOPLE)),
    )
    await stack.wait_until(url, lambda c: c("delivered") == PEOPLE)
    return [stack.fake.prospects_by_email(f"u{i}@bulk.example")[0]["id"] for i in range(PEOPLE)]


def prospect(fake: Any, prospect_id: int) -> dict[str, Any]:
    found = fake.get_prospect(prospect_id)
    assert found is not None
    return dict(found)


async def until_importing(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """/status.json once it shows an import in progress (and /metrics agrees)."""
    for _ in range(100):
        status: dict[str, Any] = (await client.get(f"{url}/status.json")).json()
        if status["imports"]:
            metrics = (await client.get(f"{url}/metrics")).text
            assert "pardot_destination_imports_in_progress 1.0" in metrics
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("no import showed in /status.json")


def imports(stack: Stack) -> list[Any]:
    stack.fake.advance_bulk()
    return list(stack.fake.imports.jobs.values())


async def test_a_newer_event_waits_for_the_import_and_wins(v4_stack: Stack) -> None:
    fake = v4_stack.fake
    service = await v4_stack.service(**BULK)
    async with httpx.AsyncClient(timeout=30) as client:
        ids = await known_people(v4_stack, service.url, client)
        fake.import_queue_delay = 1.5  # the import waits in Pardot's queue a while
        await post(
            client,
            service.url,
            *(identify(f"old{i}", f"u{i}", company="Old Co") for i in range(PEOPLE)),
        )
        status = await until_importing(client, service.url)
        await post(client, service.url, identify("new0", "u0", company="New Co"))
        await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2 * PEOPLE + 1)
    [job] = imports(v4_stack)
    assert job.state == "Complete" and len(job.rows) == PEOPLE
    [seen] = status["imports"]
    assert (seen["id"], seen["rows"], seen["overdue"]) == (job.id, PEOPLE, False)
    assert prospect(fake, ids[0])["company"] == "New Co"
    assert [prospect(fake, i)["company"] for i in ids[1:]] == ["Old Co"] * (PEOPLE - 1)
    explained = await cli(service, "explain", "u3")
    assert explained.returncode == 0 and f"import {job.id}" in explained.stdout


async def test_a_row_the_import_refuses_is_a_dead_letter_with_pardots_reason(
    v4_stack: Stack,
) -> None:
    fake = v4_stack.fake
    service = await v4_stack.service(**BULK)
    async with httpx.AsyncClient(timeout=30) as client:
        ids = await known_people(v4_stack, service.url, client)
        fake.delete_prospect(ids[2])  # a marketer deletes one; the event still names it
        gone = identify("gone", "u2", company="Ghost Co")
        gone["integrations"] = {"Pardot": {"id": ids[2]}}
        await post(
            client,
            service.url,
            *(identify(f"m{i}", f"u{i}", company="Mass Co") for i in range(PEOPLE) if i != 2),
            gone,
        )
        await v4_stack.wait_until(service.url, lambda c: c("rejected") == 1 and c("pending") == 0)
    [job] = imports(v4_stack)
    assert len(job.failed) == 1
    # Settled as a batch row Pardot refuses is: rejected, with Pardot's reasons.
    explained = await cli(service, "explain", "u2", "--json")
    assert "Pardot error 3" in explained.stdout, explained.stdout
    assert f"refused by import {job.id}" in explained.stdout and "recycle bin" in explained.stdout
    assert [prospect(fake, i)["company"] for i in ids if i != ids[2]] == ["Mass Co"] * 5


async def test_an_import_never_submitted_is_abandoned_and_its_events_go_by_batches(
    v4_stack: Stack,
) -> None:
    fake = v4_stack.fake
    service = await v4_stack.service(**BULK)
    async with httpx.AsyncClient(timeout=30) as client:
        ids = await known_people(v4_stack, service.url, client)
        fake.fail_next(1, status=400, err_code=158, only="/import/version/4/do/batch")
        await post(
            client,
            service.url,
            *(identify(f"b{i}", f"u{i}", company="Batch Co") for i in range(PEOPLE)),
        )
        await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2 * PEOPLE)
    [job] = imports(v4_stack)
    assert job.state == "Open" and job.rows == []  # created, never submitted: it expires
    assert [prospect(fake, i)["company"] for i in ids] == ["Batch Co"] * PEOPLE
    explained = await cli(service, "explain", "u1")
    assert f"import {job.id}" not in explained.stdout


async def test_the_days_import_files_are_kept_in_the_store_across_a_restart(
    v4_stack: Stack,
) -> None:
    """DESTINATION_IMPORT_FILES_PER_DAY=1: the first round's import takes the day's file;
    the next round, by a restarted service, goes by batches, since the store kept the count."""
    fake = v4_stack.fake
    files = {**BULK, "DESTINATION_IMPORT_FILES_PER_DAY": "1"}
    service = await v4_stack.service(**files)
    async with httpx.AsyncClient(timeout=30) as client:
        ids = await known_people(v4_stack, service.url, client)
        await post(
            client,
            service.url,
            *(identify(f"i{i}", f"u{i}", company="Import Co") for i in range(PEOPLE)),
        )
        await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2 * PEOPLE)
        assert len(imports(v4_stack)) == 1
        await service.kill9()
        service = await v4_stack.service(**files)
        await post(
            client,
            service.url,
            *(identify(f"b{i}", f"u{i}", company="Batch Co") for i in range(PEOPLE)),
        )
        await v4_stack.wait_until(service.url, lambda c: c("delivered") == 3 * PEOPLE)
    assert len(imports(v4_stack)) == 1  # no import: the day's one file was spent
    assert [prospect(fake, i)["company"] for i in ids] == ["Batch Co"] * PEOPLE
    assert any("import files" in line for line in service.log)
