from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.queue import InMemoryEventQueue
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.queue import PostgresEventQueue
from adapters.sqlite.queue import SQLiteEventQueue
from tests.postgres import fresh_schema, require_postgres


class Clock:
    """A hand-wound clock, so lease and retry times pass without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def identify(message_id: str | None, user: str | None = "u1", **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "identify", "traits": {"email": f"{user}@example.com"}}
    if message_id is not None:
        event["messageId"] = message_id
    if user is not None:
        event["userId"] = user
    return {**event, **extra}


QueueFactory = Callable[..., Any]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "sqlite", "sqlite-writer", "postgres"])
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[QueueFactory]:
    """`await make_queue(**options)`: a new, empty queue (PostgreSQL: in a fresh schema)."""
    async with contextlib.AsyncExitStack() as stack:
        made: list[Any] = []
        if request.param == "postgres":
            require_postgres()

        async def make_async(**options: Any) -> Any:
            if request.param == "memory":
                queue: Any = InMemoryEventQueue(clock=clock, **options)
            elif request.param.startswith("sqlite"):
                queue = SQLiteEventQueue(tmp_path / f"queue{len(made)}.db", clock=clock, **options)
                if request.param == "sqlite-writer":  # puts stored by the ingest writer
                    assert await queue.start_writer()
            else:
                url = stack.enter_context(fresh_schema())
                database = await stack.enter_async_context(PostgresDatabase(url))
                queue = PostgresEventQueue(database, clock=clock, **options)
            made.append(queue)
            stack.push_async_callback(queue.close)
            return queue

        yield make_async


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Any:
    return await make_queue()
