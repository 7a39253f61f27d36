"""The delivery loop: lease queued events, sync them to Pardot, settle every outcome.

Waiting is stored, never slept in memory: a retry is a `not_before` on the event and the
daily limit is a pause on the queue, so both survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain.errors import ConfigurationError, InvalidEvent
from domain.events import IdentifyEvent, parse_event
from domain.ports import EventQueue, QueuedEvent, Settlement
from domain.settlement import RetryPolicy, settle
from domain.sync import UNCHANGED, RetryLater, SyncService
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 500
    lease_seconds: float = 300.0
    idle_seconds: float = 0.25
    max_attempts: int = 12
    backoff_initial: float = 5.0
    backoff_max: float = 3600.0
    # While the setup is wrong (revoked token, wrong business unit) nothing can succeed:
    # look again this often, without spending the events' retry budget.
    configuration_retry: float = 30.0
    # Finished events are kept this long (the messageId de-duplication window), then purged.
    retention: timedelta = timedelta(days=7)
    purge_every: timedelta = timedelta(hours=1)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_initial, self.backoff_max)


class DeliveryWorker:
    def __init__(
        self,
        queue: EventQueue,
        sync_service: Callable[[], Awaitable[SyncService]],
        *,
        readiness: Readiness,
        metrics: Metrics,
        options: WorkerOptions | None = None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self._queue = queue
        self._sync_service = sync_service
        self._readiness = readiness
        self._metrics = metrics
        self._options = options or WorkerOptions()
        self._clock = clock
        self._purged_at: datetime | None = None
        self._setup_checked_at: datetime | None = None
        self._setup_ok = False
        self._setup_problem = ""

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; the batch in hand is finished first."""
        while not stop.is_set():
            try:
                await self.purge_if_due()
                await self.check_setup_if_due()
                settled = await self.run_once()
            except Exception:
                log.exception("delivery round failed; trying again")
                settled = 0
            if settled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=await self._idle_seconds())

    async def purge_if_due(self) -> int:
        """Forget events finished longer ago than the retention, at most once per interval."""
        now = self._clock()
        if self._purged_at is not None and now - self._purged_at < self._options.purge_every:
            return 0
        self._purged_at = now
        purged = await self._queue.purge(now - self._options.retention)
        if purged:
            log.info("purged %d events finished more than %s ago", purged, self._options.retention)
        return purged

    async def check_setup_if_due(self) -> bool:
        """Check the setup (the lookup field exists) at start, and again while it is wrong.

        A problem marks the service unready with one line saying what to change; fixing it in
        Pardot resumes deliveries without a restart.
        """
        now = self._clock()
        due = self._setup_checked_at is None or (
            now - self._setup_checked_at >= timedelta(seconds=self._options.configuration_retry)
        )
        if self._setup_ok or not due:
            return self._setup_ok
        self._setup_checked_at = now
        try:
            await (await self._sync_service()).prepare()
        except ConfigurationError as error:
            self._setup_problem = str(error)
            self._readiness.fail(str(error))
            log.error("deliveries paused, the setup needs an operator: %s", error)
            return False
        self._setup_ok = True
        if self._readiness.reason == self._setup_problem:
            # Only lift what this check reported; a refused token is cleared by a delivery.
            self._readiness.clear()
        return True

    async def run_once(self) -> int:
        """One round: returns how many events were settled (0 when there was nothing due)."""
        paused = await self._queue.paused_until()
        if paused is not None and paused > self._clock():
            return 0
        leased = await self._queue.lease(self._options.batch_size, self._options.lease_seconds)
        if not leased:
            return 0
        events: list[IdentifyEvent] = []
        usable: list[QueuedEvent] = []
        settlements: dict[int, Settlement] = {}
        for item in leased:
            try:
                # The event's time is judged against when *we* stored it, not a receivedAt
                # its sender claimed.
                arrival = item.received_at.isoformat()
                events.append(parse_event({**item.payload, "receivedAt": arrival}))
                usable.append(item)
            except InvalidEvent as exc:
                settlements[item.id] = Settlement("dead", f"invalid event: {exc}")
        if usable:
            try:
                settlements |= await self._deliver(usable, events)
            except asyncio.CancelledError:
                # Shutting down mid-batch: hand the leases back at once rather than leave the
                # events locked until their leases expire. A write already sent may be sent
                # again; the field times make that harmless.
                back = Settlement("retry", "released at shutdown", self._clock())
                await asyncio.shield(self._queue.settle(settlements | {i.id: back for i in usable}))
                raise
        await self._queue.settle(settlements)
        for event_id, settlement in settlements.items():
            self._metrics.outcomes.labels(_label(settlement)).inc()
            log.info("event %s %s: %s", event_id, settlement.state, settlement.reason)
        return len(settlements)

    async def _deliver(
        self, items: list[QueuedEvent], events: list[IdentifyEvent]
    ) -> dict[int, Settlement]:
        try:
            service = await self._sync_service()
            outcomes = await service.sync(events)
        except ConfigurationError as error:
            self._setup_ok = False
            self._setup_checked_at = self._clock()
            self._setup_problem = str(error)
            self._readiness.fail(str(error))
            log.error("deliveries paused, the setup needs an operator: %s", error)
            # Nothing can succeed until the setup changes: this wait spends no attempt.
            later = self._clock() + timedelta(seconds=self._options.configuration_retry)
            return {i.id: Settlement("retry", f"waiting: {error}", later) for i in items}
        except Exception as error:
            log.exception("delivery failed; the batch will be retried")
            outcomes = [RetryLater(f"retry: {type(error).__name__}: {error}")] * len(items)
        else:
            self._readiness.clear()
        policy, now = self._options.retry_policy, self._clock()
        settlements: dict[int, Settlement] = {}
        for item, outcome in zip(items, outcomes, strict=True):
            jitter = random.random()  # noqa: S311 - spreads retries, guards nothing
            settlements[item.id] = settle(outcome, item.attempts, policy, now, jitter=jitter)
        resume = [o.resume_at for o in outcomes if isinstance(o, RetryLater) and o.resume_at]
        if resume:
            await self._queue.pause_until(max(resume))
            log.warning("Pardot's daily API limit is spent: deliveries resume at %s", max(resume))
        return settlements

    async def _idle_seconds(self) -> float:
        paused = await self._queue.paused_until()
        if paused is not None:
            remaining = (paused - self._clock()).total_seconds()
            if remaining > 0:
                return min(remaining, 60.0)
        return self._options.idle_seconds


def _label(settlement: Settlement) -> str:
    """The outcome's metrics label: a delivery that wrote nothing has its own."""
    if settlement.state == "delivered" and settlement.reason == UNCHANGED:
        return UNCHANGED
    return settlement.state
