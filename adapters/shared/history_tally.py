"""What both delivery-history stores derive from a batch of entries before writing it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.ports import HistoryEntry

MINUTES_KEPT = timedelta(days=1)  # the status page charts the last hour; a day is plenty
PURGE_EVERY = timedelta(hours=1)


@dataclass
class Tally:
    """Events per (minute, outcome), and per trait when it was last seen and how often."""

    minutes: dict[tuple[datetime, str], int] = field(default_factory=dict)
    seen: dict[str, tuple[datetime, int]] = field(default_factory=dict)


def minute_of(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(second=0, microsecond=0)


def tally(entries: Sequence[HistoryEntry]) -> Tally:
    counted = Tally()
    for e in entries:
        key = (minute_of(e.at), e.outcome)
        counted.minutes[key] = counted.minutes.get(key, 0) + 1
        for name in e.seen:
            last, count = counted.seen.get(name, (e.at, 0))
            counted.seen[name] = (max(last, e.at), count + 1)
    return counted


class PurgeSchedule:
    """Old history is deleted along with a write, at most once per PURGE_EVERY."""

    def __init__(self) -> None:
        self._purged_at: datetime | None = None

    def due(self, now: datetime) -> datetime | None:
        """`now` when a purge should go with this write, else None."""
        if self._purged_at is not None and now - self._purged_at < PURGE_EVERY:
            return None
        self._purged_at = now
        return now
