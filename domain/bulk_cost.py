"""When an export beats a paged scan: the calls each costs, for an account of N prospects.

A paged scan asks for 200 prospects a call and stops at the first short page (PARDOT_API.md,
"Pulling many prospects"), so it costs N // 200 + 1 calls. An export covers at most a year of
`updated_at`, so filling takes one export per year back to the oldest prospect, run one after
another; each costs its create, its status reads (backing off from 5 s to at most 60 s while
Pardot works: the queue delay plus the rows at its rate) and one download per result file.
Pure arithmetic, so the sync can decide before spending a call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from domain.ports import QUERY_LIMIT

FIRST_STATUS_WAIT = 5.0  # seconds before the first status read; doubled after each
LONGEST_STATUS_WAIT = 60.0


@dataclass(frozen=True)
class ExportPace:
    """How fast the account's exports go, and how many rows a result file holds."""

    rows_per_second: float
    queue_delay: float = 0.0
    rows_per_file: int = 10_000

    def __post_init__(self) -> None:
        if self.rows_per_second <= 0 or self.queue_delay < 0 or self.rows_per_file < 1:
            raise ValueError("an export pace needs a positive rate and file size")


def scan_calls(prospects: int) -> int:
    """Calls of a paged scan: full pages, then the short (maybe empty) one that ends it."""
    if prospects < 0:
        raise ValueError("a count of prospects cannot be negative")
    return prospects // QUERY_LIMIT + 1


def status_reads(seconds: float) -> int:
    """Status reads until a job of `seconds` is seen done: waits of 5, 10, 20, 40, 60, 60 ..."""
    reads, waited, wait = 1, FIRST_STATUS_WAIT, FIRST_STATUS_WAIT
    while waited < seconds:
        wait = min(wait * 2, LONGEST_STATUS_WAIT)
        waited += wait
        reads += 1
    return reads


def export_calls(prospects: int, years: int, pace: ExportPace) -> int:
    """Calls to export `prospects` spread over `years` one-year ranges, one after another.

    Rows are taken as spread evenly over the years; every export has at least one file to
    download only when it has rows.
    """
    if prospects < 0 or years < 1:
        raise ValueError("an export needs a count of prospects and at least one year")
    calls = 0
    for year in range(years):
        rows = prospects // years + (1 if year < prospects % years else 0)
        seconds = pace.queue_delay + rows / pace.rows_per_second
        files = math.ceil(rows / pace.rows_per_file)
        calls += 1 + status_reads(seconds) + files
    return calls


def export_pays(prospects: int, years: int, pace: ExportPace) -> bool:
    """True when filling the index by exports costs fewer calls than a paged scan."""
    return export_calls(prospects, years, pace) < scan_calls(prospects)


# Besides the export, reading changes back by one costs the page after its mark (at least)
# and the recycle bin read again (`domain.index.export_refresh`).
EXPORT_REFRESH_EXTRA_CALLS = 2


def changes_export_pays(changes: int, exported: int, pace: ExportPace) -> bool:
    """True when one export of `exported` rows (the changes and the overlap its range needs)
    reads back `changes` changed prospects for fewer calls than paging through them."""
    return export_calls(exported, 1, pace) + EXPORT_REFRESH_EXTRA_CALLS < scan_calls(changes)
