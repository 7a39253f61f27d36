"""The whole service as the container builds it, in this process: the app and its worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp.test_utils import TestServer
from dependency_injector import providers

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.memory.queue import InMemoryEventQueue
from adapters.pardot.in_memory import InMemoryPardot
from adapters.salesforce.token_file import TokenStore
from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from entrypoints.container import NO_CREDENTIALS, Container
from entrypoints.service import build_app
from tests.settings import service_config

WRITE_KEY = "in-process-write-key"
AUTH = (WRITE_KEY, "")


def identify(n: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": f"u{n}",
        "traits": {"email": f"u{n}@x.io", "first_name": f"U{n}"},
    }


@asynccontextmanager
async def serving(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """`build_app` behind a test server: the worker runs while the block does."""
    app = await build_app(container)
    async with (
        TestServer(app, host="127.0.0.1", port=0) as server,
        httpx.AsyncClient(base_url=str(server.make_url(""))) as client,
    ):
        yield client


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_the_built_app_stores_events_and_its_worker_delivers_them(tmp_path: Path) -> None:
    queue, pardot = InMemoryEventQueue(), InMemoryPardot(version=4)
    container = Container(
        config=service_config(write_keys=WRITE_KEY, queue_url=f"sqlite:///{tmp_path / 'unused.db'}")
    )
    container.override_providers(
        queue=providers.Object(queue),
        repository=providers.Object(pardot),
        prospect_store=providers.Object(InMemoryProspectStore()),
    )
    async with serving(container) as client:
        answer = await client.post(
            "/v1/batch", json={"batch": [identify(1), identify(2)]}, auth=AUTH
        )
        assert answer.status_code == 200, answer.text

        async def delivered() -> bool:
            return (await queue.counts())["delivered"] == 2

        await eventually(delivered)
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/pardot.js")).status_code == 200  # tracking is wired too
    assert sorted(p.email for p in pardot.prospects()) == ["u1@x.io", "u2@x.io"]


async def test_a_missing_credential_makes_the_service_unready_until_connect_wrote_one(
    tmp_path: Path,
) -> None:
    """The API version is detected lazily: no token at start is a state, not a crash."""
    fake = FakePardot(version=4)
    queue = InMemoryEventQueue()
    token_file = tmp_path / "tokens.json"
    async with running_fake_pardot(fake) as pardot_server:
        container = Container(
            config=service_config(
                write_keys=WRITE_KEY,
                queue_url=f"sqlite:///{tmp_path / 'unused.db'}",
                api_version="auto",
                pardot_base_url=pardot_server.url,
                salesforce_login_url=pardot_server.url,
                salesforce_client_id=DEFAULT_CLIENT_ID,
                salesforce_client_secret=DEFAULT_CLIENT_SECRET,
                salesforce_refresh_token=None,
                static_access_token=None,
                jwt_username=None,
                jwt_private_key_file=None,
                token_file=str(token_file),
                configuration_retry_seconds=0.1,
            )
        )
        container.override_providers(
            queue=providers.Object(queue), prospect_store=providers.Object(InMemoryProspectStore())
        )
        async with serving(container) as client:
            assert (await client.post("/v1/identify", json=identify(1), auth=AUTH)).is_success

            async def unready() -> bool:
                return (await client.get("/readyz")).status_code == 503

            async def waiting() -> bool:
                return {k: v for k, v in (await queue.counts()).items() if v} == {"retry": 1}

            await eventually(unready)
            assert (await client.get("/readyz")).json()["reason"] == NO_CREDENTIALS
            await eventually(waiting)  # kept, not dead-lettered

            # What `pardot-destination connect` leaves behind once the operator signed in.
            TokenStore(token_file).save_refresh_token(
                fake.issue_refresh_token(), login_url=pardot_server.url, client_id=DEFAULT_CLIENT_ID
            )

            async def delivered() -> bool:
                return (await queue.counts())["delivered"] == 1

            await eventually(delivered)
            assert (await client.get("/readyz")).status_code == 200
        assert [p["email"] for p in fake.all_prospects()] == ["u1@x.io"]
