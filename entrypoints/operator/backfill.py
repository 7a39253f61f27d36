"""The backfill of `sync FILE`: numbered events in, through the sync service, counted out.

In: a batch of numbered events at a time (decoded JSON values, or why a line could not be
read) and the stores and sync service of the running configuration. Out: the tally of what
became of them (delivered, unchanged, skipped, rejected, given up), the delivery history of
each event, and for a file a checkpoint, so a run stopped by Pardot's daily limit resumes
where it stopped. Events go through the same SyncService, Pardot repository and store as the
running service, not through the queue, so a file run twice is delivered twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from domain.errors import InvalidEvent
from domain.events import IdentifyEvent, parse_event
from domain.ports import DeliveryHistory, EventQueue, HistoryEntry, Settlement
from domain.settlement import RetryPolicy, settle
from domain.sync import Delivered, Outcome, Rejected, RetryLater, Skipped, SyncService
from entrypoints.history import entry

TRIES = 3  # in-process tries of a retryable failure before the event is given up on
MAX_WAIT = 30.0
MAX_REASONS = 1000  # distinct reasons kept for the summary: memory stays bounded


class Numbered(Protocol):
    """One event of the input: its place, and its decoded value or why it has none."""

    @property
    def number(self) -> int: ...  # 1-based position of the event in the input

    @property
    def line(self) -> int: ...  # the line it starts on

    @property
    def value(self) -> Any: ...

    @property
    def problem(self) -> str | None: ...


@dataclass
class Tally:
    read: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    calls: int | None = None
    skipped_before: int = 0  # events a resumed run did not send again
    stopped: str = ""  # why it stopped early
    resume_at: datetime | None = None
    last: Numbered | None = None  # the last event handled

    def count(self, kind: str, reason: str = "") -> None:
        self.counts[kind] += 1
        if reason and kind in ("rejected", "given up"):
            key = reason if len(self.reasons) < MAX_REASONS or reason in self.reasons else "other"
            self.reasons[key if key.startswith(kind) else f"{kind}: {key}"] += 1


def arrived(value: Any, now: str) -> Any:
    """A backfilled event keeps the receivedAt Segment stored it with; else it arrives now."""
    if isinstance(value, dict) and not value.get("receivedAt"):
        return {**value, "receivedAt": now}
    return value


@dataclass(frozen=True)
class BackfillSources:
    """What a backfill works with. The sync service is asked for only once the daily limit
    is known not to stop the run: building it may need Pardot (the API version)."""

    history: DeliveryHistory
    queue: EventQueue
    service: Callable[[], Awaitable[SyncService]]
    retry_initial_seconds: float | None = None


class Backfill:
    """Runs one file's events through the sync service and counts what became of them."""

    def __init__(self, sources: BackfillSources, tally: Tally, checkpoint: str | None) -> None:
        self._sources = sources
        self._tally = tally
        self._checkpoint = checkpoint
        self._service: SyncService | None = None
        self._history: DeliveryHistory | None = None
        self._policy = RetryPolicy(max_attempts=TRIES)
        self._wait = sources.retry_initial_seconds

    async def start(self) -> int:
        """Prepare; returns how many events an earlier run already did (0 when none)."""
        self._history = self._sources.history
        paused = await self._sources.queue.paused_until()
        if paused is not None and paused > datetime.now(UTC):
            self._tally.stopped = "daily limit"
            self._tally.resume_at = paused
            return -1
        self._service = await self._sources.service()
        await self._service.prepare()
        if self._checkpoint is None:
            return 0
        noted = await self._history.noted(self._checkpoint)
        return int(noted["done"]) if noted else 0

    async def run(self, batch: Sequence[Numbered]) -> bool:
        """Deliver one batch; False when the daily limit stopped it."""
        assert self._service is not None and self._history is not None
        now = datetime.now(UTC)
        events: list[IdentifyEvent] = []
        items: list[Numbered] = []
        rows: list[HistoryEntry] = []
        for item in batch:
            if item.problem is not None:
                self._tally.count("rejected", f"line {item.line}: {item.problem}")
                continue
            try:
                events.append(parse_event(arrived(item.value, now.isoformat())))
                items.append(item)
            except InvalidEvent as exc:
                reason = f"rejected: invalid event: {exc}"
                self._tally.count("rejected", reason)
                payload = item.value if isinstance(item.value, dict) else {}
                rows.append(entry(Settlement("rejected", reason), now, payload=payload,
                                  source="sync"))  # fmt: skip
        outcomes = await self._deliver(events)
        stopped_at: Numbered | None = None
        for item, event, outcome in zip(items, events, outcomes, strict=True):
            if isinstance(outcome, RetryLater) and outcome.resume_at is not None:
                stopped_at = stopped_at or item
                self._tally.resume_at = outcome.resume_at
                continue
            settlement = settle(outcome, TRIES, self._policy, now)
            if event.type == "identify":  # a track in an archive is nobody's history
                rows.append(entry(settlement, now, event=event, source="sync"))
            self._count(outcome)
        await self._history.record(rows)
        if stopped_at is not None:
            self._tally.stopped = "daily limit"
            await self._stop_for_the_day(stopped_at.number - 1)
            return False
        self._tally.last = batch[-1]
        return True

    def _count(self, outcome: Outcome) -> None:
        if isinstance(outcome, Delivered):
            self._tally.count("unchanged" if outcome.unchanged else "delivered")
        elif isinstance(outcome, Skipped):
            self._tally.count("skipped")
        elif isinstance(outcome, Rejected):
            self._tally.count("rejected", outcome.reason)
        else:
            self._tally.count("given up", outcome.reason)

    async def _deliver(self, events: list[IdentifyEvent]) -> list[Outcome]:
        """Sync, trying retryable failures again a few times; the daily limit ends the tries."""
        assert self._service is not None
        final: list[Outcome | None] = [None] * len(events)
        waiting = list(range(len(events)))
        for attempt in range(1, TRIES + 1):
            outcomes = await self._service.sync([events[i] for i in waiting])
            again: list[int] = []
            limited = False
            delays: list[float] = []
            for index, outcome in zip(waiting, outcomes, strict=True):
                final[index] = outcome
                if isinstance(outcome, RetryLater):
                    limited = limited or outcome.resume_at is not None
                    again.append(index)
                    delays.append(outcome.delay or 0.0)
            if limited or not again or attempt == TRIES:
                break
            backoff = self._policy.backoff_initial if self._wait is None else self._wait
            await asyncio.sleep(min(MAX_WAIT, max([*delays, backoff * 2 ** (attempt - 1)])))
            waiting = again
        return [o if o is not None else RetryLater("not tried") for o in final]

    async def _stop_for_the_day(self, done: int) -> None:
        assert self._history is not None
        if self._checkpoint is not None:
            await self._history.note(
                self._checkpoint, {"done": done, "at": datetime.now(UTC).isoformat()}
            )
        if self._tally.resume_at is not None:
            # The same account's budget: the service's worker waits too.
            await self._sources.queue.pause_until(self._tally.resume_at)

    async def finish(self) -> None:
        if self._checkpoint is not None and self._history is not None and not self._tally.stopped:
            await self._history.note(self._checkpoint, None)
