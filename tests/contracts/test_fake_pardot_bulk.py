"""The fake's Import and Export APIs themselves, over real HTTP, on a clock the test moves.

What PARDOT_API.md ("Bulk: Import and Export") says they do: states that follow the
configured queue delay and rate, exports one at a time, expiry, dates in the export user's
zone, and every bulk call admitted and counted like any other call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.fake_pardot import BUSINESS_UNIT_HEADER, FakePardot, running_fake_pardot
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID

START = datetime(2026, 3, 1, 12, 0, 0)  # the account's clock (UTC), moved by the tests


class Bulk:
    def __init__(self, fake: FakePardot, http: httpx.AsyncClient) -> None:
        self.fake = fake
        self.http = http
        self.now = START
        fake.clock = lambda: self.now
        self.headers = {
            "Authorization": f"Bearer {fake.issue_access_token()}",
            BUSINESS_UNIT_HEADER: DEFAULT_BUSINESS_UNIT_ID,
        }

    def later(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"/api/{path}?format=json"
        return await self.http.request(method, url, headers=self.headers, **kwargs)

    async def new_import(self, csv_text: str, **spec: Any) -> int:
        spec = {"operation": "Upsert", "object": "Prospect", **spec}
        answer = await self.send(
            "POST",
            "import/version/4/do/create",
            data={"importInput": json.dumps(spec)},
            files={"importFile": ("a.csv", csv_text.encode(), "text/csv")},
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["id"])

    async def read(self, kind: str, job_id: int) -> dict[str, Any]:
        answer = await self.send("GET", f"{kind}/version/4/do/read/id/{job_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body.get("export", body)

    async def new_export(self, after: str) -> int:
        spec = {
            "object": "prospect",
            "fields": ["id", "updated_at"],
            "procedure": {"name": "filter_by_updated_at", "arguments": {"updated_after": after}},
        }
        answer = await self.send("POST", "export/version/4/do/create", json=spec)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["export"]["id"])


@pytest.fixture
async def bulk() -> AsyncIterator[Bulk]:
    fake = FakePardot(version=4)
    async with running_fake_pardot(fake) as server, httpx.AsyncClient(base_url=server.url) as http:
        yield Bulk(fake, http)


def error_code(answer: httpx.Response) -> int:
    return int(answer.json()["@attributes"]["err_code"])


async def test_an_import_waits_then_processes_at_the_configured_rate(bulk: Bulk) -> None:
    bulk.fake.import_queue_delay, bulk.fake.import_rows_per_second = 30.0, 10.0
    ids = [bulk.fake.seed_prospect(email=f"p{n}@example.com") for n in range(20)]
    rows = "".join(f"{i},Imported\n" for i in ids)
    job = await bulk.new_import("prospect_id,first_name\n" + rows, state="Ready")
    assert (await bulk.read("import", job))["state"] == "Waiting"
    bulk.later(31)  # a second past the queue delay: ten rows at ten a second
    assert (await bulk.read("import", job))["state"] == "Processing"
    imported = [p for p in bulk.fake.all_prospects() if p["first_name"] == "Imported"]
    assert len(imported) == 10
    bulk.later(1)
    done = await bulk.read("import", job)
    assert (done["state"], done["updatedCount"], done["createdCount"]) == ("Complete", 20, 0)
    assert "errorsRef" not in done


async def test_bulk_calls_are_counted_and_budgeted_like_any_call(bulk: Bulk) -> None:
    bulk.fake.daily_budget = 2
    job = await bulk.new_import("prospect_id,first_name\n1,A\n")
    await bulk.read("import", job)
    refused = await bulk.send("GET", f"import/version/4/do/read/id/{job}")
    assert error_code(refused) == 122
    assert bulk.fake.calls["import/create"] == 1 and bulk.fake.calls["import/read"] == 2


async def test_bulk_calls_share_the_five_in_flight(bulk: Bulk) -> None:
    job = await bulk.new_import("prospect_id,first_name\n1,A\n")
    bulk.fake.hang_next(5, seconds=0.3)
    answers = await asyncio.gather(
        *(bulk.send("GET", f"import/version/4/do/read/id/{job}") for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [200] * 5 + [400]
    assert [error_code(a) for a in answers if a.status_code == 400] == [66]


async def test_an_import_with_the_feature_off_is_refused_at_create(bulk: Bulk) -> None:
    bulk.fake.import_enabled = False
    spec = {"operation": "Upsert", "object": "Prospect"}
    answer = await bulk.send("POST", "import/version/4/do/create", json=spec)
    assert error_code(answer) == 46


async def test_an_open_import_expires_after_a_day(bulk: Bulk) -> None:
    answer = await bulk.send(
        "POST", "import/version/4/do/create", json={"operation": "Upsert", "object": "Prospect"}
    )
    job = answer.json()["id"]
    assert answer.json()["batchesRef"].endswith(f"/do/batch/id/{job}")
    bulk.later(24 * 3600)
    assert (await bulk.read("import", job))["isExpired"] is True
    late = await bulk.send(
        "POST",
        f"import/version/4/do/batch/id/{job}",
        files={"importFile": ("a.csv", b"prospect_id\n1\n", "text/csv")},
    )
    assert error_code(late) == 161


async def test_a_batch_of_10_mb_is_refused_by_the_fake_itself(bulk: Bulk) -> None:
    answer = await bulk.send(
        "POST", "import/version/4/do/create", json={"operation": "Upsert", "object": "Prospect"}
    )
    huge = b"prospect_id,comments\n" + b"1," + b"x" * (10 * 1024 * 1024) + b"\n"
    refused = await bulk.send(
        "POST",
        f"import/version/4/do/batch/id/{answer.json()['id']}",
        files={"importFile": ("a.csv", huge, "text/csv")},
    )
    assert refused.status_code == 400 and error_code(refused) == 158


async def test_exports_run_one_at_a_time_oldest_first(bulk: Bulk) -> None:
    bulk.fake.export_rows_per_second = 1.0
    for n in range(3):
        bulk.fake.seed_prospect(email=f"p{n}@example.com", updated_at=START)
    first = await bulk.new_export("2026-02-01 00:00:00")
    second = await bulk.new_export("2026-02-01 00:00:00")
    assert (await bulk.read("export", first))["state"] == "Processing"
    bulk.later(2)
    assert (await bulk.read("export", second))["state"] == "Waiting"
    bulk.later(1)  # the first took three rows at one a second
    assert (await bulk.read("export", first))["state"] == "Complete"
    assert (await bulk.read("export", second))["state"] == "Processing"
    bulk.later(3)
    assert (await bulk.read("export", second))["state"] == "Complete"


async def test_export_files_carry_dates_in_the_users_zone(bulk: Bulk) -> None:
    prospect = bulk.fake.seed_prospect(email="p@example.com", updated_at=START)
    bulk.fake.export_user_time_zone = "Asia/Tokyo"
    job = await bulk.new_export("2026-03-01 00:00:00")  # Tokyo time: 15:00 UTC the day before
    bulk.later(1)
    ref = (await bulk.read("export", job))["resultRefs"]
    assert isinstance(ref, str)  # one file: a string, not an array
    answer = await bulk.http.get(ref, headers=bulk.headers)
    lines = answer.text.strip().splitlines()
    assert lines == ["id,updated_at", f"{prospect},2026-03-01 21:00:00"]


async def test_an_export_range_over_a_year_is_refused(bulk: Bulk) -> None:
    answer = await bulk.send(
        "POST",
        "export/version/4/do/create",
        json={
            "object": "prospect",
            "fields": ["id"],
            "procedure": {
                "name": "filter_by_updated_at",
                "arguments": {"updated_after": "2024-01-01 00:00:00"},
            },
        },
    )
    assert error_code(answer) == 177


async def test_results_expire_a_week_after_completion(bulk: Bulk) -> None:
    bulk.fake.seed_prospect(email="p@example.com", updated_at=START)
    job = await bulk.new_export("2026-02-01 00:00:00")
    bulk.later(1)
    ref = (await bulk.read("export", job))["resultRefs"]
    bulk.later(7 * 24 * 3600)
    expired = await bulk.read("export", job)
    assert expired["isExpired"] is True and "resultRefs" not in expired
    assert error_code(await bulk.http.get(ref + "?format=json", headers=bulk.headers)) == 161
