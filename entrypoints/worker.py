"""The delivery loop: lease queued events, sync them to Pardot, settle every outcome.

Waiting is stored, never slept in memory: a retry is a `not_before` on the event and the
daily limit is a pause on the queue, so both survive a restart. An idle worker polls every
`idle_seconds`, and a `Wakeup` (entrypoints/wakeup.py) ends that wait as soon as events are
stored, so an idle service delivers without waiting for the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog

from domain.errors import ConfigurationError, InvalidEvent
from domain.events import IdentifyEvent, parse_event
from domain.ports import DeliveryHistory, EventQueue, QueuedEvent, Settlement
from domain.settlement import DEFAULT_BACKOFF_MAX, RetryPolicy, settle
from domain.sync import Delivered, Outcome, RetryLater, SyncService
from domain.sync.import_lane import ImportLane
from entrypoints.bulk_leases import BulkLeases
from entrypoints.door_traffic import CROWDED_BATCH, DoorTraffic
from entrypoints.faults import blameless, store_fault
from entrypoints.history import entry, outcome_of
from entrypoints.lease_hold import LeaseHold, holding
from entrypoints.metrics import Metrics
from entrypoints.poison import blaming_poison, surroundings_failed
from entrypoints.readiness import Readiness
from entrypoints.rounds import Rounds
from entrypoints.wakeup import Wakeup

log = structlog.get_logger(__name__)

HEARTBEAT_MAX_SECONDS = 3.0  # a lease is renewed at least this often while a batch is worked
# Rounds that fail in a row (the queue unreadable, say) before the loop gives up and lets
# its supervisor restart it; the waits between them double from `idle_seconds`.
FAILED_ROUNDS_BEFORE_RESTART = 4
FAILED_ROUND_WAIT_MAX = 10.0
# Rounds the store fails (unreachable, disk full) are not counted: a restart would not bring
# the store back, and a process that exits for it would not be there when it comes back. The
# loop looks again at least this often, so it delivers within seconds of the store's return.
STORE_DOWN_WAIT_MAX = 2.0
_PARDOT_CODE = re.compile(r"Pardot error (\d+)")

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class WorkerOptions:
    batch_size: int = 500
    # How long a lease lasts after its last renewal: a dead worker's events wait this long.
    lease_seconds: float = 10.0
    # The longest a Pardot call may take (PARDOT_CALL_TIMEOUT_SECONDS): a batch starts a call
    # only while its lease is sure to outlive it (entrypoints/lease_hold.py).
    call_seconds: float = 5.0
    idle_seconds: float = 0.25
    # Batches worked at once: one leased and resolved while another waits on Pardot.
    batches_in_flight: int = 3
    max_attempts: int = 12
    backoff_initial: float = 5.0
    backoff_max: float = DEFAULT_BACKOFF_MAX
    # While the setup is wrong (revoked token, wrong business unit) nothing can succeed:
    # look again this often, without spending the events' retry budget.
    configuration_retry: float = 30.0
    # Finished events are kept this long (the messageId de-duplication window), then purged.
    retention: timedelta = timedelta(days=7)
    purge_every: timedelta = timedelta(hours=1)

    @property
    def heartbeat_seconds(self) -> float:
        """Renew a lease four times per lifetime, and at least every three seconds."""
        return min(HEARTBEAT_MAX_SECONDS, self.lease_seconds / 4)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_initial, self.backoff_max)


class WorkerFailing(Exception):
    """The delivery loop failed round after round: its supervisor should restart it."""


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
        history: DeliveryHistory | None = None,
        wakeup: Wakeup | None = None,
        door: DoorTraffic | None = None,
        withdraw: Callable[[list[QueuedEvent]], Awaitable[set[int]]] | None = None,
        imports: Callable[[], Awaitable[ImportLane | None]] | None = None,
    ) -> None:
        """`withdraw` takes forgotten people's events out of a leased batch (issue 25,
        entrypoints/suppression.py) and returns their ids: they are neither synced nor
        settled nor recorded."""
        self._withdraw = withdraw
        self._history = history
        # Without a door in this process (`worker`), nothing to give way to.
        self._door = door or DoorTraffic()
        # Without one (a worker nothing can notify), the idle wait is the poll alone.
        self._wakeup = wakeup or Wakeup()
        self._queue = queue
        # The bulk lane: leases an import's worth of events at once while that many are due.
        self._imports = imports
        self._bulk = BulkLeases(queue)
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
        """Deliver until `stop` is set; the batches in hand are finished first.

        Up to `batches_in_flight` batches are worked at once: while one waits on Pardot the
        next is leased and resolved, so Pardot's slots stay busy whenever work waits. The
        queue never leases one person's events to two batches, so each person's events stay
        in order; the shared `PardotSlots` still bound the calls in flight.

        Every step of a round, the idle wait included, is guarded: a failing round is logged
        and tried again after a growing wait, and only after several in a row does `run`
        raise WorkerFailing, for its supervisor to restart it. Rounds the store fails are
        waited out instead, however many (STORE_DOWN_WAIT_MAX).
        """
        rounds = Rounds(self._options.batches_in_flight, self._wakeup)
        try:
            await self._conduct(stop, rounds)
        except BaseException:
            await rounds.cancel()
            await self._close_service()
            raise
        await rounds.drain()
        await self._close_service()

    async def _close_service(self) -> None:
        """The sync service's work beside the batches ends with the worker, before the store
        closes under it."""
        try:
            await (await self._sync_service()).close()
        except Exception as error:  # a service that cannot be made has nothing running
            log.debug("no sync service to close", error=type(error).__name__)

    async def _conduct(self, stop: asyncio.Event, rounds: Rounds) -> None:
        failed = 0  # rounds failed in a row
        unexplained = 0  # of those, the ones the store does not explain: a restart may mend them
        while not stop.is_set():
            self._readiness.beat()
            # Before the look for events: one stored after it wakes the idle wait below.
            self._wakeup.arm()
            wakeable = False
            try:
                rounds.raise_failure()
                await self.purge_if_due()
                await self.check_setup_if_due()
                await rounds.room()
                taken_at = time.monotonic()  # the lease's life starts no earlier than this
                limit = self._options.batch_size
                if await self._door.give_way(stop):
                    # Requests still crowd the door: one small batch at a time meanwhile.
                    await rounds.finished()
                    limit = min(limit, CROWDED_BATCH)
                elif self._setup_ok and self._imports is not None:
                    # Built with the sync service, which a failing setup keeps from being.
                    limit = await self._bulk.limit(await self._imports()) or limit
                leased = await self._lease(limit)
                if leased:
                    rounds.start(self._work(leased, taken_at))
                wait, wakeable = (0.0, False) if leased else await self._idle_wait()
            except Exception as error:
                failed += 1
                store_down = blameless(error)
                unexplained += 0 if store_down else 1
                log.error("delivery round failed", error=type(error).__name__, failed=failed)
                log.debug("delivery round failed", exc_info=error)
                fault = store_fault(error) or f"delivery rounds fail: {type(error).__name__}"
                self._readiness.worker_failing(fault)
                if unexplained >= FAILED_ROUNDS_BEFORE_RESTART:
                    raise WorkerFailing(f"{failed} delivery rounds failed in a row") from error
                longest = STORE_DOWN_WAIT_MAX if store_down else FAILED_ROUND_WAIT_MAX
                wait = min(longest, self._options.idle_seconds * 2 ** min(failed, 30))
            else:
                if failed:
                    self._readiness.worker_failing("")
                failed = unexplained = 0
            if wait > 0 and wakeable:
                await self._wakeup.idle(stop, wait)
            elif wait > 0:
                # Paused (the daily limit) or failing: a put changes nothing, so only the
                # time ends this wait, and a burst of puts cannot spin the loop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)

    async def purge_if_due(self) -> int:
        """Forget events finished longer ago than the retention, at most once per interval."""
        now = self._clock()
        if self._purged_at is not None and now - self._purged_at < self._options.purge_every:
            return 0
        self._purged_at = now
        purged = await self._queue.purge(now - self._options.retention)
        if purged:
            log.info(
                "purged finished events", events=purged, older_than=str(self._options.retention)
            )
        if self._history is not None:
            # The history holds emails and values too: the same retention bounds it, traffic
            # or not (its own purge goes only with new entries).
            entries = await self._history.purge(now - self._options.retention)
            if entries:
                log.info("purged the delivery history", entries=entries)
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
            log.error("deliveries paused, the setup needs an operator", problem=str(error))
            return False
        self._setup_ok = True
        if self._readiness.setup_problem == self._setup_problem:
            # Only lift what this check reported; a refused token is cleared by a delivery.
            self._readiness.clear()
        return True

    async def run_once(self) -> int:
        """One round: returns how many events were settled (0 when there was nothing due)."""
        taken_at = time.monotonic()
        leased = await self._lease(self._options.batch_size)
        return await self._work(leased, taken_at) if leased else 0

    async def _lease(self, limit: int) -> list[QueuedEvent]:
        """The next batch, or none while the queue is paused (the daily limit)."""
        paused = await self._queue.paused_until()
        if paused is not None and paused > self._clock():
            return []
        return await self._queue.lease(limit, self._options.lease_seconds)

    async def _work(self, leased: list[QueuedEvent], taken_at: float) -> int:
        """Deliver and settle one leased batch; returns how many settlements applied.

        `taken_at` is when the lease was asked for: its Pardot calls start only while the
        lease, renewed by the heartbeat, is sure to outlive them (entrypoints/lease_hold.py).
        """
        if self._withdraw is not None:
            withdrawn = await self._withdraw(leased)
            leased = [item for item in leased if item.id not in withdrawn]
            if not leased:
                return len(withdrawn)
        lease = leased[0].lease
        hold = LeaseHold(self._options.lease_seconds, self._options.call_seconds, taken_at)
        events: list[IdentifyEvent] = []
        usable: list[QueuedEvent] = []
        parsed: dict[int, IdentifyEvent] = {}
        settlements: dict[int, Settlement] = {}
        for item in leased:
            try:
                # The event's time is judged against when *we* stored it, not a receivedAt
                # its sender claimed.
                arrival = item.received_at.isoformat()
                payload = {**item.payload, "receivedAt": arrival}
                events.append(parse_event(payload, sender=item.scope))
                usable.append(item)
                parsed[item.id] = events[-1]
            except InvalidEvent as exc:
                settlements[item.id] = Settlement("dead", f"invalid event: {exc}")
        outcomes: dict[int, Outcome] = {}
        if usable:
            try:
                async with self._heartbeat(lease, hold):
                    with holding(hold):
                        found, outcomes = await self._deliver(usable, events)
                settlements |= found
            except asyncio.CancelledError:
                # Shutting down mid-batch: hand the leases back at once rather than leave the
                # events locked until their leases expire. A write already sent may be sent
                # again; the field times make that harmless.
                back = Settlement(
                    "retry", "released at shutdown", self._clock(), lease, spent=False
                )
                await asyncio.shield(
                    self._queue.settle(
                        {i: replace(s, lease=lease) for i, s in settlements.items()}
                        | {i.id: back for i in usable}
                    )
                )
                raise
        applied = await self._queue.settle(
            {i: replace(s, lease=lease) for i, s in settlements.items()}
        )
        if len(applied) < len(settlements):
            # Whatever this batch did, another worker now owns these events and will record
            # its own outcome: recording ours too would tell of a settlement that never was.
            log.warning(
                "lease lost: another worker took these events over",
                lost=len(settlements) - len(applied),
            )
            settlements = {i: s for i, s in settlements.items() if i in applied}
        for event_id, settlement in settlements.items():
            self._metrics.outcomes.labels(outcome_of(settlement)).inc()
            _log_settled(event_id, settlement, outcomes.get(event_id))
        await self._imports_settled(applied)
        await self._remember(leased, parsed, settlements)
        return len(settlements)  # those that applied

    async def _imports_settled(self, applied: set[int]) -> None:
        """Settled events leave the imports' ledger (a row left behind blocks nothing: its
        import is finished, or its event no longer waits)."""
        lane = await self._imports() if self._imports is not None else None
        if lane is None:
            return
        try:
            await lane.settled(applied)
        except Exception as error:
            log.warning("could not clear settled events from the import ledger", error=str(error))

    async def _remember(
        self,
        leased: list[QueuedEvent],
        parsed: dict[int, IdentifyEvent],
        settlements: dict[int, Settlement],
    ) -> None:
        """The delivery history (explain, the status page); losing it never loses an event."""
        if self._history is None:
            return
        now = self._clock()
        rows = [
            entry(settlements[i.id], now, event=parsed.get(i.id), payload=i.payload)
            for i in leased
            if i.id in settlements
        ]
        try:
            await self._history.record(rows)
        except Exception:
            log.exception("could not record the delivery history of %d events", len(rows))

    @contextlib.asynccontextmanager
    async def _heartbeat(self, lease: str, hold: LeaseHold) -> AsyncIterator[None]:
        """Renew `lease` every few seconds while the block runs, telling `hold` how it went."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self._options.heartbeat_seconds)
                self._readiness.beat()
                began = time.monotonic()
                try:
                    held = await self._queue.renew(lease, self._options.lease_seconds)
                except Exception as error:  # the next beat tries again; the lease has slack
                    # ... but no new Pardot call of this batch starts until one succeeds.
                    hold.renewal_failed()
                    log.warning("could not renew a lease", error=type(error).__name__)
                    continue
                if held == 0:
                    hold.lost()
                    log.warning("lease lost: its events were taken over by another worker")
                    return
                hold.renewed(began)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver(
        self, items: list[QueuedEvent], events: list[IdentifyEvent]
    ) -> tuple[dict[int, Settlement], dict[int, Outcome]]:
        try:
            service = await self._sync_service()
            outcomes = await blaming_poison(service, items, events)
        except ConfigurationError as error:
            self._setup_ok = False
            self._setup_checked_at = self._clock()
            self._setup_problem = str(error)
            self._readiness.fail(str(error))
            log.error("deliveries paused, the setup needs an operator", problem=str(error))
            # Nothing can succeed until the setup changes: this wait spends no attempt.
            later = self._clock() + timedelta(seconds=self._options.configuration_retry)
            waiting = {
                i.id: Settlement("retry", f"waiting: {error}", later, spent=False) for i in items
            }
            return waiting, {}
        except Exception as error:
            log.error("delivery failed; the batch will be retried", error=type(error).__name__)
            log.debug("delivery failed", exc_info=error)
            reason = f"retry: {type(error).__name__}: {error}"
            retry = RetryLater(reason, spent=not surroundings_failed(error))
            outcomes = {i.id: retry for i in items}
        else:
            self._readiness.clear()
        policy, now = self._options.retry_policy, self._clock()
        settlements: dict[int, Settlement] = {}
        for item in items:
            outcome = outcomes[item.id]
            if isinstance(outcome, Settlement):
                settlements[item.id] = outcome
                continue
            jitter = random.random()  # noqa: S311 - spreads retries, guards nothing
            settlements[item.id] = settle(outcome, item.attempts, policy, now, jitter=jitter)
        resume = [
            o.resume_at for o in outcomes.values() if isinstance(o, RetryLater) and o.resume_at
        ]
        if resume:
            await self._queue.pause_until(max(resume))
            log.warning("Pardot's daily API limit is spent", resume_at=max(resume).isoformat())
        return settlements, {i: o for i, o in outcomes.items() if not isinstance(o, Settlement)}

    async def _idle_wait(self) -> tuple[float, bool]:
        """How long to wait for the next round, and whether stored events may end it early."""
        paused = await self._queue.paused_until()
        if paused is not None:
            remaining = (paused - self._clock()).total_seconds()
            if remaining > 0:
                return min(remaining, 60.0), False
        return self._options.idle_seconds, True


def _log_settled(event_id: int, settlement: Settlement, outcome: Outcome | None) -> None:
    """INFO carries ids, outcomes and codes only: reasons name emails and trait values."""
    fields: dict[str, object] = {"event_id": event_id, "outcome": settlement.state}
    if isinstance(outcome, Delivered) and outcome.prospect_id is not None:
        fields["prospect_id"] = outcome.prospect_id
    code = _PARDOT_CODE.search(settlement.reason)
    if code is not None:
        fields["error_code"] = int(code.group(1))
    log.info("event settled", **fields)
    log.debug("event settled", event_id=event_id, reason=settlement.reason)
