"""Keeping the prospect index: filled by a paged scan, kept fresh by Pardot's own times.

Pardot cannot search by email in bulk nor by custom field (PARDOT_API.md), so the service
keeps every prospect of the account in its store and decides from there. This package fills
that index the way Pardot recommends for bulk pulls (`id_greater_than` high-water marks, 200
rows a call, parallel id ranges within the in-flight limit, resumable: `scan`), keeps it fresh
with `updated_after` queries bounded by the latest `updated_at` Pardot returned (never our own
clock: Pardot's times are in the account's zone), and learns the ids of prospects created by
batches (which return none) from the refresh begun after them (`refresh`). Where Pardot's exports
cost fewer calls than the scan, they fill the index instead (`export`). Every call goes through
one budgeted, counted `feed`; the `keeper` decides when to pull, `fill_choice` how to fill.
"""

from domain.index.feed import KEY_FIELDS, BudgetShort, IndexFeed
from domain.index.fill_choice import SCAN_OVERHEAD_CALLS, SCAN_ROWS_PER_CALL
from domain.index.keeper import DEFAULT_PARALLEL, DEFAULT_REFRESH_SECONDS, IndexKeeper
from domain.index.refresh import earlier
from domain.index.scan import RANGES_PER_WORKER, Progress, RangeScan, ScanReport

__all__ = [
    "DEFAULT_PARALLEL",
    "DEFAULT_REFRESH_SECONDS",
    "KEY_FIELDS",
    "RANGES_PER_WORKER",
    "SCAN_OVERHEAD_CALLS",
    "SCAN_ROWS_PER_CALL",
    "BudgetShort",
    "IndexFeed",
    "IndexKeeper",
    "Progress",
    "RangeScan",
    "ScanReport",
    "earlier",
]
