"""How busy Pardot's slots were: busy slot-seconds / (limit x wall seconds), over a minute.

In: every take and give-back of a slot in this process (`MeteredSlots` wraps the PardotSlots
the HTTP adapter holds during each call), and a clock. Out: `SlotUse.ratio()`, the share of
the last minute's slot time that held a call (1.0: all five busy all the time), for this
process's /metrics; `busy_seconds()` cumulative, for a benchmark's own interval.

`status` runs in a process of its own and the deliverers may be several (`serve`, `worker`s,
other nodes), so no one process's meter answers for the account: `SlotUseRecorder` adds each
deliverer's busy slot-seconds to the store's `SlotBusyLog` every few seconds, and
`StoredSlotUse` reads the last minute's 10-second buckets back for `status` and `/status`
(both the same figure). The log, not the slots' own lock files or rows: those know
who holds a slot now, not for how long over the last minute, and PostgreSQL's advisory locks
would need a table of their own anyway.

Issue 22: a backlog that waits while the ratio is low waits on us (one batch at a time); one
that waits at a ratio near 1 waits on Pardot. Counted where slots are held, so the time spent
waiting for a free slot is not busy time, and a call in flight counts up to now.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from domain.ports import SLOT_BUCKET_SECONDS, PardotSlots, SlotBusyLog

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
RECORD_EVERY_SECONDS = 2.0  # how stale the store's figure may be, beyond its 10 s buckets


class SlotUse:
    """Busy slot time of one process; `clock` is monotonic seconds (time.monotonic)."""

    def __init__(
        self,
        limit: int,
        *,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("at least one slot is needed")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._started = clock()
        self._ended: deque[tuple[float, float]] = deque()  # calls that ended within the window
        self._in_flight: dict[int, float] = {}  # call number → when it took its slot
        self._numbers = itertools.count()
        self._ended_total = 0.0  # busy seconds of every call that ended, ever

    def took(self) -> int:
        """A slot was taken now; returns the call's number for `gave_back`."""
        number = next(self._numbers)
        self._in_flight[number] = self._clock()
        return number

    def gave_back(self, number: int) -> None:
        began = self._in_flight.pop(number)
        now = self._clock()
        self._ended.append((began, now))
        self._ended_total += now - began
        self._forget_before(now - self.window)

    def busy_seconds(self) -> float:
        """Busy slot-seconds since this meter began, calls in flight counted up to now."""
        now = self._clock()
        return self._ended_total + sum(now - began for began in self._in_flight.values())

    def ratio(self) -> float:
        """Busy slot-seconds / (limit x wall seconds) over the last `window` seconds (over
        the meter's life while it is younger than that)."""
        now = self._clock()
        start = max(now - self.window, self._started)
        wall = now - start
        if wall <= 0:
            return 0.0
        self._forget_before(start)
        spans = itertools.chain(self._ended, ((b, now) for b in self._in_flight.values()))
        busy = sum(max(0.0, end - max(began, start)) for began, end in spans)
        return busy / (self.limit * wall)

    def _forget_before(self, start: float) -> None:
        while self._ended and self._ended[0][1] <= start:
            self._ended.popleft()


class MeteredSlots:
    """A PardotSlots that tells `use` when each of its slots is taken and given back."""

    def __init__(self, inner: PardotSlots, use: SlotUse) -> None:
        self._inner = inner
        self.use = use

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._inner.slot():
            number = self.use.took()
            try:
                yield
            finally:
                self.use.gave_back(number)


class SlotUseRecorder:
    """Adds this process's busy slot-seconds to the store's log, every few seconds while
    `running`; `wall` is Unix seconds (time.time), which every process shares."""

    def __init__(
        self,
        use: SlotUse,
        busy_log: SlotBusyLog,
        *,
        every: float = RECORD_EVERY_SECONDS,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._use = use
        self._log = busy_log
        self._every = every
        self._wall = wall
        self._recorded = use.busy_seconds()

    async def record(self) -> None:
        """Add what was busy since the last record to the current bucket."""
        busy = self._use.busy_seconds()
        if busy <= self._recorded:
            return
        bucket = int(self._wall()) // SLOT_BUCKET_SECONDS * SLOT_BUCKET_SECONDS
        await self._log.add(bucket, busy - self._recorded)
        self._recorded = busy

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._record_quietly()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self._record_quietly()

    async def _record_quietly(self) -> None:
        try:
            await self.record()
        except Exception:  # a figure for operators must never stop deliveries
            log.warning("could not record Pardot slot use in the store", exc_info=True)


class StoredSlotUse:
    """The ratio over the last minute from the store's log: what every process on the store
    kept busy, over `limit` slots.

    The minute is the 10-second buckets that began in the last `window` seconds plus the one
    under way, with the wall time they span so far: a partial bucket counts only the time it
    has had (at most `RECORD_EVERY_SECONDS` of it not yet recorded).
    """

    def __init__(
        self,
        busy_log: SlotBusyLog,
        limit: int,
        *,
        window: int = int(WINDOW_SECONDS),
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._log = busy_log
        self.limit = limit
        self._window = window
        self._wall = wall

    async def ratio(self) -> float:
        now = self._wall()
        start = int(now) // SLOT_BUCKET_SECONDS * SLOT_BUCKET_SECONDS - self._window
        busy = await self._log.busy(start, start + self._window + SLOT_BUCKET_SECONDS)
        return busy / (self.limit * (now - start))
