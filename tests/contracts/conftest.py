"""Both PardotRepository adapters behind one fixture, so one suite checks them alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.pardot.http_repository import PardotHttpRepository
from adapters.pardot.in_memory import InMemoryPardot
from adapters.salesforce.token_providers import RefreshTokenProvider
from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from domain.ports import PardotRepository

CUSTOM_FIELDS = ("org_id", "premium_users", "interests")


@dataclass
class Backend:
    """A repository plus the test-side view of the Pardot behind it."""

    kind: str
    repo: PardotRepository
    seed: Callable[..., int]
    emails: Callable[[], list[str]]
    # What a marketer does in Pardot's screens: to the recycle bin, or merged into another.
    delete: Callable[[int], None]
    merge: Callable[[int, int], None]
    fake: FakePardot | None = None
    tokens: RefreshTokenProvider | None = None


async def open_backend(stack: AsyncExitStack, kind: str, version: int, **http: Any) -> Backend:
    if kind == "memory":
        memory = InMemoryPardot(version=version, custom_fields=CUSTOM_FIELDS)

        def seed_memory(email: str, *, fid: str | None = None, **fields: Any) -> int:
            return memory.seed(email, fid=fid, **fields)

        return Backend(
            kind,
            memory,
            seed_memory,
            lambda: [p.email or "" for p in memory.prospects()],
            memory.delete,
            memory.merge,
        )
    fake = FakePardot(version=version, custom_fields=set(CUSTOM_FIELDS))
    fake.campaigns[17] = "Segment"
    server = await stack.enter_async_context(running_fake_pardot(fake))
    client = await stack.enter_async_context(httpx.AsyncClient(timeout=5.0))
    tokens = RefreshTokenProvider(
        login_url=server.url,
        client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET,
        refresh_token=DEFAULT_REFRESH_TOKEN,
    )
    options: dict[str, Any] = {
        "api_version": version,
        "retry_wait_initial": 0.01,
        "retry_wait_max": 0.05,
    }
    options.update(http)
    repo = PardotHttpRepository(
        client, tokens, base_url=server.url, business_unit_id=DEFAULT_BUSINESS_UNIT_ID, **options
    )

    def seed_fake(email: str, *, fid: str | None = None, **fields: Any) -> int:
        extra = {"salesforce_fid": fid} if fid else {}
        return fake.seed_prospect(email=email, **extra, **fields)

    return Backend(
        kind,
        repo,
        seed_fake,
        lambda: [p["email"] for p in fake.all_prospects()],
        fake.delete_prospect,
        fake.merge_prospects,
        fake,
        tokens,
    )


@pytest.fixture(params=["memory", "http"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def v3(backend_kind: str) -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        yield await open_backend(stack, backend_kind, 3)


@pytest.fixture
async def v4(backend_kind: str) -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        yield await open_backend(stack, backend_kind, 4)


@pytest.fixture
async def http4() -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        yield await open_backend(stack, "http", 4)
