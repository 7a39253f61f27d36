"""Pardot's in-flight limit for one process alone: the twin of the shared slots, for tests
and for anything that runs without a store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

DEFAULT_SLOTS = 5  # Pardot answers 66 to the sixth concurrent request


class InMemorySlots:
    def __init__(self, limit: int = DEFAULT_SLOTS) -> None:
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            yield
