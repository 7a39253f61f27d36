"""Issue 21 rows 1 and 5 through `serve`: deletions in Pardot and a changed lookup setting
reach the index before any decision reads it."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.service.conftest import Stack
from tests.service.test_per_prospect import identify, post

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)


async def rebuild_index(stack: Stack, **env: str) -> None:
    """`pardot-destination index rebuild`, as an operator runs it before starting."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints.cli.main", "index", "rebuild",
        cwd=ROOT, env=stack.env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


@pytest.mark.parametrize("how", ["deleted", "merged"])
async def test_a_holder_deleted_in_pardot_leaves_the_index_and_the_other_is_updated(
    v4_stack: Stack, how: str
) -> None:
    kept = v4_stack.fake.seed_prospect(email="a@x.io", org_id="V1")
    gone = v4_stack.fake.seed_prospect(email="b@x.io", org_id="V1")
    await rebuild_index(v4_stack, PARDOT_LOOKUP_FIELD_ID="org_id")
    service = await v4_stack.service(PARDOT_LOOKUP_FIELD_ID="org_id")
    if how == "deleted":  # a marketer's delete, or a merge: the prospect goes to the bin
        v4_stack.fake.delete_prospect(gone)
    else:
        v4_stack.fake.merge_prospects(kept, gone)
    await post(service.url, identify("m1", NOW, {"org_id": "V1", "plan": "pro"}, userId="u1"))
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    assert v4_stack.fake.get_prospect(kept)["plan"] == "pro"  # type: ignore[index]
    assert [p["id"] for p in v4_stack.fake.all_prospects()] == [kept]


async def test_an_index_filled_without_a_lookup_field_learns_it_before_deciding(
    v4_stack: Stack,
) -> None:
    holder = v4_stack.fake.seed_prospect(email="a@x.io", org_id="V1")
    for n in range(2):  # later changes: a refresh's overlap of the last second misses the holder
        v4_stack.fake.seed_prospect(email=f"later{n}@x.io")
    await rebuild_index(v4_stack)  # PARDOT_LOOKUP_FIELD_ID unset
    service = await v4_stack.service(PARDOT_LOOKUP_FIELD_ID="org_id")
    await post(
        service.url,
        identify("m1", NOW, {"org_id": "V1", "email": "other@x.io", "plan": "pro"}, userId="u1"),
    )
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    assert [p["id"] for p in v4_stack.fake.all_prospects() if p.get("plan") == "pro"] == [holder]
    assert len(v4_stack.fake.all_prospects()) == 3  # no second prospect holds V1


async def test_an_index_filled_for_another_lookup_field_never_updates_its_holder(
    v4_stack: Stack,
) -> None:
    by_org = v4_stack.fake.seed_prospect(email="org@x.io", org_id="42", plan="basic")
    by_plan = v4_stack.fake.seed_prospect(email="plan@x.io", org_id="7", plan="42")
    await rebuild_index(v4_stack, PARDOT_LOOKUP_FIELD_ID="org_id")
    service = await v4_stack.service(PARDOT_LOOKUP_FIELD_ID="plan")
    await post(
        service.url,
        identify("m1", NOW, {"plan": "42", "first_name": "Pat"}, userId="u1"),
    )
    await v4_stack.wait_until(service.url, lambda c: c("delivered") == 1)
    assert v4_stack.fake.get_prospect(by_plan)["first_name"] == "Pat"  # type: ignore[index]
    assert v4_stack.fake.get_prospect(by_org)["first_name"] is None  # type: ignore[index]
