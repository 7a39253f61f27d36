"""The fake Pardot itself, over real HTTP: if these drift from PARDOT_API.md, every
adapter test built on the fake proves the wrong thing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from contracts.fake_pardot import (
    BUSINESS_UNIT_HEADER,
    FakePardot,
    RunningFakePardot,
    running_fake_pardot,
)
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    STANDARD_FIELDS,
)

TOKEN_URL = "/services/oauth2/token"


class Pardot:
    """A thin test client: one method per call shape, answers returned raw."""

    def __init__(self, server: RunningFakePardot, http: httpx.AsyncClient):
        self.fake = server.fake
        self.http = http
        self.token = server.fake.issue_access_token()
        self.unit: str | None = DEFAULT_BUSINESS_UNIT_ID

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.unit is not None:
            headers[BUSINESS_UNIT_HEADER] = self.unit
        return headers

    async def call(
        self, path: str, version: int | None = None, *, json_format: bool = True, **fields: Any
    ) -> httpx.Response:
        version = version or self.fake.version
        data = {k: str(v) for k, v in fields.items()}
        if json_format:
            data["format"] = "json"
        url = f"/api/prospect/version/{version}/do/{path}"
        return await self.http.post(url, data=data, headers=self.headers())

    async def batch(self, operation: str, rows: Any, version: int | None = None) -> httpx.Response:
        return await self.call(operation, version, prospects=json.dumps({"prospects": rows}))


@pytest.fixture
def fake() -> FakePardot:
    return FakePardot(version=4, custom_fields={"favourite_color", "interests", "visits"})


@pytest.fixture
async def server(fake: FakePardot) -> AsyncIterator[RunningFakePardot]:
    async with running_fake_pardot(fake) as running:
        yield running


@pytest.fixture
async def http(server: RunningFakePardot) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        yield client


@pytest.fixture
def pardot(server: RunningFakePardot, http: httpx.AsyncClient) -> Pardot:
    return Pardot(server, http)


def err_code(response: httpx.Response) -> int:
    body = response.json()
    assert body["@attributes"]["stat"] == "fail"
    return int(body["@attributes"]["err_code"])


# ---- auth and account configuration ----------------------------------------------------


async def test_missing_or_unknown_token_is_184(pardot: Pardot) -> None:
    pardot.token = "nope"
    answer = await pardot.call("read/id/1")
    assert answer.status_code == 401
    assert err_code(answer) == 184
    answer = await pardot.http.post("/api/prospect/version/4/do/read/id/1", data={"format": "json"})
    assert err_code(answer) == 184


@pytest.mark.parametrize(
    ("unit", "code"),
    [(None, 181), ("0Uv-too-short", 182), ("001000000000001AAA", 182), ("0Uv000000000009ZZZ", 201)],
)
async def test_business_unit_header(pardot: Pardot, unit: str | None, code: int) -> None:
    pardot.unit = unit
    answer = await pardot.call("create/email/a@example.com")
    assert answer.status_code == 400
    assert err_code(answer) == code
    assert pardot.fake.records == {}


async def test_wrong_version_is_88_or_89(pardot: Pardot) -> None:
    assert err_code(await pardot.call("read/id/1", version=3)) == 88
    pardot.fake.version = 3
    assert err_code(await pardot.call("read/id/1", version=4)) == 89


async def test_errors_are_xml_without_format_json(pardot: Pardot) -> None:
    answer = await pardot.call("read/id/424242", json_format=False)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("application/xml")
    assert '<rsp stat="fail" version="1.0"><err code="3">Invalid prospect ID</err></rsp>' in (
        answer.text
    )
    pid = pardot.fake.seed_prospect(email="x@example.com")
    answer = await pardot.call(f"read/id/{pid}", json_format=False)
    assert "<email>x@example.com</email>" in answer.text


# ---- prospects -----------------------------------------------------------------------


async def test_v3_one_prospect_per_email(pardot: Pardot) -> None:
    pardot.fake.version = 3
    created = await pardot.call("create/email/one@example.com", first_name="A")
    assert created.status_code == 201
    again = await pardot.call("create/email/one@example.com")
    assert err_code(again) == 9
    upserted = await pardot.call("upsert/email/one@example.com", last_name="B")
    assert upserted.status_code == 200
    prospect = upserted.json()["prospect"]
    assert (prospect["first_name"], prospect["last_name"]) == ("A", "B")
    assert (await pardot.call("upsert/email/two@example.com")).status_code == 201
    assert len(pardot.fake.records) == 2


async def test_v4_read_by_email_returns_all_matches(pardot: Pardot) -> None:
    first = await pardot.call("create/email/dup@example.com", first_name="One")
    one = await pardot.call("read/email/dup@example.com")
    assert isinstance(one.json()["prospect"], dict)
    await pardot.call("create/email/dup@example.com", first_name="Two")
    both = (await pardot.call("read/email/dup@example.com")).json()["prospect"]
    assert [p["first_name"] for p in both] == ["One", "Two"]
    assert both[0]["id"] == first.json()["prospect"]["id"]
    assert err_code(await pardot.call("read/email/nobody@example.com")) == 4


async def test_v4_upsert_by_email_always_creates(pardot: Pardot) -> None:
    first = await pardot.call("upsert/email/u@example.com", first_name="A")
    second = await pardot.call("upsert/email/u@example.com", first_name="B")
    assert (first.status_code, second.status_code) == (201, 201)
    assert len(pardot.fake.prospects_by_email("u@example.com")) == 2
    pid = first.json()["prospect"]["id"]
    updated = await pardot.call(f"upsert/id/{pid}", first_name="C")
    assert updated.status_code == 200
    assert updated.json()["prospect"]["first_name"] == "C"
    assert err_code(await pardot.call("update/email/u@example.com", first_name="D")) == 2
    assert err_code(await pardot.call("upsert/id/999999")) == 14


async def test_prospect_shape_and_field_rules(pardot: Pardot) -> None:
    answer = await pardot.call(
        "create/email/shape@example.com",
        first_name="Ada",
        company="",
        favourite_color="green",
        not_a_field="ignored",
        interests_0="cats",
        interests_1="dogs",
        is_do_not_email="true",
        score="12",
        id="5",
        created_at="2001-01-01 00:00:00",
    )
    assert answer.status_code == 201
    prospect = answer.json()["prospect"]
    keys = list(prospect)
    assert keys[: len(STANDARD_FIELDS)] == list(STANDARD_FIELDS)
    assert keys[len(STANDARD_FIELDS)] == "campaign"
    assert keys[-4:] == ["profile", "visitors", "visitor_activities", "lists"]
    assert prospect["company"] is None and prospect["last_name"] is None
    assert prospect["id"] != 5 and not prospect["created_at"].startswith("2001")
    assert (prospect["score"], prospect["is_do_not_email"], prospect["is_do_not_call"]) == (
        12,
        1,
        None,
    )
    assert isinstance(prospect["campaign_id"], int)
    assert prospect["favourite_color"] == "green"
    assert prospect["interests"] == {"value": ["cats", "dogs"]}
    assert "not_a_field" not in prospect and "visits" not in prospect
    cleared = await pardot.call(f"update/id/{prospect['id']}", first_name="", favourite_color="")
    body = cleared.json()["prospect"]
    assert body["first_name"] is None and "favourite_color" not in body
    mobile = await pardot.call(f"read/id/{prospect['id']}", output="mobile")
    assert list(mobile.json()["prospect"]) == ["id", "first_name", "last_name", "email", "company"]


async def test_invalid_email_is_4(pardot: Pardot) -> None:
    assert err_code(await pardot.call("create/email/not-an-email")) == 4
    too_long = "a" * 250 + "@example.com"
    assert err_code(await pardot.call(f"upsert/email/{too_long}")) == 4
    assert pardot.fake.records == {}


async def test_fid_rules(pardot: Pardot) -> None:
    pid = pardot.fake.seed_prospect(email="f@example.com", salesforce_fid="00Q000000000001AAA")
    other = pardot.fake.seed_prospect(email="g@example.com")
    read = await pardot.call("read/fid/00Q000000000001AAA")
    assert read.json()["prospect"]["id"] == pid
    assert read.json()["prospect"]["crm_lead_fid"] == "00Q000000000001AAA"
    assert err_code(await pardot.call("read/fid/001000000000001AAA")) == 77
    assert err_code(await pardot.call(f"update/id/{other}/fid/00Q000000000001AAA")) == 81
    updated = await pardot.call(f"update/id/{pid}", fid="00Q000000000001AAA", city="Oslo")
    assert updated.json()["prospect"]["city"] == "Oslo"


async def test_updated_at_strictly_orders_writes(pardot: Pardot) -> None:
    stamps = []
    for n in range(3):
        answer = await pardot.call("upsert/email/t@example.com", first_name=str(n))
        stamps.append(answer.json()["prospect"]["updated_at"])
    assert stamps == sorted(set(stamps))
    latest = pardot.fake.latest_by_email("t@example.com")
    assert latest is not None and latest["first_name"] == "2"


# ---- batches -------------------------------------------------------------------------


async def test_batch_limits_and_shapes(pardot: Pardot) -> None:
    rows = [{"email": f"b{n}@example.com"} for n in range(51)]
    assert err_code(await pardot.batch("batchCreate", rows)) == 70
    assert err_code(await pardot.call("batchCreate", prospects="{not json")) == 71
    assert err_code(await pardot.batch("batchCreate", {"a@example.com": {}})) == 90
    assert err_code(await pardot.batch("batchCreate", [{"email": "n@example.com", "x": {}}])) == 90
    pardot.fake.version = 3
    assert err_code(await pardot.batch("batchCreate", [{"email": "a@example.com"}])) == 91
    assert pardot.fake.records == {}


async def test_v4_batch_row_errors_keyed_by_index(pardot: Pardot) -> None:
    pid = pardot.fake.seed_prospect(email="old@example.com")
    rows = [
        {"email": "new@example.com", "first_name": "New"},
        {"email": "broken"},
        {"id": pid, "first_name": "Updated"},
        {"id": 999999},
    ]
    answer = await pardot.batch("batchUpsert", rows)
    assert answer.status_code == 201
    body = answer.json()
    assert body["@attributes"]["stat"] == "fail"
    assert body["errors"] == {
        "1": "Invalid prospect email address",
        "3": "Non-existent prospect ID; No email address provided",
    }
    assert "prospect" not in body
    assert pardot.fake.calls["batchUpsert"] == 1
    updated = await pardot.batch("batchUpdate", [{"id": pid, "last_name": "Again"}])
    assert updated.status_code == 200
    assert updated.json() == {"@attributes": {"stat": "ok", "version": 1}}
    assert pardot.fake.get_prospect(pid)["last_name"] == "Again"  # type: ignore[index]


async def test_v3_batch_row_errors_keyed_by_identifier(pardot: Pardot) -> None:
    pardot.fake.version = 3
    pardot.fake.seed_prospect(email="taken@example.com")
    rows = {"taken@example.com": {}, "fresh@example.com": {"first_name": "F"}, "bad": {}}
    answer = await pardot.batch("batchCreate", rows)
    assert answer.status_code == 201
    assert answer.json()["errors"] == {
        "taken@example.com": "A prospect with the specified email address already exists",
        "bad": "Invalid prospect email address",
    }


# ---- query ---------------------------------------------------------------------------


async def test_query_paging(pardot: Pardot) -> None:
    ids = [pardot.fake.seed_prospect(email=f"q{n}@example.com", visits="3") for n in range(5)]
    page = (await pardot.call("query", limit=2, offset=2, sort_by="id")).json()["result"]
    assert page["total_results"] == 5
    assert [p["id"] for p in page["prospect"]] == ids[2:4]
    last = (await pardot.call("query", id_greater_than=ids[3])).json()["result"]
    assert last["total_results"] == 1 and last["prospect"]["id"] == ids[4]
    assert last["prospect"]["visits"] == "3" and "profile" not in last["prospect"]
    none = (await pardot.call("query", id_greater_than=ids[4])).json()["result"]
    assert none == {"total_results": 0}
    bulk = (await pardot.call("query", output="bulk", limit=200)).json()["result"]
    assert "total_results" not in bulk and "visits" not in bulk["prospect"][0]
    assert err_code(await pardot.call("query", limit=201)) == 23


# ---- limits and faults ----------------------------------------------------------------


async def test_sixth_concurrent_call_gets_66(pardot: Pardot) -> None:
    pardot.fake.latency = 0.3
    answers = await asyncio.gather(*(pardot.call("query") for _ in range(6)))
    codes = sorted(a.json()["@attributes"].get("err_code", 0) for a in answers)
    assert codes == [0, 0, 0, 0, 0, 66]
    assert pardot.fake.max_in_flight == 6
    assert pardot.fake.in_flight[DEFAULT_BUSINESS_UNIT_ID] == 0


async def test_daily_budget_is_122(pardot: Pardot) -> None:
    pardot.fake.daily_budget = 2
    assert (await pardot.call("query")).status_code == 200
    assert (await pardot.call("query")).status_code == 200
    assert err_code(await pardot.call("query")) == 122
    pardot.fake.reset_daily_budget()
    assert (await pardot.call("query")).status_code == 200


async def test_access_token_dies_after_its_lifetime(pardot: Pardot) -> None:
    pardot.fake.token_lifetime_calls = 2
    pardot.token = pardot.fake.issue_access_token()
    assert (await pardot.call("query")).status_code == 200
    assert (await pardot.call("query")).status_code == 200
    assert err_code(await pardot.call("query")) == 184
    pardot.token = pardot.fake.issue_access_token()
    pardot.fake.expire_access_tokens()
    assert err_code(await pardot.call("query")) == 184


async def test_injected_faults(pardot: Pardot) -> None:
    pardot.fake.fail_next(1, err_code=121, message="Unable to sync Prospect with Salesforce")
    assert err_code(await pardot.call("create/email/f@example.com")) == 121
    pardot.fake.fail_next(1, status=503, err_code=None)
    assert (await pardot.call("create/email/f@example.com")).status_code == 503
    pardot.fake.reset_next(1)
    with pytest.raises(httpx.RemoteProtocolError):
        await pardot.call("create/email/f@example.com")
    assert pardot.fake.records == {}
    pardot.fake.hang_next(1, seconds=0.3)
    token, pardot.token = pardot.token, "expired"
    assert err_code(await pardot.call("query")) == 184  # refused calls leave the hang queued
    pardot.token = token
    with pytest.raises(httpx.ReadTimeout):
        await pardot.http.post(
            "/api/prospect/version/4/do/create/email/late@example.com",
            data={"format": "json"},
            headers=pardot.headers(),
            timeout=0.1,
        )
    await asyncio.sleep(0.4)
    assert len(pardot.fake.prospects_by_email("late@example.com")) == 1  # it did happen
    assert pardot.fake.calls["create"] == 4
    assert [e.code for e in pardot.fake.errors] == [121, 184]


# ---- Salesforce OAuth ------------------------------------------------------------------


async def refresh(http: httpx.AsyncClient, token: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
    }
    return await http.post(TOKEN_URL, data=form)


async def test_refresh_grant_and_rotation(pardot: Pardot, server: RunningFakePardot) -> None:
    answer = await refresh(pardot.http, DEFAULT_REFRESH_TOKEN)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["instance_url"] == server.url
    assert body["issued_at"].isdigit() and "expires_in" not in body
    assert "refresh_token" not in body
    pardot.token = body["access_token"]
    assert (await pardot.call("query")).status_code == 200

    pardot.fake.rotate_refresh_tokens = True
    rotated = (await refresh(pardot.http, DEFAULT_REFRESH_TOKEN)).json()["refresh_token"]
    stale = await refresh(pardot.http, DEFAULT_REFRESH_TOKEN)
    assert stale.status_code == 400
    assert stale.json() == {
        "error": "invalid_grant",
        "error_description": "expired access/refresh token",
    }
    pardot.fake.refresh_busy_next(1)
    busy = await refresh(pardot.http, rotated)
    assert busy.json()["error_description"] == "token request is already being processed"
    assert (await refresh(pardot.http, rotated)).status_code == 200
    assert pardot.fake.token_requests == 5


async def test_concurrent_refresh_of_one_token_is_refused(pardot: Pardot) -> None:
    pardot.fake.token_latency = 0.2
    answers = await asyncio.gather(*(refresh(pardot.http, DEFAULT_REFRESH_TOKEN) for _ in range(2)))
    assert sorted(a.status_code for a in answers) == [200, 400]
    pardot.fake.revoke_refresh_token(DEFAULT_REFRESH_TOKEN)
    assert (await refresh(pardot.http, DEFAULT_REFRESH_TOKEN)).json()["error"] == "invalid_grant"
    bad_client = await pardot.http.post(
        TOKEN_URL, data={"grant_type": "refresh_token", "client_id": "who", "client_secret": "x"}
    )
    assert bad_client.json()["error"] == "invalid_client_id"


async def test_authorize_redirect_and_code_exchange(pardot: Pardot) -> None:
    verifier = "v" * 64
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    redirect_uri = "http://localhost:9999/callback"
    answer = await pardot.http.get(
        "/services/oauth2/authorize",
        params={
            "response_type": "code",
            "client_id": DEFAULT_CLIENT_ID,
            "redirect_uri": redirect_uri,
            "state": "xyz",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    form = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    tokens = await pardot.http.post(TOKEN_URL, data=form)
    assert tokens.status_code == 200
    body = tokens.json()
    pardot.token = body["access_token"]
    assert (await pardot.call("query")).status_code == 200
    assert (await refresh(pardot.http, body["refresh_token"])).status_code == 200
    reused = await pardot.http.post(TOKEN_URL, data=form)
    assert reused.json()["error"] == "invalid_grant"
