"""A fake Salesforce + Pardot on 127.0.0.1 (port 0) and helpers shared by the OAuth tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.pardot.http_repository import PardotHttpRepository
from adapters.salesforce.token_file import StoredTokens, TokenStore
from contracts.fake_pardot import FakePardot, RunningFakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
)
from domain.ports import TokenProvider
from entrypoints.container import Container
from tests.settings import service_config

CLIENT_ID = DEFAULT_CLIENT_ID
CLIENT_SECRET = DEFAULT_CLIENT_SECRET
# The credential settings, by the names the token choice knew them by before the container made it.
CREDENTIALS = {
    "login_url": "salesforce_login_url",
    "client_id": "salesforce_client_id",
    "client_secret": "salesforce_client_secret",
    "refresh_token": "salesforce_refresh_token",
    "token_file": "token_file",
    "jwt_username": "jwt_username",
    "jwt_private_key_file": "jwt_private_key_file",
    "static_token": "static_access_token",
}


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


def chosen_tokens(**credentials: object) -> TokenProvider:
    """The token provider the container chooses for these credentials and nothing else.

    Unset credentials are None, not whatever the environment or a `.env` file holds.
    """
    settings: dict[str, object] = {field: None for field in CREDENTIALS.values()}
    for name, value in credentials.items():
        settings[CREDENTIALS[name]] = value if value is None else str(value)
    if settings["salesforce_login_url"] is None:
        del settings["salesforce_login_url"]  # the default login host
    tokens: TokenProvider = Container(config=service_config(**settings)).tokens()
    return tokens
