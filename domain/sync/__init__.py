"""The sync use case, in stages: events in, Pardot writes out, one outcome per event back.

plan and group (`grouping`) → resolve (`resolve`, `create`) → merge per prospect (`merge`)
→ compare with the stamps and the index (`compare`) → write (`write`) → learn (`learn`);
`service.SyncService` runs them in order. Only the public names are re-exported here.
"""

from domain.sync.outcomes import UNCHANGED, Delivered, Outcome, Rejected, RetryLater, Skipped
from domain.sync.service import LOOKUP_SETTING, SyncService

__all__ = [
    "LOOKUP_SETTING",
    "UNCHANGED",
    "Delivered",
    "Outcome",
    "Rejected",
    "RetryLater",
    "Skipped",
    "SyncService",
]
