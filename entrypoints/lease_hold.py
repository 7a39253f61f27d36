"""No Pardot call starts for a batch whose lease this worker may no longer hold.

A node cut off from the store cannot renew its leases; once they expire another node takes
the events and writes them to Pardot itself. Had the cut-off node gone on starting calls, both
would write the same people at once. So each batch's lease is a `LeaseHold` the heartbeat keeps
up to date, and every Pardot call of the batch first asks it (`before_pardot_call`, on the
`on_call` hook the repository calls right before it sends): the call starts only while the
lease is sure to outlive it, i.e. the last renewal plus the lease is more than the call's
timeout away. A renewal that failed stops every further call of the batch at once (LeaseLost);
one merely due is waited for, as long as the lease lasts.

So a call begun before a cut ends (answered or timed out) before another node may take the
lease, and a cut-off node begins none after it first fails to renew.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

_HELD: ContextVar[LeaseHold | None] = ContextVar("lease_hold", default=None)


class LeaseLost(Exception):
    """The batch's lease may be gone: its remaining Pardot calls must not start."""


class LeaseHold:
    """One batch's lease as its heartbeat last saw it; times are `time.monotonic()`."""

    def __init__(
        self,
        lease_seconds: float,
        call_seconds: float,
        taken_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lease = lease_seconds
        self._call = call_seconds
        self._clock = clock
        self._renewed_at = taken_at  # when the last successful renewal (or the lease) began
        self._failing = False
        self._lost = False
        self._changed = asyncio.Event()

    def renewed(self, began_at: float) -> None:
        """A renewal begun at `began_at` succeeded: the store extended the lease from then."""
        self._renewed_at = max(self._renewed_at, began_at)
        self._failing = False
        self._tell()

    def renewal_failed(self) -> None:
        """The store could not be asked: the lease may run out before another renewal works."""
        self._failing = True
        self._tell()

    def lost(self) -> None:
        """Another worker holds these events now."""
        self._lost = True
        self._tell()

    def _tell(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def before_call(self) -> None:
        """Return when a call may start now; raise LeaseLost when it must not start at all."""
        while True:
            if self._lost:
                raise LeaseLost("another worker took this batch's events over")
            if self._failing:
                raise LeaseLost("the lease could not be renewed: the store is out of reach")
            left = self._renewed_at + self._lease - self._clock()
            if left > self._call:
                return
            if left <= 0:
                raise LeaseLost("the lease ran out before it could be renewed")
            # The next renewal is due (or slow): wait for it, never past the lease's end.
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=left)


@contextlib.contextmanager
def holding(hold: LeaseHold) -> Iterator[None]:
    """The Pardot calls made in this context (this task and the tasks it starts) ask `hold`."""
    token = _HELD.set(hold)
    try:
        yield
    finally:
        _HELD.reset(token)


async def before_pardot_call() -> None:
    """Ask the lease of the batch being worked, if any (index refreshes outside one: none)."""
    hold = _HELD.get()
    if hold is not None:
        await hold.before_call()


def lease_checked(
    on_call: Callable[[str], Awaitable[None]],
) -> Callable[[str], Awaitable[None]]:
    """`on_call` (which counts the call in the daily budget) between two lease checks: the
    second is the last thing before the request is sent, so nothing slow (a store write)
    comes between it and the call; the first spares the budget a call that will not be made."""

    async def checked(operation: str) -> None:
        await before_pardot_call()
        await on_call(operation)
        await before_pardot_call()

    return checked
