"""Two nodes on one PostgreSQL store: node A has leased a batch holding a person's event when
node B forgets that person. A's worker must not write it to Pardot (nor record it), while the
other person's event in the same batch is delivered as usual (entrypoints/suppression.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dependency_injector import providers

from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from domain.forget import from_query
from domain.ports import QueuedEvent
from entrypoints.container import Container, opened
from entrypoints.operator.forget import forget
from tests.forget.scan import postgres_hits
from tests.postgres import fresh_schema
from tests.settings import service_config

EMAIL, USER = "katherine.johnson@nasa.example", "katherine-johnson-1918"


class HeldAfterLease:
    """Node A's queue: the real one, with a pause right after a lease, while node B acts."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.leased = asyncio.Event()
        self.go_on = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def lease(self, limit: int, lease_seconds: float) -> list[QueuedEvent]:
        got: list[QueuedEvent] = await self._queue.lease(limit, lease_seconds)
        if got:
            self.leased.set()
            await self.go_on.wait()
        return got


@contextlib.asynccontextmanager
async def node(fake_url: str, store_url: str) -> AsyncIterator[Container]:
    config = service_config(
        api_version="4",
        business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
        pardot_base_url=fake_url,
        salesforce_login_url=fake_url,
        salesforce_client_id=DEFAULT_CLIENT_ID,
        salesforce_client_secret=DEFAULT_CLIENT_SECRET,
        salesforce_refresh_token=DEFAULT_REFRESH_TOKEN,
        queue_url=store_url,
        retry_wait_max=0.05,
    )
    container = Container(config=config)
    async with opened(container):
        yield container


@pytest.mark.parametrize("in_pardot", [False, True])
async def test_an_event_leased_by_another_node_is_not_written_once_its_person_is_forgotten(
    in_pardot: bool,
) -> None:
    fake = FakePardot(version=4)
    with fresh_schema() as store_url:
        async with running_fake_pardot(fake) as server:
            async with node(server.url, store_url) as a, node(server.url, store_url) as b:
                queue = HeldAfterLease(await a.queue.async_())
                a.queue.override(providers.Object(queue))
                worker = await a.worker.async_()
                await queue.put(
                    [
                        {"type": "identify", "messageId": "k1", "userId": USER,
                         "traits": {"email": EMAIL, "first_name": "Katherine"}},
                        {"type": "identify", "messageId": "o1", "userId": "dorothy-1910",
                         "traits": {"email": "dorothy@nasa.example"}},
                    ]
                )  # fmt: skip
                delivering = asyncio.create_task(worker.run_once())
                await asyncio.wait_for(queue.leased.wait(), timeout=10)
                sources = await b.forgetting.sources.async_()
                report = await forget(from_query(USER), sources, in_pardot=in_pardot, dry_run=False)
                assert report.removed.in_flight == 1 and report.suppressed >= 1
                queue.go_on.set()
                assert await asyncio.wait_for(delivering, timeout=30) == 1  # Dorothy's only
            assert fake.prospects_by_email(EMAIL) == []  # never written
            assert len(fake.prospects_by_email("dorothy@nasa.example")) == 1
            assert postgres_hits(store_url, [EMAIL, USER]) == {}
