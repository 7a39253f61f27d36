"""Issue 21's rows 2, 4, 7, 8 and the anonymous-device rule through `serve` against the fake."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import SHARED_SECRET, Stack, open_stack
from tests.service.test_per_prospect import LOOKUP, deliver_in_turn, identify, post

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def number_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(
        tmp_path, 4, custom_fields={"org_id", "plan"}, custom_field_types={"org_id": "number"}
    ):
        yield stack


@pytest.fixture
async def lookup_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(tmp_path, 4, custom_fields={"org_id", "plan"}):
        yield stack


async def test_row2_number_spellings_in_one_batch_land_on_one_prospect(
    number_stack: Stack,
) -> None:
    service = await number_stack.service(**LOOKUP)
    await post(
        service.url,
        identify("m1", NOW, {"email": "ann@x.io", "org_id": 7}, userId="u1"),
        identify(
            "m2", NOW + timedelta(seconds=1), {"email": "ann.work@x.io", "org_id": 7.0}, userId="u2"
        ),
    )
    await number_stack.wait_until(service.url, lambda c: c("delivered") == 2)
    await post(
        service.url, identify("m3", NOW + timedelta(seconds=2), {"org_id": "7", "plan": "pro"})
    )
    await number_stack.wait_until(service.url, lambda c: c("delivered") == 3)
    [prospect] = number_stack.fake.all_prospects()
    assert (prospect["org_id"], prospect["email"], prospect["plan"]) == (7, "ann.work@x.io", "pro")


async def test_row4_one_users_events_in_one_batch_reach_one_prospect(
    lookup_stack: Stack,
) -> None:
    service = await lookup_stack.service(**LOOKUP)
    await post(
        service.url,
        identify("m1", NOW, {"email": "ann@x.io", "org_id": "acme"}, userId="u1"),
        identify("m2", NOW + timedelta(seconds=1), {"email": "ann.new@x.io"}, userId="u1"),
        identify("m3", NOW + timedelta(seconds=2), {"plan": "pro"}, userId="u1"),
    )
    await lookup_stack.wait_until(service.url, lambda c: c("delivered") == 3)
    [prospect] = lookup_stack.fake.all_prospects()
    assert (prospect["email"], prospect["org_id"], prospect["plan"]) == (
        "ann.new@x.io",
        "acme",
        "pro",
    )


async def test_row4_an_event_without_email_in_the_lookup_users_batch_is_delivered(
    lookup_stack: Stack,
) -> None:
    service = await lookup_stack.service(**LOOKUP)
    await post(
        service.url,
        identify("m1", NOW, {"email": "ann@x.io", "org_id": "acme"}, userId="u1"),
        identify("m2", NOW + timedelta(seconds=1), {"plan": "pro"}, userId="u1"),
    )
    await lookup_stack.wait_until(service.url, lambda c: c("delivered") == 2)
    [prospect] = lookup_stack.fake.all_prospects()
    assert (prospect["org_id"], prospect["plan"]) == ("acme", "pro")


def forwarded(message_id: str, age: float, member: bool, received: datetime) -> dict[str, Any]:
    """An Engage identify as Segment's Webhooks destination forwards it: `timestamp` already
    corrected by Segment, the client's value in `originalTimestamp`."""
    happened = received - timedelta(seconds=age)
    return {
        "type": "identify",
        "messageId": message_id,
        "userId": "u1",
        "timestamp": happened.isoformat(),
        "originalTimestamp": happened.isoformat(),
        "sentAt": happened.isoformat(),
        "receivedAt": happened.isoformat(),
        "traits": {"email": "pat@x.io", "premium_users": member},
        "context": {"personas": {"computation_class": "audience"}},
        "integrations": {"All": False, "Webhooks": True},
    }


async def test_row7_a_retried_older_forwarded_event_does_not_win(v4_stack: Stack) -> None:
    service = await v4_stack.service(DESTINATION_INTEGRATION_KEYS="Pardot,Webhooks")
    now = datetime.now(UTC)
    async with httpx.AsyncClient() as client:
        for number, event in enumerate(
            [forwarded("m1", 30, False, now), forwarded("m2", 120, True, now)], start=1
        ):
            body = json.dumps(event).encode()
            signature = hmac.new(SHARED_SECRET.encode(), body, hashlib.sha1).hexdigest()
            answer = await client.post(
                f"{service.url}/webhook",
                content=body,
                headers={"X-Signature": signature, "Content-Type": "application/json"},
            )
            assert answer.status_code == 200, answer.text
            await v4_stack.wait_until(service.url, lambda c, n=number: c("delivered") >= n)
    [prospect] = v4_stack.fake.all_prospects()
    assert prospect["premium_users"] == "false"


async def test_row8_a_linked_prospect_merged_away_is_found_again_by_email(
    v4_stack: Stack,
) -> None:
    first = v4_stack.fake.seed_prospect(email="pat@x.io")
    service = await v4_stack.service()
    await deliver_in_turn(v4_stack, service.url, identify("m1", NOW, {"email": "pat@x.io"}))
    # A marketer merges it into another prospect of the same email: the first id is gone.
    survivor = v4_stack.fake.seed_prospect(email="pat@x.io")
    del v4_stack.fake.records[first]
    await post(
        service.url, identify("m2", NOW + timedelta(seconds=1), {"email": "pat@x.io", "plan": "x"})
    )
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2)
    [prospect] = v4_stack.fake.all_prospects()
    assert (prospect["id"], prospect["plan"]) == (survivor, "x")


async def test_anonymous_visitors_on_one_device_keep_their_own_prospects(
    v4_stack: Stack,
) -> None:
    service = await v4_stack.service()
    device = {"anonymousId": "device-1"}
    await deliver_in_turn(
        v4_stack,
        service.url,
        identify("m1", NOW, {"email": "ann@x.io", "plan": "a"}, **device),
        identify("m2", NOW + timedelta(seconds=1), {"email": "bob@x.io", "plan": "b"}, **device),
    )
    found = sorted((p["email"], p["plan"]) for p in v4_stack.fake.all_prospects())
    assert found == [("ann@x.io", "a"), ("bob@x.io", "b")]
