"""When an export beats a paged scan (domain.bulk_cost), checked against what each one does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.bulk_cost import (
    FIRST_STATUS_WAIT,
    LONGEST_STATUS_WAIT,
    ExportPace,
    changes_export_pays,
    export_calls,
    export_pays,
    scan_calls,
    status_reads,
)

paces = st.builds(
    ExportPace,
    rows_per_second=st.floats(min_value=5.0, max_value=50_000.0),
    queue_delay=st.floats(min_value=0.0, max_value=3600.0),
    rows_per_file=st.integers(min_value=1_000, max_value=100_000),
)


def paged_scan(prospects: int) -> int:
    """Pages as the index's scan asks them: 200 a call, until a page comes back short."""
    calls, seen = 0, 0
    while True:
        calls += 1
        page = min(200, prospects - seen)
        seen += page
        if page < 200:
            return calls


@given(st.integers(min_value=0, max_value=5_000))
def test_scan_calls_count_the_pages_a_scan_asks_for(prospects: int) -> None:
    assert scan_calls(prospects) == paged_scan(prospects)


@given(st.floats(min_value=0.0, max_value=100_000.0))
def test_status_reads_back_off_until_the_job_is_seen_done(seconds: float) -> None:
    reads = status_reads(seconds)
    waits, wait = [FIRST_STATUS_WAIT], FIRST_STATUS_WAIT
    while len(waits) < reads:
        wait = min(wait * 2, LONGEST_STATUS_WAIT)
        waits.append(wait)
    assert sum(waits) >= seconds  # the last read comes after the job is done
    assert reads == 1 or sum(waits[:-1]) < seconds  # and not one read later than needed


@given(
    st.integers(min_value=0, max_value=2_000_000),
    st.integers(min_value=0, max_value=2_000_000),
    st.integers(min_value=1, max_value=10),
    paces,
)
def test_once_an_export_pays_by_a_margin_it_pays_for_every_larger_account(
    prospects: int, more: int, years: int, pace: ExportPace
) -> None:
    """At 5 rows a second or more, an export's calls grow slower than a scan's; the margin
    absorbs the steps (a new file, a new status read) each year's export may take."""
    margin = scan_calls(prospects) - export_calls(prospects, years, pace)
    if margin > 6 * years:
        assert export_pays(prospects + more, years, pace)


@given(st.integers(min_value=0, max_value=2_000_000), st.integers(min_value=1, max_value=10), paces)
def test_an_export_costs_a_create_a_read_per_year_and_a_download_per_file(
    prospects: int, years: int, pace: ExportPace
) -> None:
    files = sum(
        -(-(prospects // years + (1 if y < prospects % years else 0)) // pace.rows_per_file)
        for y in range(years)
    )
    assert export_calls(prospects, years, pace) >= 2 * years + files


def test_the_figures_of_issue_23() -> None:
    """A million prospects in one year at 5,000 rows a second after a 30 s queue: a create,
    seven status reads, a hundred files, against 5,001 pages; a small account spread over ten
    years scans cheaper."""
    pace = ExportPace(rows_per_second=5_000.0, queue_delay=30.0)
    assert export_calls(1_000_000, 1, pace) == 1 + 7 + 100
    assert scan_calls(1_000_000) == 5_001
    assert export_pays(1_000_000, 1, pace)
    assert not export_pays(2_000, 10, pace)


@given(st.integers(min_value=0, max_value=2_000_000), st.integers(0, 500_000), paces)
def test_a_refresh_by_export_pays_only_where_the_pages_it_saves_cost_more(
    changes: int, overlap: int, pace: ExportPace
) -> None:
    """The pages a refresh still needs for `changes` rows, 200 a call, against one export of
    those rows and the `overlap` its range adds, the page after its mark and the recycle bin
    read again: the export pays only where that is cheaper,
    and a wider overlap never makes it pay where a narrower one did not."""
    pays = changes_export_pays(changes, changes + overlap, pace)
    # Besides the export: the page after its mark, the recycle bin read again.
    assert pays == (export_calls(changes + overlap, 1, pace) + 2 < paged_scan(changes))
    if pays:
        assert changes_export_pays(changes, changes, pace)


def test_the_first_sync_refresh_of_issue_23() -> None:
    """80,000 updates read back: 400 pages, or one export at the fake's pace (5,000 rows/s
    after 30 s) of the 100,000 prospects changed within its range: 15 calls."""
    fake = ExportPace(rows_per_second=5_000, queue_delay=30)
    assert export_calls(100_000, 1, fake) == 15
    assert changes_export_pays(80_000, 100_000, fake)
    assert not changes_export_pays(1_000, 1_000, ExportPace(rows_per_second=1_000, queue_delay=60))
