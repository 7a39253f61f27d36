"""Accepting requests comes before delivering them: the door counts the requests it is
answering, and `serve`'s delivery worker gives way while they crowd.

In `serve` the door and the worker share one interpreter; a worker running flat out (a
backlog, Pardot answering at once) took half of it from the door. The backlog is durable, so
delivery may lag seconds behind a burst, but the door may not. While the door is crowded
(`crowd` requests or more in flight: they wait on each other, not on us), the worker starts
no new batch for up to `longest` seconds; then it starts one anyway, so a door that never
goes quiet still sees its events delivered, at a trickle. A request or two in flight is not
a crowd: at ordinary traffic the worker keeps its full pace.
"""

from __future__ import annotations

import asyncio
import time

CROWD = 4
LONGEST_WAIT_SECONDS = 1.0


class DoorTraffic:
    def __init__(self, *, crowd: int = CROWD, longest: float = LONGEST_WAIT_SECONDS) -> None:
        self._crowd = crowd
        self._longest = longest
        self._in_flight = 0
        self._calm = asyncio.Event()
        self._calm.set()
        self.waited = 0.0  # seconds the worker gave way, for the benchmark and the note

    def entered(self) -> None:
        self._in_flight += 1
        if self._in_flight == self._crowd:
            self._calm.clear()

    def left(self) -> None:
        self._in_flight -= 1
        if self._in_flight == self._crowd - 1:
            self._calm.set()

    @property
    def crowded(self) -> bool:
        return self._in_flight >= self._crowd

    async def give_way(self, stop: asyncio.Event) -> None:
        """Return once the door is not crowded, `longest` seconds at most, or at `stop`."""
        if not self.crowded:
            return
        started = time.monotonic()
        waits = [asyncio.ensure_future(self._calm.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self._longest, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        self.waited += time.monotonic() - started
