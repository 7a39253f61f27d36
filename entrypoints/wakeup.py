"""Waking the idle delivery worker when events are stored, instead of waiting for its poll.

In: `notify()` from whatever stored events (the door's put in `serve`, a PostgreSQL
notification for a separate worker). Out: `idle(stop, seconds)`, the worker's idle wait, which
ends early on a notification. The poll stays the upper bound: a wake that is lost (or events
stored by a process that cannot notify, such as a CLI replay) waits for the next poll at most.
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    def __init__(self) -> None:
        self._stored = asyncio.Event()

    def notify(self) -> None:
        """Events were stored: the worker should look now."""
        self._stored.set()

    def arm(self) -> None:
        """Called before the worker looks for events: a store after this wakes its next idle
        wait; one before it is seen by the look itself."""
        self._stored.clear()

    async def idle(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait up to `seconds`, less when `stop` is set or events are stored meanwhile."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._stored.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            for waiting in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
