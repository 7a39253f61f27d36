"""What every store backend offers: its store ports, built over one open database.

In: nothing; out: `Stores`, the Protocol `adapters.sqlite.stores.SQLiteStores` and
`adapters.postgres.stores.PostgresStores` both follow, so the composition root picks a backend
once and asks it for each port instead of choosing an adapter per port.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from domain.ports import (
    ApiCallCounts,
    DeliveryHistory,
    EventQueue,
    ImportLedger,
    PardotSlots,
    PersonalData,
    ProspectIndex,
    ProspectStore,
    SlotBusyLog,
    SuppressionList,
)


class ClosingSlots(PardotSlots, Protocol):
    """Pardot slots that hold something of the backend's (lock files) until closed."""

    def close(self) -> None: ...


class Stores(Protocol):
    """Every store port of one backend; each call builds a new adapter over the same database."""

    def queue(self, *, max_pending: int | None) -> EventQueue: ...

    def prospect_store(self) -> ProspectStore: ...

    def prospect_index(self) -> ProspectIndex: ...

    def api_calls(self) -> ApiCallCounts: ...

    def import_files(self) -> ApiCallCounts:
        """The account's import files per day, counted like calls."""
        ...

    def slot_busy(self) -> SlotBusyLog: ...

    def import_ledger(self) -> ImportLedger:
        """The imports in flight; needs the queue's tables (ask for `queue` first)."""
        ...

    def personal_data(self) -> PersonalData:
        """Forgetting a person: everything of theirs, in one transaction of this store."""
        ...

    def suppression(self) -> SuppressionList: ...

    def history(
        self, *, retention: timedelta, clock: Callable[[], datetime]
    ) -> DeliveryHistory: ...  # fmt: skip

    def pardot_slots(self, business_unit: str, *, limit: int) -> ClosingSlots:
        """Pardot's requests in flight per business unit, shared by every process on the store;
        the caller closes them. A plain object, not an async context manager: the container's
        resource holds it across `yield`, and nested async generators left to the loop's
        shutdown (a start-up that failed half-way) are finalised in no fixed order."""
        ...
