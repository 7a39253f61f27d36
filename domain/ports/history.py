"""The delivery history's port: what each attempt at an event came to.

Implemented by each store backend; the worker and `sync FILE` record `HistoryEntry` rows,
`explain` and the status page read them back per event, per prospect and per minute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from domain.prospect import FieldValue


@dataclass(frozen=True)
class HistoryEntry:
    """What one attempt at one event came to, kept for `explain` and the status page.

    `outcome` is a settled state, or `unchanged` for a delivery that needed no write.
    """

    at: datetime
    outcome: str
    reason: str
    message_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    prospect: str | None = None
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    source: str = "queue"  # or "sync" (a file run by `sync FILE`)
    seen: tuple[str, ...] = ()  # every field id the event's traits map to, written or not


class DeliveryHistory(Protocol):
    """The recent past of deliveries: per event, per prospect, and counted per minute."""

    async def record(self, entries: Sequence[HistoryEntry]) -> None: ...

    async def touching(
        self,
        *,
        prospects: Sequence[str],
        user_ids: Sequence[str],
        emails: Sequence[str],
        limit: int = 20,
    ) -> list[HistoryEntry]:
        """The newest entries for these prospects, people (userId) or emails."""
        ...  # fmt: skip

    async def purge(self, settled_before: datetime) -> int:
        """Forget entries settled before the cutoff (the retention), whether or not new ones
        arrive; returns how many. Counts per minute are kept for their own hour."""
        ...

    async def per_minute(self, since: datetime) -> dict[datetime, dict[str, int]]:
        """Entries per minute (the minute's start) and outcome, since `since`."""
        ...

    async def fields_seen(self, since: datetime) -> dict[str, int]:
        """Every field id events carried since `since`, with how many events carried it."""
        ...

    async def prospects_with_email(self, email: str) -> list[str]:
        """Prospect keys whose email we wrote as `email`, or events with it reached."""
        ...

    async def identities_of(self, prospect: str) -> list[str]:
        """The identities (user:…, lookup:…, fid:…) linked to a prospect key."""
        ...

    async def note(self, key: str, value: Any) -> None:
        """Keep a small JSON value (a cached field list, a file's progress); None forgets it."""
        ...

    async def noted(self, key: str) -> Any:
        """The value kept under `key`, or None."""
        ...
