"""Pardot's daily call budget, spent by priority.

Pardot allows 25,000 to 100,000 calls per business unit per day, the day ending at the
account's midnight (PARDOT_API.md, Limits). Every call is counted in the store, so all
processes see one total. When the day runs short, live writes come first, then the reads and
refreshes they need, then scans: scans and optional refreshes never use the last 10% of the
day, needed reads not the last 5%, so the writes that deliver events keep a reserve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from domain.ports import ApiCallCounts

DEFAULT_DAILY_LIMIT = 25_000  # Growth edition, the smallest

# What a kind of call may spend of the day, as a share of the limit.
Priority = Literal["write", "read", "scan"]
SHARES: dict[Priority, float] = {"write": 1.0, "read": 0.95, "scan": 0.90}


@dataclass(frozen=True)
class BudgetUsage:
    day: str
    used: int
    limit: int

    def allows(self, priority: Priority, calls: int = 1) -> bool:
        return self.used + calls <= int(self.limit * SHARES[priority])


def account_day(now: datetime, zone: tzinfo) -> str:
    """The account's calendar day at `now`, as an ISO date."""
    return now.astimezone(zone).date().isoformat()


def seconds_to_midnight(now: datetime, zone: tzinfo) -> float:
    """Seconds until the account's next midnight, when the budget resets."""
    local = now.astimezone(zone)
    tomorrow = local.date() + timedelta(days=1)
    midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone)
    return max(1.0, (midnight - local).total_seconds())


class AccountDayCounter:
    """A count per account day in the store (`ApiCallCounts`), `limit` of them a day; every
    process sharing the store sees one total."""

    default_limit = DEFAULT_DAILY_LIMIT

    def __init__(
        self,
        counts: ApiCallCounts,
        *,
        limit: int | None = None,
        zone: tzinfo = UTC,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._counts = counts
        self.limit = self.default_limit if limit is None else limit
        self.zone = zone
        self._clock = clock

    def today(self) -> str:
        return account_day(self._clock(), self.zone)


class DailyBudget(AccountDayCounter):
    """Counts calls per account day and says what each priority may still spend."""

    async def count(self, calls: int = 1) -> None:
        await self._counts.add(self.today(), calls)

    async def count_call(self, operation: str) -> None:
        """The repository's hook: every request sent to Pardot counts, retries included."""
        await self.count()

    async def used_and_limit(self) -> tuple[int, int]:
        usage = await self.usage()
        return usage.used, usage.limit

    async def usage(self) -> BudgetUsage:
        day = self.today()
        return BudgetUsage(day, await self._counts.used(day), self.limit)

    async def allows(self, priority: Priority, calls: int = 1) -> bool:
        return (await self.usage()).allows(priority, calls)

    def seconds_to_reset(self) -> float:
        return seconds_to_midnight(self._clock(), self.zone)
