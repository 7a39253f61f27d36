"""A fake Salesforce + Pardot on 127.0.0.1 (port 0) and helpers shared by the OAuth tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.pardot_http import PardotHttpRepository
from adapters.token_store import StoredTokens, TokenStore
from contracts.fake_pardot import FakePardot, RunningFakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
)
from domain.ports import TokenProvider

CLIENT_ID = DEFAULT_CLIENT_ID
CLIENT_SECRET = DEFAULT_CLIENT_SECRET


@pytest.fixture
def fake() -> FakePardot:
    return FakePardot(version=4)


@pytest.fixture
async def server(fake: FakePardot) -> AsyncIterator[RunningFakePardot]:
    async with running_fake_pardot(fake) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "tokens.json"


def store_refresh_token(path: Path, refresh_token: str, login_url: str) -> TokenStore:
    """What `connect` leaves behind, written directly."""
    store = TokenStore(path)
    store.save(
        StoredTokens(
            refresh_token=refresh_token,
            instance_url=login_url,
            login_url=login_url,
            client_id=CLIENT_ID,
            issued_at="1700000000000",
        )
    )
    return store


async def refresh_works(http: httpx.AsyncClient, login_url: str, refresh_token: str) -> bool:
    """Whether the fake still accepts `refresh_token` (costs one token request)."""
    answer = await http.post(
        f"{login_url}/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    return answer.status_code == 200


def repository_for(
    http: httpx.AsyncClient, tokens: TokenProvider, server: RunningFakePardot
) -> PardotHttpRepository:
    """The real HTTP adapter against the fake, with the given token provider."""
    return PardotHttpRepository(
        http,
        tokens,
        base_url=server.url,
        business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
        api_version=4,
        retry_wait_initial=0.01,
    )
