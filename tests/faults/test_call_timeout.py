"""A Pardot request ends within the call's timeout as a whole, not only each wait within it.

A server that trickles a valid answer a few bytes at a time, each well within the timeout,
would keep a request going for as long as it likes if only each read were bounded: past the
lease, the request could still be going when another node takes the events over.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.pardot.http_repository import PardotHttpRepository
from adapters.salesforce.token_providers import StaticTokenProvider
from domain.errors import RetryableError
from tests.strategies import BUSINESS_UNIT

TIMEOUT = 0.5
ANSWER = json.dumps({"@attributes": {"stat": "ok"}, "prospect": []}).encode()


async def trickle(request: web.Request) -> web.StreamResponse:
    """The whole answer, a byte every tenth of the timeout: each read is quick, the whole not."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(ANSWER)
    await response.prepare(request)
    for byte in ANSWER:
        await asyncio.sleep(TIMEOUT / 10)
        await response.write(bytes([byte]))
    return response


@pytest.mark.parametrize("whole", [False, True])
async def test_a_trickling_answer_is_abandoned_at_the_calls_timeout(whole: bool) -> None:
    app = web.Application()
    app.router.add_post("/api/{tail:.*}", trickle)
    async with (
        TestServer(app, host="127.0.0.1", port=0) as server,
        httpx.AsyncClient(timeout=TIMEOUT if whole else 10 * len(ANSWER) * TIMEOUT) as client,
    ):
        pardot = PardotHttpRepository(
            client,
            StaticTokenProvider("token"),
            base_url=str(server.make_url("")),
            business_unit_id=BUSINESS_UNIT,
            api_version=4,
            retry_attempts=1,
        )
        if not whole:  # the control: given time, the same answer arrives and reads as one
            assert await pardot.read_by_email("a@x.io") == []
            return
        with pytest.raises(RetryableError, match="ReadTimeout"):
            await pardot.read_by_email("a@x.io")
