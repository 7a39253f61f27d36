"""The refresh-token provider against the fake Salesforce, over real HTTP.

One refresh however many calls saw the 184, rotation persisted at once, busy refreshes
retried, a revoked token turned into an operator instruction, and deliveries resuming
once `connect` has written a new token, without a restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from adapters.salesforce.token_file import TokenStore
from adapters.salesforce.token_providers import (
    RefreshTokenProvider,
    StaticTokenProvider,
)
from contracts.fake_pardot import FakePardot, RunningFakePardot
from contracts.fake_pardot_state import DEFAULT_REFRESH_TOKEN
from domain.errors import ConfigurationError, RetryableError
from tests.oauth.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    chosen_tokens,
    refresh_works,
    repository_for,
    store_refresh_token,
)


def provider(server: RunningFakePardot, **options: object) -> RefreshTokenProvider:
    settings: dict[str, object] = {
        "login_url": server.url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": DEFAULT_REFRESH_TOKEN,
        "busy_wait": 0.01,
    }
    settings.update(options)
    return RefreshTokenProvider(**settings)  # type: ignore[arg-type]


def from_file(server: RunningFakePardot, token_file: Path) -> RefreshTokenProvider:
    tokens = chosen_tokens(
        login_url=server.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=None,
        token_file=token_file,
    )
    assert isinstance(tokens, RefreshTokenProvider)
    return tokens


async def test_fifty_concurrent_calls_that_see_184_cause_exactly_one_refresh(
    server: RunningFakePardot, fake: FakePardot, http: httpx.AsyncClient
) -> None:
    tokens = provider(server)
    repo = repository_for(http, tokens, server)
    pid = fake.seed_prospect(email="pat@example.com", first_name="Pat")
    assert (await repo.read_by_id(pid)) is not None
    fake.expire_access_tokens()
    before = fake.token_requests

    prospects = await asyncio.gather(*(repo.read_by_id(pid) for _ in range(50)))

    assert fake.token_requests == before + 1
    assert all(p is not None and p.id == pid for p in prospects)
    assert [e.code for e in fake.errors].count(184) == 50  # every call saw it, then succeeded
    assert tokens.refreshes == 2


async def test_invalidate_only_forgets_the_token_it_names(
    server: RunningFakePardot, fake: FakePardot
) -> None:
    tokens = provider(server)
    first = await tokens.token()
    await tokens.invalidate(first)
    second = await tokens.token()
    assert second != first
    await tokens.invalidate(first)  # a late report of the old token changes nothing
    assert await tokens.token() == second
    assert fake.token_requests == 2


async def test_a_rotated_refresh_token_is_persisted_at_once(
    server: RunningFakePardot, fake: FakePardot, http: httpx.AsyncClient, token_file: Path
) -> None:
    fake.rotate_refresh_tokens = True
    store = store_refresh_token(token_file, DEFAULT_REFRESH_TOKEN, server.url)
    tokens = from_file(server, token_file)

    await tokens.token()

    rotated = store.refresh_token()
    assert rotated is not None and rotated != DEFAULT_REFRESH_TOKEN
    assert set(fake.refresh_tokens) == {rotated}
    assert not await refresh_works(http, server.url, DEFAULT_REFRESH_TOKEN)
    # The provider goes on with the rotated token too.
    await tokens.invalidate()
    await tokens.token()
    assert store.refresh_token() == next(iter(fake.refresh_tokens))
    assert store.refresh_token() != rotated


async def test_a_busy_refresh_is_retried(server: RunningFakePardot, fake: FakePardot) -> None:
    tokens = provider(server)
    fake.refresh_busy_next(2)
    assert await tokens.token()
    assert fake.token_requests == 3


async def test_a_refresh_that_stays_busy_is_retryable_not_a_configuration_error(
    server: RunningFakePardot, fake: FakePardot
) -> None:
    tokens = provider(server, busy_retries=2)
    fake.refresh_busy_next(3)
    with pytest.raises(RetryableError):
        await tokens.token()
    assert await tokens.token()  # the next attempt goes through


async def test_a_revoked_refresh_token_tells_the_operator_to_run_connect(
    server: RunningFakePardot, fake: FakePardot
) -> None:
    fake.revoke_refresh_token(DEFAULT_REFRESH_TOKEN)
    tokens = provider(server)
    results = await asyncio.gather(*(tokens.token() for _ in range(20)), return_exceptions=True)
    assert fake.token_requests == 1  # one request answered every waiter
    assert all(isinstance(r, ConfigurationError) for r in results)
    message = str(results[0])
    assert "run `pardot-destination connect`" in message
    assert DEFAULT_REFRESH_TOKEN not in message


async def test_deliveries_resume_without_restart_once_connect_wrote_a_new_token(
    server: RunningFakePardot, fake: FakePardot, token_file: Path
) -> None:
    store_refresh_token(token_file, DEFAULT_REFRESH_TOKEN, server.url)
    tokens = from_file(server, token_file)
    assert await tokens.token()
    fake.revoke_refresh_token(DEFAULT_REFRESH_TOKEN)
    fake.expire_access_tokens()
    await tokens.invalidate()
    with pytest.raises(ConfigurationError, match="pardot-destination connect"):
        await tokens.token()

    store_refresh_token(token_file, fake.issue_refresh_token(), server.url)  # as connect does

    access = await tokens.token()
    assert fake.access_tokens[access].revoked is False


async def test_an_explicit_refresh_token_falls_back_to_the_stored_rotation(
    server: RunningFakePardot, fake: FakePardot, token_file: Path
) -> None:
    """SALESFORCE_REFRESH_TOKEN rotated away by a previous run: the file has its successor."""
    fake.rotate_refresh_tokens = True
    first = chosen_tokens(
        login_url=server.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=DEFAULT_REFRESH_TOKEN,
        token_file=token_file,
    )
    await first.token()
    assert TokenStore(token_file).refresh_token() in fake.refresh_tokens
    restarted = chosen_tokens(
        login_url=server.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=DEFAULT_REFRESH_TOKEN,  # the environment still holds the dead one
        token_file=token_file,
    )
    assert await restarted.token()


async def test_an_unreachable_token_endpoint_is_retryable() -> None:
    tokens = RefreshTokenProvider(
        login_url="http://127.0.0.1:9",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=DEFAULT_REFRESH_TOKEN,
        timeout=2.0,
    )
    with pytest.raises(RetryableError):
        await tokens.token()


async def test_a_wrong_client_secret_is_a_configuration_error(server: RunningFakePardot) -> None:
    tokens = provider(server, client_secret="wrong")
    with pytest.raises(ConfigurationError, match="SALESFORCE_CLIENT_SECRET"):
        await tokens.token()


def test_factory_picks_static_then_jwt_then_refresh(tmp_path: Path) -> None:
    common = {
        "login_url": "https://login.salesforce.com",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "token_file": tmp_path / "none.json",
    }
    static = chosen_tokens(refresh_token=None, static_token="abc", **common)  # type: ignore[arg-type]
    assert isinstance(static, StaticTokenProvider)
    explicit = chosen_tokens(refresh_token="r", **common)  # type: ignore[arg-type]
    assert isinstance(explicit, RefreshTokenProvider)


def test_factory_without_credentials_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        chosen_tokens(
            login_url=None,
            client_id=None,
            client_secret=None,
            refresh_token=None,
            token_file=tmp_path / "missing.json",
        )
    assert str(caught.value) == (
        "no Salesforce credentials: run `pardot-destination connect` or set "
        "SALESFORCE_REFRESH_TOKEN"
    )


def test_factory_needs_the_client_secret_and_a_matching_client_id(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    store_refresh_token(path, "stored", "https://test.salesforce.com")
    with pytest.raises(ConfigurationError, match="SALESFORCE_CLIENT_SECRET"):
        chosen_tokens(
            login_url=None, client_id=None, client_secret=None, refresh_token=None, token_file=path
        )
    with pytest.raises(ConfigurationError, match="another connected app"):
        chosen_tokens(
            login_url=None,
            client_id="someone-else",
            client_secret="s",
            refresh_token=None,
            token_file=path,
        )
    stored = chosen_tokens(
        login_url="https://login.salesforce.com",
        client_id=None,
        client_secret="s",
        refresh_token=None,
        token_file=path,
    )
    # The stored token belongs to the sandbox it was issued by.
    assert "test.salesforce.com" in repr(stored)
