"""Segment's own Python library, pointed at the real service, makes the right prospects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
from segment.analytics import Client

from tests.service.conftest import WRITE_KEY, Stack

FID = "00Q5e00000AbCdEfGH"


async def send_with_segment_library(url: str, calls: list[dict[str, Any]]) -> None:
    """analytics-python in sync mode: one HTTP request per call, as its docs suggest for tests."""
    errors: list[Any] = []

    def send() -> None:
        client = Client(
            WRITE_KEY,
            host=url,
            sync_mode=True,
            max_retries=0,
            on_error=lambda e, b: errors.append(e),
        )
        for call in calls:
            client.identify(**call)
        client.flush()

    await asyncio.to_thread(send)
    assert errors == []


def at(minute: int) -> datetime:
    return datetime(2026, 11, 27, 9, minute, tzinfo=UTC)


async def test_v3_identifies_become_one_prospect_per_email(v3_stack: Stack) -> None:
    service = await v3_stack.service(PARDOT_CREATE_CAMPAIGN_ID="1")
    await send_with_segment_library(
        service.url,
        [
            {
                "user_id": "f4ca124298",
                "traits": {
                    "email": "tom@initech.example",
                    "name": "Tom Smykowski",
                    "title": "Product Manager",
                },
                "timestamp": at(0),
            },
            {
                "user_id": "f4ca124298",
                "traits": {"email": "tom@initech.example", "company": "Initech"},
                "timestamp": at(1),
            },
            {"user_id": "nobody", "traits": {"name": "No Email"}, "timestamp": at(2)},
        ],
    )
    counts = await v3_stack.wait_until(service.url, lambda c: c("delivered") + c("rejected") == 3)
    assert counts["rejected"] == 1
    [tom] = v3_stack.fake.all_prospects()
    assert (
        tom["email"],
        tom["first_name"],
        tom["last_name"],
        tom["job_title"],
        tom["company"],
    ) == (
        "tom@initech.example",
        "Tom",
        "Smykowski",
        "Product Manager",
        "Initech",
    )


async def test_v4_id_fid_lookup_and_opt_outs(v4_stack: Stack) -> None:
    fake = v4_stack.fake
    by_id = fake.seed_prospect(email="ann@x.io", first_name="Ann")
    twin = fake.seed_prospect(email="ann@x.io", first_name="Ann (twin)")
    lead = fake.seed_prospect(email="bob@x.io", salesforce_fid=FID)
    service = await v4_stack.service(PARDOT_LOOKUP_FIELD_ID="org_id")
    await send_with_segment_library(
        service.url,
        [
            {
                "user_id": "ann",
                "traits": {"email": "ann@x.io", "last_name": "ById"},
                "integrations": {"Pardot": {"id": by_id}},
                "timestamp": at(0),
            },
            {
                "user_id": "bob",
                "traits": {"email": "bob@x.io", "last_name": "ByFid"},
                "integrations": {"Pardot": {"fid": FID}},
                "timestamp": at(0),
            },
            {
                "user_id": "cy",
                "traits": {"email": "cy@x.io", "org_id": "acme", "first_name": "Cy"},
                "timestamp": at(0),
            },
            {
                "user_id": "cy",
                "traits": {"email": "cy@x.io", "org_id": "acme", "last_name": "Again"},
                "timestamp": at(1),
            },
            {
                "user_id": "dee",
                "traits": {"email": "dee@x.io"},
                "integrations": {"Pardot": False},
                "timestamp": at(0),
            },
            {
                "user_id": "eve",
                "traits": {"email": "eve@x.io"},
                "integrations": {"All": False, "Mixpanel": True},
                "timestamp": at(0),
            },
        ],
    )
    counts = await v4_stack.wait_until(
        service.url, lambda c: c("delivered") == 4 and c("skipped") == 2
    )
    assert counts.get("rejected", 0) == 0
    assert fake.get_prospect(by_id)["last_name"] == "ById"
    assert fake.get_prospect(twin)["last_name"] is None
    assert fake.get_prospect(lead)["last_name"] == "ByFid"
    [cy] = fake.prospects_by_email("cy@x.io")
    assert (cy["org_id"], cy["first_name"], cy["last_name"]) == ("acme", "Cy", "Again")
    assert fake.prospects_by_email("dee@x.io") == [] and fake.prospects_by_email("eve@x.io") == []


async def test_v4_user_id_as_lookup_value(v4_stack: Stack) -> None:
    service = await v4_stack.service(
        PARDOT_LOOKUP_FIELD_ID="org_id", PARDOT_USE_USER_ID_AS_LOOKUP_VALUE="true"
    )
    await send_with_segment_library(
        service.url,
        [
            {
                "user_id": "user-42",
                "traits": {"email": "pat@x.io", "first_name": "Pat"},
                "timestamp": at(0),
            },
            {
                "user_id": "user-42",
                "traits": {"email": "pat@x.io", "plan": "pro"},
                "timestamp": at(3),
            },
        ],
    )
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2)
    [pat] = v4_stack.fake.prospects_by_email("pat@x.io")
    assert (pat["org_id"], pat["first_name"], pat["plan"]) == ("user-42", "Pat", "pro")


async def test_engage_true_then_false_in_one_batch_in_the_wrong_order_ends_false(
    v4_stack: Stack,
) -> None:
    service = await v4_stack.service(DESTINATION_INTEGRATION_KEYS="Pardot,Webhooks")
    personas = {
        "computation_class": "audience",
        "computation_key": "premium_users",
        "space_id": "spa_1",
    }

    def engage(message_id: str, minute: int, member: bool) -> dict[str, Any]:
        return {
            "type": "identify", "messageId": message_id, "userId": "u-7",
            "timestamp": at(minute).isoformat(), "traits": {"email": "vip@x.io", "premium_users": member},
            "context": {"personas": personas}, "integrations": {"All": False, "Webhooks": True},
        }  # fmt: skip

    batch = {"batch": [engage("left", 9, False), engage("entered", 4, True)]}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{service.url}/v1/batch", json=batch, auth=(WRITE_KEY, ""))
    assert answer.status_code == 200
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2)
    [vip] = v4_stack.fake.prospects_by_email("vip@x.io")
    assert vip["premium_users"] == "false"
