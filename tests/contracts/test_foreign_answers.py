"""Answers that are not Pardot's: only `stat="ok"` is a success (PARDOT_API.md).

An empty 200, a maintenance page, a firewall's 403, a gateway's 5xx: none of them is "not
found", "done" or "refused for good". Each must come back as a retryable error, and a create
answered that way as one that may have happened.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest

from adapters.pardot.errors import pardot_error
from adapters.pardot.responses import decode
from contracts.fake_pardot_state import FOREIGN_ANSWERS
from domain.errors import OutcomeUnknown, PermanentPardotError, RetryableError
from domain.ports import ProspectWrite
from tests.contracts.conftest import Backend, open_backend

KINDS = sorted(FOREIGN_ANSWERS)
ENOUGH_TO_EXHAUST_RETRIES = 20


@pytest.mark.parametrize("kind", KINDS)
async def test_a_foreign_answer_to_a_read_is_retried_never_taken_as_not_found(
    http4: Backend, kind: str
) -> None:
    assert http4.fake is not None
    pid = http4.seed("pat@x.io")
    http4.fake.answer_next(1, kind)
    assert [p.id for p in await http4.repo.read_by_email("pat@x.io")] == [pid]
    http4.fake.answer_next(1, kind)
    found = await http4.repo.read_by_id(pid)
    assert found is not None and found.id == pid


@pytest.mark.parametrize("kind", KINDS)
async def test_foreign_answers_past_the_retry_budget_raise_a_retryable_error(
    http4: Backend, kind: str
) -> None:
    assert http4.fake is not None
    http4.seed("pat@x.io")
    http4.fake.answer_next(ENOUGH_TO_EXHAUST_RETRIES, kind)
    with pytest.raises(RetryableError) as caught:
        await http4.repo.read_by_email("pat@x.io")
    assert not isinstance(caught.value, PermanentPardotError)
    assert caught.value.code is None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_foreign_answer_to_a_batch_write_is_neither_success_nor_rejection(
    http4: Backend, kind: str
) -> None:
    assert http4.fake is not None
    pid = http4.seed("pat@x.io", first_name="Before")
    rows = [ProspectWrite("id", str(pid), {"first_name": "After"}, mode="update")]
    http4.fake.answer_next(ENOUGH_TO_EXHAUST_RETRIES, kind)
    with pytest.raises(RetryableError):
        await http4.repo.write_batch(rows)
    assert http4.fake.get_prospect(pid)["first_name"] == "Before"
    http4.fake.foreign_pending.clear()
    http4.fake.answer_next(1, kind)
    assert await http4.repo.write_batch(rows) == [None]  # retried in the call, then applied
    assert http4.fake.get_prospect(pid)["first_name"] == "After"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("after_call", [True, False])
async def test_a_create_with_a_foreign_answer_may_have_happened_and_is_not_repeated(
    http4: Backend, kind: str, after_call: bool
) -> None:
    assert http4.fake is not None
    http4.fake.answer_next(1, kind, after_call=after_call)
    with pytest.raises(OutcomeUnknown) as caught:
        await http4.repo.create("pat@x.io", {"first_name": "Pat"})
    assert caught.value.maybe_applied and isinstance(caught.value, RetryableError)
    assert http4.fake.calls["create"] == 1
    assert http4.emails() == (["pat@x.io"] if after_call else [])


async def test_a_create_whose_answer_timed_out_may_have_happened() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        backend.repo._client.timeout = httpx.Timeout(0.2)  # type: ignore[attr-defined]
        backend.fake.hang_next(1, seconds=0.5)
        with pytest.raises(OutcomeUnknown):
            await backend.repo.create("pat@x.io", {})
        await asyncio.sleep(0.5)  # the fake finishes the call the client gave up on
        assert backend.fake.calls["create"] == 1 and backend.emails() == ["pat@x.io"]


@pytest.mark.parametrize("code", [66, 62, 85])
async def test_a_create_pardot_refused_before_doing_it_is_retried_in_the_call(
    http4: Backend, code: int
) -> None:
    assert http4.fake is not None
    http4.fake.fail_next(1, err_code=code)
    created = await http4.repo.create("pat@x.io", {})
    assert http4.emails() == ["pat@x.io"] and created.email == "pat@x.io"


@pytest.mark.parametrize("code", [183, 214])
async def test_a_create_that_failed_inside_pardot_may_have_happened(
    http4: Backend, code: int
) -> None:
    """Internal error and timed out do not promise that nothing was saved."""
    assert http4.fake is not None
    http4.fake.fail_next(1, err_code=code)
    with pytest.raises(OutcomeUnknown) as caught:
        await http4.repo.create("pat@x.io", {})
    assert caught.value.code == code and http4.fake.calls["create"] == 1


async def test_transport_errors_after_the_retry_budget_are_retryable_errors(
    http4: Backend,
) -> None:
    """The domain catches PardotError, never httpx's exceptions."""
    assert http4.fake is not None
    http4.fake.reset_next(ENOUGH_TO_EXHAUST_RETRIES)
    with pytest.raises(RetryableError) as caught:
        await http4.repo.read_by_id(1)
    assert not caught.value.maybe_applied


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b""),
        (200, b"{}"),
        (200, b"[]"),
        (200, b'{"prospect": {"id": 1}}'),  # looks right, but no envelope says ok
        (200, b'{"@attributes": {"stat": "maybe"}}'),
        (200, b"<html><body>maintenance</body></html>"),
        (200, b'<?xml version="1.0"?><rsp stat="ok" version="1.0"></rsp>'),  # JSON was asked
        (403, b"<html><body>Access Denied</body></html>"),
        (404, b"Not Found"),
        (500, b'{"@attributes": {"stat": "ok", "version": 1}, "prospect": {"id": 1}}'),
    ],
)
def test_only_an_ok_envelope_decodes_as_success(status: int, body: bytes) -> None:
    answer = decode(status, body, "")
    assert not answer.ok and answer.code is None


def test_an_ok_envelope_and_a_batch_with_row_errors_are_pardots_answers() -> None:
    ok = decode(200, b'{"@attributes":{"stat":"ok","version":1},"prospect":{"id":1}}', "")
    assert ok.ok and ok.body["prospect"] == {"id": 1}
    rows = decode(200, b'{"@attributes":{"stat":"fail"},"errors":{"1":"Invalid email"}}', "")
    assert rows.ok and rows.body["errors"] == {"1": "Invalid email"}


@pytest.mark.parametrize("status", [200, 400, 403, 404, 409, 500, 503])
def test_without_pardots_error_code_every_status_is_retryable(status: int) -> None:
    error = pardot_error(None, "HTTP x", status=status, account_zone=UTC, now=datetime.now(UTC))
    assert type(error) is RetryableError
