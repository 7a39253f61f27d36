"""Issue 9's cases through the public path: `serve` (and `worker`) against the fake over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import WRITE_KEY, Stack, open_stack

AUTH = (WRITE_KEY, "")
LOOKUP = {"PARDOT_LOOKUP_FIELD_ID": "org_id"}


def identify(
    message_id: str, when: datetime, traits: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    event = {
        "type": "identify",
        "messageId": message_id,
        "timestamp": when.isoformat(),
        "traits": traits,
        **extra,
    }
    if "userId" not in event and "anonymousId" not in event:
        event["userId"] = "user-1"
    return event


async def post(url: str, *events: dict[str, Any], sent_at: datetime | None = None) -> None:
    body: dict[str, Any] = {"batch": list(events)}
    if sent_at is not None:
        body["sentAt"] = sent_at.isoformat()
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{url}/v1/batch", json=body, auth=AUTH)
        assert answer.status_code == 200, answer.text


async def deliver_in_turn(stack: Stack, url: str, *events: dict[str, Any]) -> None:
    """Each event in its own request, delivered before the next is sent (across batches)."""
    for number, event in enumerate(events, start=1):
        await post(url, event)
        await stack.wait_until(url, lambda c, n=number: c("delivered") >= n)


@pytest.fixture
async def number_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(
        tmp_path, 4, custom_fields={"org_id", "vip"}, custom_field_types={"org_id": "number"}
    ):
        yield stack


@pytest.fixture
async def lookup_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(tmp_path, 4, custom_fields={"org_id", "vip"}):
        yield stack


NOW = datetime.now(UTC).replace(microsecond=0)


async def test_an_event_without_the_lookup_value_is_adopted_by_the_later_lookup_match(
    lookup_stack: Stack,
) -> None:
    service = await lookup_stack.service(**LOOKUP)
    await deliver_in_turn(
        lookup_stack,
        service.url,
        identify("m1", NOW, {"email": "pat@x.io", "vip": True}),
        identify("m2", NOW + timedelta(seconds=1), {"email": "pat@x.io", "org_id": "acme"}),
        identify("m3", NOW + timedelta(seconds=2), {"email": "pat@x.io", "vip": False}),
    )
    [prospect] = lookup_stack.fake.all_prospects()
    assert (prospect["org_id"], prospect["vip"]) == ("acme", "false")


async def test_a_number_lookup_field_matches_what_pardot_reads_back(number_stack: Stack) -> None:
    service = await number_stack.service(**LOOKUP)
    await deliver_in_turn(
        number_stack,
        service.url,
        *(
            identify(f"m{n}", NOW + timedelta(seconds=n), {"email": "pat@x.io", "org_id": "007"})
            for n in range(3)
        ),
    )
    [prospect] = number_stack.fake.all_prospects()
    assert prospect["org_id"] == 7


async def test_a_lookup_field_the_account_lacks_pauses_deliveries_until_it_exists(
    lookup_stack: Stack,
) -> None:
    service = await lookup_stack.service(
        PARDOT_LOOKUP_FIELD_ID="Org_Id", DESTINATION_CONFIG_RETRY_SECONDS="0.3"
    )
    await post(service.url, identify("m1", NOW, {"email": "pat@x.io", "Org_Id": "acme"}))
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            answer = await client.get(f"{service.url}/readyz")
            if answer.status_code == 503:
                break
            await asyncio.sleep(0.1)
        assert answer.status_code == 503
        reason = answer.json()["reason"]
        assert "PARDOT_LOOKUP_FIELD_ID=Org_Id" in reason and "did you mean org_id?" in reason
    assert sum(reason in line for line in service.log) >= 1
    assert lookup_stack.fake.all_prospects() == []  # nothing written meanwhile
    lookup_stack.fake.custom_fields.add("Org_Id")  # a marketer creates the field
    await lookup_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    [prospect] = lookup_stack.fake.all_prospects()
    assert prospect["Org_Id"] == "acme"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{service.url}/readyz")).status_code == 200


async def test_an_older_event_by_pardot_id_never_puts_back_an_older_email(v4_stack: Stack) -> None:
    prospect_id = v4_stack.fake.seed_prospect(email="old@x.io")
    service = await v4_stack.service()
    by_id = {"integrations": {"Pardot": {"id": prospect_id}}}
    ten = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    await deliver_in_turn(
        v4_stack,
        service.url,
        identify("m1", ten + timedelta(minutes=10), {"email": "new@x.io"}, **by_id),
        identify("m2", ten + timedelta(minutes=5), {"email": "old@x.io", "plan": "x"}, **by_id),
    )
    [prospect] = v4_stack.fake.all_prospects()
    assert prospect["email"] == "new@x.io"
    assert prospect["plan"] == "x"  # the older event still wrote what nobody newer had


@pytest.mark.parametrize("with_sent_at", [True, False])
async def test_a_client_clock_70_years_fast_is_corrected_not_believed(
    v4_stack: Stack, with_sent_at: bool
) -> None:
    service = await v4_stack.service()
    fast = datetime.now(UTC) + timedelta(days=70 * 365)
    skewed = identify("m1", fast, {"email": "pat@x.io", "firstName": "Skewed"})
    await post(service.url, skewed, sent_at=fast if with_sent_at else None)
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    normal = identify("m2", datetime.now(UTC), {"email": "pat@x.io", "firstName": "Corrected"})
    await post(service.url, normal, sent_at=datetime.now(UTC))
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 2)
    [prospect] = v4_stack.fake.all_prospects()
    assert prospect["first_name"] == "Corrected"


async def test_one_new_email_as_form_fill_and_login_on_two_processes_is_one_prospect(
    v4_stack: Stack,
) -> None:
    v4_stack.fake.latency = 0.2  # while `serve` works on the form fills, `worker` takes logins
    service = await v4_stack.service()
    await v4_stack.service("worker")
    forms = [identify(f"a{n}", NOW, {"email": f"new{n}@x.io"}, anonymousId=f"anon-{n}")
             for n in range(40)]  # fmt: skip
    logins = [identify(f"u{n}", NOW, {"email": f"new{n}@x.io", "plan": "pro"}, userId=f"user-{n}")
              for n in range(40)]  # fmt: skip
    await post(service.url, *forms)
    await asyncio.sleep(0.3)
    await post(service.url, *logins)
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 80, seconds=90)
    emails = sorted(p["email"] for p in v4_stack.fake.all_prospects())
    assert emails == sorted(f"new{n}@x.io" for n in range(40))
    assert v4_stack.fake.max_in_flight <= 10  # two processes, five each (issue 10 shares it)


async def test_lookup_settings_on_a_v3_account_are_ignored_with_one_warning(
    v3_stack: Stack,
) -> None:
    service = await v3_stack.service(**LOOKUP, PARDOT_API_VERSION="auto")
    await post(service.url, identify("m1", NOW, {"email": "pat@x.io", "org_id": "acme"}))
    await v3_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    warnings = [line for line in service.log if "PARDOT_LOOKUP_FIELD_ID" in line]
    assert len(warnings) == 1 and "ignored" in warnings[0]
    [prospect] = v3_stack.fake.all_prospects()
    assert prospect["email"] == "pat@x.io"


async def test_the_seed_campaign_is_for_tracking_and_the_service_says_so(v4_stack: Stack) -> None:
    service = await v4_stack.service(PARDOT_CAMPAIGN_ID="17")
    await post(service.url, identify("m1", NOW, {"email": "pat@x.io"}))
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    assert sum("PARDOT_CREATE_CAMPAIGN_ID" in line for line in service.log) == 1
    [prospect] = v4_stack.fake.all_prospects()
    assert prospect["campaign_id"] != 17
