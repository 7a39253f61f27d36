"""Accepting requests comes before delivering them: the door counts the requests it is
answering, and `serve`'s delivery worker gives way while they crowd.

In `serve` the door and the worker share one interpreter; a worker running flat out (a
backlog, Pardot answering at once) took half of it from the door. The backlog is durable, so
delivery may lag seconds behind a burst, but the door may not. While the door is crowded
(`crowd` requests or more in flight: they wait on each other, not on us), the worker starts
no new batch for up to `longest` seconds; then, the door still crowded, it finishes the
batches in hand and starts one small one (`CROWDED_BATCH` events), so a door that never goes
quiet still sees its events delivered, at a trickle. A request or two in flight is not a
crowd: at ordinary traffic the worker keeps its full pace. The batches in hand give way as
well, before each Pardot call (`DoorFirstSlots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from domain.ports import PardotSlots

CROWD = 4
LONGEST_WAIT_SECONDS = 1.0
QUIET_SECONDS = 0.2  # a crowd is over once no request found the door crowded for this long
CROWDED_BATCH = 50  # events in the one batch at a time a worker takes while the door is crowded


class DoorTraffic:
    def __init__(
        self,
        *,
        crowd: int = CROWD,
        longest: float = LONGEST_WAIT_SECONDS,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self._crowd = crowd
        self._longest = longest
        self._quiet = quiet
        self._in_flight = 0
        self._crowded_at = -float("inf")  # the last time a request found the door crowded
        self.waited = 0.0  # seconds the worker gave way, for the benchmark and the note

    def entered(self) -> None:
        self._in_flight += 1
        if self._in_flight >= self._crowd:
            self._crowded_at = time.monotonic()

    def left(self) -> None:
        self._in_flight -= 1

    @property
    def crowded(self) -> bool:
        """Crowded now or within the last `quiet` seconds: requests come in waves (a group
        commit answers many at once), and the lull between two is no time to start a batch."""
        return time.monotonic() - self._crowded_at < self._quiet

    async def give_way(self, stop: asyncio.Event | None = None) -> bool:
        """Wait until the door is not crowded, `longest` seconds at most, or `stop`; returns
        whether it is crowded still."""
        if not self.crowded:
            return False
        stop = stop or asyncio.Event()
        started = time.monotonic()
        deadline = started + self._longest
        # Polled: the end of a crowd is a lull, which no request signals.
        while self.crowded and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(self._quiet, left))
        self.waited += time.monotonic() - started
        return self.crowded


class DoorFirstSlots:
    """Pardot's slots, taken only once the door is not crowded (or `longest` has passed):
    the batches already in hand give way too, call by call, not only the next batch."""

    def __init__(self, inner: PardotSlots, traffic: DoorTraffic) -> None:
        self._inner = inner
        self._traffic = traffic

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._traffic.give_way()
        async with self._inner.slot():
            yield
