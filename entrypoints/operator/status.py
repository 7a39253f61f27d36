"""The status figures: what `status`, `status --json`, `/status` and `/status.json` show.

In: `StatusSources`, the store the service shares (queue, delivery history), plus what only
the running service knows (readiness, its token's state) or what another part keeps (the
daily API budget, the prospect index, the Pardot slots' busy time every deliverer records:
optional sources). Out: a `StatusReport` of plain dataclasses; `as_dict()` is the JSON both
doors print, so the command and the page never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from domain.errors import ConfigurationError
from domain.ports import DeliveryHistory, EventQueue
from domain.sync.import_lane import ImportLane
from entrypoints.operator.fields import FRESH_ENOUGH, FieldsReport, RepositoryProvider, check
from entrypoints.readiness import Readiness

CHART_MINUTES = 60
RATE_MINUTES = 10  # "deliveries per minute" is the mean over this many recent minutes
LATEST_DEAD = 10
REFRESH_WINDOW = timedelta(minutes=1)  # "index refreshes in the last minute"
WAITING = ("pending", "retry", "leased")
# Outcomes as the chart groups them.
SERIES = {
    "delivered": ("delivered", "unchanged"),
    "rejected": ("rejected", "dead"),
    "retries": ("retry",),
}


class BudgetUsage(Protocol):
    used: int
    limit: int


class Budget(Protocol):
    """The daily API budget (issue 11's DailyBudget has this shape)."""

    async def usage(self) -> BudgetUsage: ...

    def seconds_to_reset(self) -> float: ...


class IndexState(Protocol):
    complete: bool
    high_water: str | None
    watermark_began: datetime | None
    recent_refreshes: tuple[datetime, ...]


class Index(Protocol):
    """The prospect index (domain.ports.ProspectIndex has this shape)."""

    async def state(self) -> IndexState: ...

    async def count(self) -> int: ...

    async def clock(self) -> datetime: ...


class SlotUse(Protocol):
    """Busy Pardot slot time over the last minute (entrypoints.slot_use.StoredSlotUse)."""

    limit: int

    async def ratio(self) -> float: ...


@dataclass(frozen=True)
class IndexAge:
    """How fresh the index is, on the store's clock (the one refresh starts are read from)."""

    seconds: float | None  # now minus the start of the refresh behind the watermark
    refreshes_last_minute: int  # by every process sharing the store


async def read_index_age(index: Index) -> IndexAge:
    return index_age(await index.state(), await index.clock())


def index_age(state: IndexState, now: datetime) -> IndexAge:
    """The index's age at `now` (the store's clock); None while the index is incomplete or has
    no watermark yet, since no decision is made from it then."""
    recent = sum(1 for began in state.recent_refreshes if now - began <= REFRESH_WINDOW)
    if not state.complete or state.watermark_began is None:
        return IndexAge(None, recent)
    return IndexAge(max((now - state.watermark_began).total_seconds(), 0.0), recent)


@dataclass
class StatusSources:
    queue: EventQueue
    history: DeliveryHistory
    readiness: Readiness | None = None  # only the running service knows
    token_state: Callable[[], Awaitable[dict[str, Any]]] | None = None
    budget: Budget | None = None
    index: Index | None = None
    slot_use: SlotUse | None = None
    # Asked for the account's fields when the stored list is too old; None: never ask.
    repository: RepositoryProvider | None = None
    fields_max_age: timedelta = FRESH_ENOUGH
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Only the running service follows imports; asked for lazily, as the lane needs Pardot's
    # repository, which missing credentials keep from being built.
    imports: Callable[[], Awaitable[ImportLane | None]] | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    message_id: str | None
    attempts: int
    reason: str
    last_try: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "messageId": self.message_id,
            "attempts": self.attempts,
            "reason": self.reason,
            "last_try": self.last_try.isoformat() if self.last_try else None,
        }


@dataclass(frozen=True)
class ApiBudget:
    used: int
    limit: int
    resets_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"used": self.used, "limit": self.limit, "resets_at": self.resets_at.isoformat()}


@dataclass(frozen=True)
class IndexFigures:
    prospects: int
    complete: bool
    fresh_to: str | None  # the newest change the index holds
    age: IndexAge

    def as_dict(self) -> dict[str, Any]:
        seconds = self.age.seconds
        return {
            "prospects": self.prospects,
            "complete": self.complete,
            "fresh_to": self.fresh_to,
            "age_seconds": None if seconds is None else round(seconds, 1),
            "refreshes_last_minute": self.age.refreshes_last_minute,
        }


@dataclass(frozen=True)
class StatusReport:
    generated_at: datetime
    ready: bool | None  # None: not the running service, so not known
    unready_reason: str
    queue: dict[str, int]  # events per state
    oldest_pending_seconds: float | None
    # Busy slot-seconds / (slots x wall seconds) over the last minute, every deliverer on the
    # store (entrypoints.slot_use.StoredSlotUse): low with a backlog waiting means the backlog
    # waits on us, near 1 on Pardot.
    pardot_slots_busy_ratio: float | None
    pardot_slots: int | None
    paused_until: datetime | None  # only while the pause lasts
    deliveries_per_minute: float
    chart: dict[str, list[int]]  # "minutes" (seconds since the epoch), then one per SERIES
    latest_dead: list[DeadLetter]
    api_budget: ApiBudget | None
    token: dict[str, Any]
    index: IndexFigures | None
    fields: FieldsReport
    imports: list[dict[str, Any]] = field(default_factory=list)  # in progress, this process

    @property
    def depth(self) -> int:
        return sum(self.queue.get(state, 0) for state in WAITING)

    @property
    def dead_count(self) -> int:
        return self.queue.get("dead", 0)

    def as_dict(self) -> dict[str, Any]:
        """The figures as `/status.json` and `status --json` give them."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "ready": self.ready,
            "unready_reason": self.unready_reason,
            "queue": self.queue,
            "depth": self.depth,
            "oldest_pending_seconds": self.oldest_pending_seconds,
            "pardot_slots_busy_ratio": self.pardot_slots_busy_ratio,
            "pardot_slots": self.pardot_slots,
            "paused_until": self.paused_until.isoformat() if self.paused_until else None,
            "deliveries_per_minute": self.deliveries_per_minute,
            "chart": self.chart,
            "dead_letters": {
                "count": self.dead_count,
                "latest": [dead.as_dict() for dead in self.latest_dead],
            },
            "api_budget": self.api_budget.as_dict() if self.api_budget else None,
            "token": self.token,
            "index": self.index.as_dict() if self.index else None,
            "fields": self.fields.as_dict() | {"warning": self.fields.warning},
            "imports": self.imports,
        }


async def build_report(sources: StatusSources) -> StatusReport:
    now = sources.clock()
    counts = await sources.queue.counts()
    oldest = await sources.queue.oldest_pending()
    paused = await sources.queue.paused_until()
    start = (now - timedelta(minutes=CHART_MINUTES - 1)).replace(second=0, microsecond=0)
    minutes = await sources.history.per_minute(start)
    chart = _chart(minutes, start)
    recent = chart["delivered"][-RATE_MINUTES:]
    fields = await check(
        sources.history, sources.repository, now=now, max_age=sources.fields_max_age
    )
    dead = await sources.queue.recent("dead", LATEST_DEAD)
    readiness = sources.readiness
    return StatusReport(
        generated_at=now,
        ready=None if readiness is None else readiness.ready,
        unready_reason="" if readiness is None else readiness.reason,
        queue=counts,
        oldest_pending_seconds=None if oldest is None else (now - oldest).total_seconds(),
        pardot_slots_busy_ratio=await _slots_busy(sources.slot_use),
        pardot_slots=None if sources.slot_use is None else sources.slot_use.limit,
        paused_until=None if paused is None or paused <= now else paused,
        deliveries_per_minute=round(sum(recent) / RATE_MINUTES, 1),
        chart=chart,
        latest_dead=[_dead(row) for row in dead],
        api_budget=await _budget(sources.budget, now),
        token=await sources.token_state() if sources.token_state else {"state": "unknown"},
        index=await _index(sources.index),
        fields=fields,
        imports=await _imports(sources.imports),
    )


async def _imports(
    provider: Callable[[], Awaitable[ImportLane | None]] | None,
) -> list[dict[str, Any]]:
    try:
        lane = await provider() if provider is not None else None
    except ConfigurationError:
        return []  # no credentials yet: no lane, no import
    if lane is None:
        return []
    now = time.monotonic()
    return [
        {
            "id": job.id,
            "rows": job.rows,
            "state": job.state,
            "age_seconds": round(now - job.started, 1),
            "overdue": now - job.started > lane.timeout,
        }
        for job in lane.running.values()
    ]


def _chart(minutes: dict[datetime, dict[str, int]], start: datetime) -> dict[str, list[int]]:
    """Per minute of the last hour (oldest first, gaps as zero), seconds since the epoch."""
    stamps = [start + timedelta(minutes=i) for i in range(CHART_MINUTES)]
    chart: dict[str, list[int]] = {"minutes": [int(s.timestamp()) for s in stamps]}
    for series, outcomes in SERIES.items():
        chart[series] = [sum(minutes.get(s, {}).get(o, 0) for o in outcomes) for s in stamps]
    return chart


def _dead(row: dict[str, Any]) -> DeadLetter:
    settled = row.get("settled_at")
    return DeadLetter(
        id=row["id"],
        message_id=row["messageId"],
        attempts=row["attempts"],
        reason=row["reason"],
        last_try=settled if isinstance(settled, datetime) else None,
    )


async def _budget(budget: Budget | None, now: datetime) -> ApiBudget | None:
    if budget is None:
        return None
    usage = await budget.usage()
    resets = now + timedelta(seconds=budget.seconds_to_reset())
    return ApiBudget(usage.used, usage.limit, resets)


async def _slots_busy(slot_use: SlotUse | None) -> float | None:
    return None if slot_use is None else round(await slot_use.ratio(), 3)


async def _index(index: Index | None) -> IndexFigures | None:
    if index is None:
        return None
    state = await index.state()
    age = index_age(state, await index.clock())
    return IndexFigures(await index.count(), state.complete, state.high_water, age)
