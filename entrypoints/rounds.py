"""The batches a delivery worker has in hand at once, each its own task (entrypoints/worker.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from entrypoints.wakeup import Wakeup

log = structlog.get_logger(__name__)


class Rounds:
    """The batches a worker has in hand: at most `limit` at once, each its own task.

    A round that fails is kept for the conductor to count (`raise_failure`), as a failing
    round was counted when rounds ran one by one. A round that ends wakes the conductor's
    idle wait: the people it held may have later events now free to lease.
    """

    def __init__(self, limit: int, wakeup: Wakeup) -> None:
        self._limit = max(1, limit)
        self._wakeup = wakeup
        self._tasks: set[asyncio.Task[int]] = set()
        self._failures: list[BaseException] = []

    def start(self, work: Coroutine[Any, Any, int]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.append(task.exception())  # type: ignore[arg-type]
        self._wakeup.notify()

    async def room(self) -> None:
        """Wait until fewer than `limit` rounds are in hand."""
        while len(self._tasks) >= self._limit:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    def raise_failure(self) -> None:
        if self._failures:
            failure = self._failures.pop(0)
            self._failures.clear()
            raise failure

    async def finished(self) -> None:
        """Wait until no round is in hand."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def drain(self) -> None:
        """Finish every round in hand (a stop: the batches in hand are finished first)."""
        await self.finished()
        for failure in self._failures:
            log.error("delivery round failed at shutdown", error=type(failure).__name__)
        self._failures.clear()

    async def cancel(self) -> None:
        """Cancel every round in hand; each hands its leases back before it ends."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
