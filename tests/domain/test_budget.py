"""The daily budget: days end at the account's midnight, and each priority keeps its share."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from adapters.memory.pardot_budget import InMemoryApiCallCounts
from domain.budget import BudgetUsage, DailyBudget, account_day, seconds_to_midnight
from domain.errors import InvalidSettings
from entrypoints.config import load_config

LA = ZoneInfo("America/Los_Angeles")


def test_the_day_is_the_accounts_day_not_utcs() -> None:
    late_evening_in_la = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)  # 23:30 on March 1st there
    assert account_day(late_evening_in_la, LA) == "2026-03-01"
    assert account_day(late_evening_in_la, UTC) == "2026-03-02"
    assert seconds_to_midnight(late_evening_in_la, LA) == 30 * 60


@pytest.mark.parametrize(
    ("used", "write", "read", "scan"),
    [(899, True, True, True), (900, True, True, False), (950, True, False, False),
     (999, True, False, False), (1000, False, False, False)],
)  # fmt: skip
def test_writes_may_spend_the_whole_day_reads_95_percent_scans_90(
    used: int, write: bool, read: bool, scan: bool
) -> None:
    usage = BudgetUsage("2026-03-01", used, 1000)
    assert (usage.allows("write"), usage.allows("read"), usage.allows("scan")) == (
        write,
        read,
        scan,
    )


async def test_calls_are_counted_against_the_day_they_were_made_in() -> None:
    now = datetime(2026, 3, 2, 7, 59, tzinfo=UTC)
    budget = DailyBudget(InMemoryApiCallCounts(), limit=10, zone=LA, clock=lambda: now)
    await budget.count_call("query")
    await budget.count_call("batchUpdate")
    assert await budget.used_and_limit() == (2, 10)
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # midnight in Los Angeles
    assert await budget.used_and_limit() == (0, 10)


def test_the_account_zone_must_be_an_iana_name() -> None:
    base = {"PARDOT_ACCOUNT_ID": "1", "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA"}
    assert load_config(**base, PARDOT_ACCOUNT_TIMEZONE="Europe/Paris").account_zone.key == (
        "Europe/Paris"
    )
    with pytest.raises(InvalidSettings, match="PARDOT_ACCOUNT_TIMEZONE"):
        load_config(**base, PARDOT_ACCOUNT_TIMEZONE="Mars/Olympus")
