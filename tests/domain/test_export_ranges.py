"""Issue 23: the `updated_at` ranges of the exports that fill the index (domain.index.export)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.index.export import RANGE_OVERLAP, export_ranges, status_waits

# Zones are at most 26 hours apart (UTC-12 to UTC+14): whatever zone Pardot reads a range's
# arguments in, the ranges must still meet and cover the oldest and newest change.
ZONE_SPREAD = timedelta(hours=26)
YEAR = timedelta(days=365)

moments = st.datetimes(min_value=datetime(2005, 1, 1), max_value=datetime(2030, 1, 1)).map(
    lambda moment: moment.replace(tzinfo=UTC)
)


@given(oldest=moments, newest=moments)
def test_ranges_cover_every_change_in_any_zone_each_within_a_year(
    oldest: datetime, newest: datetime
) -> None:
    ranges = export_ranges(oldest, newest)
    assert all(after < before and before - after < YEAR for after, before in ranges)
    assert ranges[0][0] <= oldest - ZONE_SPREAD
    assert ranges[-1][1] >= max(oldest, newest) + ZONE_SPREAD
    for (_, before), (after, _) in itertools.pairwise(ranges):
        assert before - after >= ZONE_SPREAD  # neighbours overlap, in any zone
    # One export a year, give or take the overlaps: never many more than the span needs.
    span = max(oldest, newest) - oldest + 2 * RANGE_OVERLAP
    assert len(ranges) <= span / (YEAR - 2 * RANGE_OVERLAP) + 1


def test_status_reads_back_off_from_the_first_wait_to_a_minute() -> None:
    waits = status_waits(5.0)
    assert [next(waits) for _ in range(7)] == [5, 10, 20, 40, 60, 60, 60]
    quick = status_waits(0.01)
    assert next(quick) == 0.01 and next(quick) == 0.02
