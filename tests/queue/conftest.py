from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.queue_memory import InMemoryEventQueue
from adapters.queue_sqlite import SQLiteEventQueue


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


@pytest.fixture(params=["memory", "sqlite"])
async def make_queue(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[QueueFactory]:
    opened: list[Any] = []

    def make(**options: Any) -> Any:
        if request.param == "memory":
            queue: Any = InMemoryEventQueue(clock=clock, **options)
        else:
            queue = SQLiteEventQueue(tmp_path / f"queue{len(opened)}.db", clock=clock, **options)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Any:
    return make_queue()
