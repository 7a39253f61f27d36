"""What every store backend offers: its store ports, built over one open database.

In: nothing; out: `Stores`, the Protocol `adapters.sqlite.stores.SQLiteStores` and
`adapters.postgres.stores.PostgresStores` both follow, so the composition root picks a backend
once and asks it for each port instead of choosing an adapter per port.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from domain.ports import (
    ApiCallCounts,
    DeliveryHistory,
    EventQueue,
    PardotSlots,
    ProspectIndex,
    ProspectStore,
)


class Stores(Protocol):
    """Every store port of one backend; each call builds a new adapter over the same database."""

    def queue(self, *, max_pending: int | None) -> EventQueue: ...

    def prospect_store(self) -> ProspectStore: ...

    def prospect_index(self) -> ProspectIndex: ...

    def api_calls(self) -> ApiCallCounts: ...

    def history(
        self, *, retention: timedelta, clock: Callable[[], datetime]
    ) -> DeliveryHistory: ...  # fmt: skip

    def pardot_slots(
        self, business_unit: str, *, limit: int
    ) -> AbstractAsyncContextManager[PardotSlots]:
        """Pardot's requests in flight per business unit, shared by every process on the store."""
        ...
