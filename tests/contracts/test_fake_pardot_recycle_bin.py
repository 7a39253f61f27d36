"""The fake Pardot's recycle bin over real HTTP: `do/delete`, `deleted=true` queries and the
marketer's delete and merge (PARDOT_API.md, "The prospect query also takes `deleted=true`"
and "Delete")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.fake_pardot import BUSINESS_UNIT_HEADER, FakePardot, running_fake_pardot
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID

FID = "00Q5e00000AbCdEfGH"


class Pardot:
    """Raw calls to one running fake, any HTTP method."""

    def __init__(self, fake: FakePardot, http: httpx.AsyncClient):
        self.fake = fake
        self.http = http
        self.headers = {
            "Authorization": f"Bearer {fake.issue_access_token()}",
            BUSINESS_UNIT_HEADER: DEFAULT_BUSINESS_UNIT_ID,
        }

    async def call(self, path: str, method: str = "POST", **params: Any) -> httpx.Response:
        url = f"/api/prospect/version/{self.fake.version}/do/{path}"
        values = {"format": "json", **{k: str(v) for k, v in params.items()}}
        if method == "POST":
            return await self.http.post(url, data=values, headers=self.headers)
        return await self.http.request(method, url, params=values, headers=self.headers)

    async def ids(self, **params: Any) -> list[int]:
        result = (await self.call("query", **params)).json()["result"]
        rows = result.get("prospect", [])
        return [row["id"] for row in (rows if isinstance(rows, list) else [rows])]


@pytest.fixture(params=[4])
async def pardot(request: pytest.FixtureRequest) -> AsyncIterator[Pardot]:
    fake = FakePardot(version=request.param, custom_fields={"org_id"})
    async with (
        running_fake_pardot(fake) as server,
        httpx.AsyncClient(base_url=server.url, timeout=5) as http,
    ):
        yield Pardot(fake, http)


def err_code(response: httpx.Response) -> int:
    body = response.json()
    assert body["@attributes"]["stat"] == "fail"
    return int(body["@attributes"]["err_code"])


async def test_delete_answers_204_with_no_body_and_bins_the_prospect(pardot: Pardot) -> None:
    kept = pardot.fake.seed_prospect(email="kept@x.io")
    gone = pardot.fake.seed_prospect(email="gone@x.io")
    answer = await pardot.call(f"delete/id/{gone}")
    assert answer.status_code == 204 and answer.content == b""
    assert err_code(await pardot.call(f"read/id/{gone}")) == 3
    assert err_code(await pardot.call("read/email/gone@x.io")) == 4
    assert err_code(await pardot.call(f"update/id/{gone}", first_name="X")) == 3
    assert await pardot.ids() == [kept]
    assert await pardot.ids(deleted="true") == [gone]
    assert await pardot.ids(deleted="false") == [kept]
    assert pardot.fake.calls["delete"] == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH"])
async def test_delete_takes_only_post_or_delete(pardot: Pardot, method: str) -> None:
    pid = pardot.fake.seed_prospect(email="pat@x.io")
    assert err_code(await pardot.call(f"delete/id/{pid}", method)) == 60
    assert await pardot.ids() == [pid]
    assert (await pardot.call(f"delete/id/{pid}", "DELETE")).status_code == 204
    assert await pardot.ids(deleted="true") == [pid]


async def test_v4_deletes_by_id_or_fid_never_by_email(pardot: Pardot) -> None:
    pid = pardot.fake.seed_prospect(email="pat@x.io", salesforce_fid=FID)
    assert err_code(await pardot.call("delete/email/pat@x.io")) == 2
    assert (await pardot.call(f"delete/fid/{FID}")).status_code == 204
    assert await pardot.ids(deleted="true") == [pid]
    assert err_code(await pardot.call(f"delete/fid/{FID}")) == 77  # already in the bin
    assert err_code(await pardot.call(f"delete/id/{pid}")) == 3
    assert err_code(await pardot.call("delete/id/999999")) == 3
    assert err_code(await pardot.call("delete")) == 13


@pytest.mark.parametrize("pardot", [3], indirect=True)
async def test_v3_deletes_by_id_or_email_never_by_fid(pardot: Pardot) -> None:
    by_email = pardot.fake.seed_prospect(email="pat@x.io", salesforce_fid=FID)
    by_id = pardot.fake.seed_prospect(email="ann@x.io")
    assert err_code(await pardot.call(f"delete/fid/{FID}")) == 2
    assert (await pardot.call("delete/email/PAT@x.io")).status_code == 204
    assert (await pardot.call(f"delete/id/{by_id}")).status_code == 204
    assert await pardot.ids(deleted="true") == [by_email, by_id]
    assert err_code(await pardot.call("delete/email/pat@x.io")) == 4
    # The email is free again: v3 creates a new prospect rather than reviving the old one.
    assert (await pardot.call("create/email/pat@x.io")).status_code == 201


async def test_the_deleted_flag_must_be_true_or_false(pardot: Pardot) -> None:
    assert err_code(await pardot.call("query", deleted="yes")) == 27
    assert (await pardot.call("query", deleted="TRUE")).status_code == 200


async def test_deleted_queries_filter_sort_and_page_like_live_ones(pardot: Pardot) -> None:
    fake = pardot.fake
    start = datetime(2026, 3, 1, 9, 0, 0)
    ticks = iter(range(1000))
    fake.clock = lambda: start + timedelta(seconds=next(ticks))  # one write a second
    ids = [fake.seed_prospect(email=f"p{i}@x.io", org_id=f"o{i}") for i in range(6)]
    mark = fake.get_prospect(ids[-1])["updated_at"]  # type: ignore[index]
    for pid in (ids[4], ids[0], ids[2]):
        fake.delete_prospect(pid)
    fake.merge_prospects(ids[5], ids[1])
    since = {"deleted": "true", "updated_after": mark}
    assert await pardot.ids(**since) == [ids[0], ids[1], ids[2], ids[4]]
    # updated_at moved to the deletion: the order of binning, not of creation.
    oldest_first = await pardot.ids(**since, sort_by="updated_at", sort_order="ascending")
    assert oldest_first == [ids[4], ids[0], ids[2], ids[1]]
    assert await pardot.ids(**since, sort_by="updated_at") == oldest_first[::-1]
    binned_at = fake.get_prospect(ids[0])["updated_at"]  # type: ignore[index]
    assert await pardot.ids(deleted="true", updated_before=binned_at) == [ids[4]]
    assert await pardot.ids(deleted="true", id_greater_than=ids[1], id_less_than=ids[4]) == [ids[2]]
    created = fake.get_prospect(ids[1])["created_at"]  # type: ignore[index]
    assert await pardot.ids(deleted="true", created_after=created) == [ids[2], ids[4]]
    page = (await pardot.call("query", deleted="true", limit=2, fields="org_id")).json()
    assert page["result"]["total_results"] == 4
    assert page["result"]["prospect"] == [
        {"id": ids[0], "org_id": "o0"},
        {"id": ids[1], "org_id": "o1"},
    ]
    # The survivor changed too, so the plain query since the mark finds it (and only it).
    assert await pardot.ids(updated_after=mark) == [ids[5]]


async def test_a_merge_keeps_the_survivors_values_and_fills_its_gaps(pardot: Pardot) -> None:
    fake = pardot.fake
    survivor = fake.seed_prospect(email="pat@x.io", first_name="Pat")
    absorbed = fake.seed_prospect(
        email="pat.work@x.io", first_name="Patricia", company="Acme", org_id="7",
        salesforce_fid=FID, grade="B",
    )  # fmt: skip
    fake.merge_prospects(survivor, absorbed)
    merged = (await pardot.call(f"read/id/{survivor}")).json()["prospect"]
    assert merged["email"] == "pat@x.io" and merged["first_name"] == "Pat"
    assert merged["company"] == "Acme" and merged["org_id"] == "7"
    assert merged["salesforce_fid"] == FID and merged["grade"] == "B"
    assert err_code(await pardot.call(f"read/id/{absorbed}")) == 3
    assert (await pardot.call(f"read/fid/{FID}")).json()["prospect"]["id"] == survivor


async def test_the_controls_refuse_what_a_marketer_could_not_do(pardot: Pardot) -> None:
    fake = pardot.fake
    a = fake.seed_prospect(email="a@x.io")
    b = fake.seed_prospect(email="b@x.io")
    with pytest.raises(ValueError):
        fake.merge_prospects(a, a)
    fake.delete_prospect(b)
    with pytest.raises(KeyError):
        fake.delete_prospect(b)
    with pytest.raises(KeyError):
        fake.merge_prospects(a, b)
    with pytest.raises(KeyError):
        fake.delete_prospect(424242)


async def test_an_upsert_by_id_restores_a_binned_prospect(pardot: Pardot) -> None:
    pid = pardot.fake.seed_prospect(email="pat@x.io")
    pardot.fake.delete_prospect(pid)
    answer = await pardot.call(f"upsert/id/{pid}", first_name="Back")
    assert answer.status_code == 200 and answer.json()["prospect"]["id"] == pid
    assert await pardot.ids() == [pid] and await pardot.ids(deleted="true") == []
