"""Issue 11 through `serve`: the index in the service, the budget in /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from tests.service.conftest import Stack
from tests.service.test_per_prospect import identify, post

NOW = datetime.now(UTC).replace(microsecond=0)
PAST = NOW.replace(tzinfo=None) - timedelta(hours=1)  # the fake keeps account times naive


async def test_a_burst_is_delivered_from_the_index_and_metrics_show_the_budget(
    v4_stack: Stack,
) -> None:
    for n in range(30):
        v4_stack.fake.seed_prospect(email=f"p{n}@x.io", plan="basic")
    service = await v4_stack.service(PARDOT_DAILY_API_LIMIT="1000")
    await post(
        service.url,
        *(
            identify(f"m{n}", NOW, {"email": f"p{n}@x.io", "plan": "pro"}, userId=f"u{n}")
            for n in range(30)
        ),
    )
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 30)
    assert v4_stack.fake.calls["read"] == 0  # decided from the index, not one read per event
    assert {p["plan"] for p in v4_stack.fake.all_prospects()} == {"pro"}
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{service.url}/metrics")).text
    found = re.search(r"^pardot_destination_api_calls_used (\S+)$", metrics, re.MULTILINE)
    assert found is not None
    assert "pardot_destination_api_calls_limit 1000.0" in metrics
    assert float(found.group(1)) == v4_stack.fake.total_calls > 0  # every call is counted


async def first_sync_through_serve(stack: Stack, **env: str) -> None:
    """Thirty prospects changed over three years, then an event for each through `serve`."""
    for n in range(30):
        stack.fake.seed_prospect(
            email=f"p{n}@x.io", plan="basic", updated_at=PAST - timedelta(days=36 * n)
        )
    stack.fake.export_user_time_zone = "Asia/Tokyo"
    service = await stack.service(PARDOT_DAILY_API_LIMIT="1000", **env)
    await post(
        service.url,
        *(
            identify(f"m{n}", NOW, {"email": f"p{n}@x.io", "first_name": "Ann"}, userId=f"u{n}")
            for n in range(30)
        ),
    )
    await stack.wait_until(service.url, lambda c: c("delivered") == 30)
    assert stack.fake.calls["read"] == 0  # decided from the index
    assert {p["first_name"] for p in stack.fake.all_prospects()} == {"Ann"}
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{service.url}/metrics")).text
    found = re.search(r"^pardot_destination_api_calls_used (\S+)$", metrics, re.MULTILINE)
    assert found is not None
    assert float(found.group(1)) == stack.fake.total_calls  # exports counted like any call


async def test_the_first_sync_fills_the_index_by_exports_in_the_export_users_zone(
    v4_stack: Stack,
) -> None:
    await first_sync_through_serve(
        v4_stack,
        DESTINATION_EXPORT_MIN_PROSPECTS="1",
        PARDOT_EXPORT_TIMEZONE="Asia/Tokyo",
        DESTINATION_IMPORT_POLL_SECONDS="0.01",
    )
    calls = v4_stack.fake.calls
    # A year each, and one create refused: the first asked for custom fields too.
    assert calls["export/create"] - 1 == len(v4_stack.fake.exports.jobs) >= 3
    assert calls["query"] < 10  # no paged scan


async def test_bulk_off_fills_the_index_by_the_scan_as_before(v4_stack: Stack) -> None:
    await first_sync_through_serve(
        v4_stack, DESTINATION_BULK="off", DESTINATION_EXPORT_MIN_PROSPECTS="1"
    )
    assert not v4_stack.fake.exports.jobs
