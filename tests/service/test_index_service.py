"""Issue 11 through `serve`: the index in the service, the budget in /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx

from tests.service.conftest import Stack
from tests.service.test_per_prospect import identify, post

NOW = datetime.now(UTC).replace(microsecond=0)


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
