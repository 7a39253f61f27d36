"""What only the HTTP adapter has to get right: tokens, retries, limits, error mapping."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest

from adapters.pardot.errors import next_midnight
from adapters.pardot.responses import decode
from contracts.fake_pardot_state import ForeignAnswer
from domain.errors import (
    ConfigurationError,
    DailyLimitReached,
    OutcomeUnknown,
    PermanentPardotError,
    RetryableError,
)
from domain.ports import ProspectWrite
from tests.contracts.conftest import Backend, open_backend


async def test_an_expired_token_is_refreshed_once_and_the_call_retried(http4: Backend) -> None:
    assert http4.fake is not None and http4.tokens is not None
    pid = http4.seed("pat@x.io")
    assert await http4.repo.read_by_id(pid) is not None
    http4.fake.expire_access_tokens()
    prospect = await http4.repo.read_by_id(pid)
    assert prospect is not None and prospect.id == pid
    assert http4.tokens.refreshes == 2  # the first token, then one refresh
    assert [e.code for e in http4.fake.errors] == [184]


async def test_fifty_concurrent_calls_that_see_184_cause_one_refresh(http4: Backend) -> None:
    assert http4.fake is not None and http4.tokens is not None
    pid = http4.seed("pat@x.io")
    await http4.repo.read_by_id(pid)
    http4.fake.expire_access_tokens()
    before = http4.fake.token_requests
    results = await asyncio.gather(*(http4.repo.read_by_id(pid) for _ in range(50)))
    assert all(r is not None and r.id == pid for r in results)
    assert http4.fake.token_requests - before == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 66), (400, 62), (400, 183), (400, 214), (400, 85), (503, None), (502, None)],
)
async def test_retryable_answers_are_retried(http4: Backend, status: int, code: int | None) -> None:
    assert http4.fake is not None
    pid = http4.seed("pat@x.io")
    http4.fake.fail_next(2, status=status, err_code=code)
    prospect = await http4.repo.read_by_id(pid)
    assert prospect is not None and prospect.id == pid


async def test_a_reset_connection_is_retried_for_idempotent_calls(http4: Backend) -> None:
    assert http4.fake is not None
    pid = http4.seed("pat@x.io")
    http4.fake.reset_next(2)
    rows = [ProspectWrite("id", str(pid), {"first_name": "After"}, mode="update")]
    assert await http4.repo.write_batch(rows) == [None]
    assert http4.fake.get_prospect(pid)["first_name"] == "After"


async def test_retries_stop_after_the_budget_with_a_retryable_error(http4: Backend) -> None:
    assert http4.fake is not None
    http4.fake.fail_next(20, err_code=66)
    with pytest.raises(RetryableError) as caught:
        await http4.repo.read_by_id(1)
    assert caught.value.code == 66


@pytest.mark.parametrize("code", [4, 9, 56, 57])
async def test_permanent_codes_carry_pardots_message(http4: Backend, code: int) -> None:
    assert http4.fake is not None
    http4.fake.fail_next(1, err_code=code, message=f"Pardot says {code}")
    with pytest.raises(PermanentPardotError) as caught:
        await http4.repo.create("pat@x.io", {})
    assert caught.value.code == code and f"Pardot says {code}" in str(caught.value)
    assert http4.fake.calls["create"] == 1  # not retried


async def test_a_create_is_not_repeated_after_a_lost_answer(http4: Backend) -> None:
    """The first create may have succeeded: repeating it would duplicate the prospect."""
    assert http4.fake is not None
    http4.fake.reset_next(1)
    with pytest.raises(OutcomeUnknown):  # the domain's word for "may have happened"
        await http4.repo.create("pat@x.io", {})
    assert http4.fake.calls["create"] == 1


async def test_wrong_api_version_is_a_configuration_error_naming_the_setting() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        backend.fake.version = 3
        with pytest.raises(ConfigurationError) as caught:
            await backend.repo.read_by_id(1)
        assert caught.value.code == 89 and "PARDOT_API_VERSION=3" in str(caught.value)


@pytest.mark.parametrize(
    ("business_unit", "code"), [("", 181), ("0Uv999", 182), ("0Uv000000000999AAA", 201)]
)
async def test_business_unit_problems_are_configuration_errors(
    business_unit: str, code: int
) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        repo = backend.repo
        repo._business_unit = business_unit  # type: ignore[attr-defined]
        with pytest.raises(ConfigurationError) as caught:
            await repo.read_by_id(1)
        assert caught.value.code == code
        assert "PARDOT_BUSINESS_UNIT_ID" in str(caught.value)


@pytest.mark.parametrize("account_version", [3, 4])
async def test_auto_detects_the_account_version(account_version: int) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", account_version, api_version=None)
        detect = backend.repo.detect_version  # type: ignore[attr-defined]
        assert await detect() == account_version
        assert backend.repo.api_version == account_version


async def test_the_daily_limit_pauses_until_the_accounts_midnight(http4: Backend) -> None:
    assert http4.fake is not None
    http4.fake.daily_budget = 1
    await http4.repo.read_by_email("a@x.io")
    with pytest.raises(DailyLimitReached) as caught:
        await http4.repo.read_by_email("a@x.io")
    assert caught.value.resume_at > datetime.now(UTC)
    assert caught.value.resume_at == next_midnight(datetime.now(UTC), UTC)


async def test_a_122_is_never_retried_within_the_call(http4: Backend) -> None:
    """The budget is spent until midnight: asking again only spends the next day's."""
    assert http4.fake is not None
    http4.fake.daily_budget = 0
    with pytest.raises(DailyLimitReached):
        await http4.repo.read_by_email("a@x.io")
    assert http4.fake.calls["read"] == 1


def busy(seconds: str) -> ForeignAnswer:
    """A load balancer's 503 that says when to come back."""
    return ForeignAnswer(503, b"<html>busy</html>", "text/html", {"Retry-After": seconds})


async def test_a_retry_after_within_reach_is_waited_for_within_the_call() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4, retry_wait_max=3.0)
        assert backend.fake is not None
        backend.fake.answer_next(1, busy("2"))
        started = asyncio.get_running_loop().time()
        assert await backend.repo.read_by_email("a@x.io") == []
        assert asyncio.get_running_loop().time() - started >= 1.9
        assert backend.fake.calls["read"] == 2


async def test_a_retry_after_beyond_the_calls_patience_goes_back_to_the_queue() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4, retry_wait_max=3.0)
        assert backend.fake is not None
        backend.fake.answer_next(1, busy("120"))
        with pytest.raises(RetryableError) as caught:
            await backend.repo.read_by_email("a@x.io")
        assert caught.value.retry_after == 120 and backend.fake.calls["read"] == 1
        backend.fake.answer_next(1, busy("Wed, 21 Oct 2015 07:28:00 GMT"))  # a date, long past
        assert await backend.repo.read_by_email("a@x.io") == []


async def test_never_more_requests_in_flight_than_configured() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4, max_concurrency=3)
        assert backend.fake is not None
        backend.fake.latency = 0.02
        pid = backend.seed("pat@x.io")
        await asyncio.gather(*(backend.repo.read_by_id(pid) for _ in range(30)))
        assert backend.fake.max_in_flight <= 3
        assert not [e for e in backend.fake.errors if e.code == 66]


async def test_the_default_limit_never_causes_66() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        backend.fake.latency = 0.05  # long enough that five calls always overlap
        pid = backend.seed("pat@x.io")
        await asyncio.gather(*(backend.repo.read_by_id(pid) for _ in range(40)))
        assert backend.fake.max_in_flight == 5
        assert not [e for e in backend.fake.errors if e.code == 66]


async def test_batches_travel_in_the_body_not_the_url(http4: Backend) -> None:
    assert http4.fake is not None
    ids = [http4.seed(f"p{i}@x.io") for i in range(50)]
    rows = [ProspectWrite("id", str(i), {"comments": "x" * 400}, mode="update") for i in ids]
    assert await http4.repo.write_batch(rows) == [None] * 50
    assert http4.fake.calls["batchUpdate"] == 1


async def test_no_secret_in_logs_errors_or_reprs(
    http4: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    assert http4.fake is not None and http4.tokens is not None
    caplog.set_level(logging.DEBUG)
    http4.fake.fail_next(1, err_code=4)
    with pytest.raises(PermanentPardotError) as caught:
        await http4.repo.create("pat@x.io", {})
    token = await http4.tokens.token()
    texts = [str(caught.value), repr(http4.repo), repr(http4.tokens), caplog.text]
    for secret in (token, "demo-client-secret", "demo-refresh-token"):
        assert all(secret not in text for text in texts)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (
            b'<?xml version="1.0"?><rsp stat="fail" version="1.0"><err code="15">Login failed</err></rsp>',
            15,
            "Login failed",
        ),
        (
            b'{"@attributes":{"stat":"fail","version":1,"err_code":4},"err":"Invalid email"}',
            4,
            "Invalid email",
        ),
        (b"<html>Bad gateway</html>", None, "HTTP 502"),
        (b"not json at all", None, "not a Pardot answer"),
    ],
)
def test_error_bodies_are_read_in_any_format(body: bytes, code: int | None, message: str) -> None:
    answer = decode(502 if b"html" in body else 400, body, "")
    assert not answer.ok and answer.code == code and message in answer.message


def test_xml_bombs_are_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><rsp stat="fail"><err code="1">&b;</err></rsp>'
    answer = decode(400, bomb, "text/xml")
    assert not answer.ok and "unreadable XML" in answer.message


async def test_a_hung_read_times_out_and_is_retried() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        repo = backend.repo
        repo._client.timeout = httpx.Timeout(0.3)  # type: ignore[attr-defined]
        pid = backend.seed("pat@x.io")
        backend.fake.hang_next(1, seconds=5)
        prospect = await repo.read_by_id(pid)
        assert prospect is not None and prospect.id == pid
