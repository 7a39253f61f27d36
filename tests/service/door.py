"""The aiohttp app in-process with an in-memory queue: the door's tests talk to it over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp.test_utils import TestServer

from adapters.memory.queue import InMemoryEventQueue
from entrypoints.http.app import create_app

WRITE_KEY = "wk-test-123"
SECRET = "shh-its-a-secret"
AUTH = (WRITE_KEY, "")


def identify(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": f"u{n}",
        "traits": {"email": f"u{n}@x.io"},
        **extra,
    }


@dataclass
class Door:
    client: httpx.AsyncClient
    queue: InMemoryEventQueue

    async def stored(self) -> int:
        counts = await self.queue.counts()
        return sum(counts.values())

    async def payloads(self) -> list[dict[str, Any]]:
        return [dict(event.payload) for event in await self.queue.lease(10_000, 60)]


@asynccontextmanager
async def open_door(queue: InMemoryEventQueue | None = None, **options: Any) -> AsyncIterator[Door]:
    queue = queue if queue is not None else InMemoryEventQueue()
    options.setdefault("write_keys", (WRITE_KEY, "second-key"))
    options.setdefault("shared_secret", SECRET)
    app = create_app(queue, **options)
    async with (
        TestServer(app, host="127.0.0.1", port=0) as server,
        # What every Segment library sends; tests of other content types say so explicitly.
        httpx.AsyncClient(
            base_url=str(server.make_url("")), headers={"Content-Type": "application/json"}
        ) as client,
    ):
        yield Door(client, queue)
