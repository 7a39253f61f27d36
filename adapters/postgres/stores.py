"""The PostgreSQL backend's store ports, in one database that several nodes share.

In: the database URL and pool size (`PostgresStores.opened`) or an open PostgresDatabase.
Out: `PostgresStores`, which builds the queue, prospect store, prospect index, API call counts,
delivery history and Pardot slots over that one connection pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from adapters.postgres.database import WAIT_SECONDS, PostgresDatabase
from adapters.postgres.history import PostgresDeliveryHistory
from adapters.postgres.import_ledger import PostgresImportLedger
from adapters.postgres.pardot_budget import PostgresApiCallCounts, PostgresImportFileCounts
from adapters.postgres.pardot_slots import PostgresSlots
from adapters.postgres.personal_data import PostgresPersonalData
from adapters.postgres.prospect_index import PostgresProspectIndex
from adapters.postgres.prospect_store import PostgresProspectStore
from adapters.postgres.queue import PostgresEventQueue
from adapters.postgres.slot_busy import PostgresSlotBusyLog


class PostgresStores:
    """Every store port over one open PostgreSQL database (see adapters.shared.stores.Stores)."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(
        cls, url: str, *, pool_size: int, wait_seconds: float = WAIT_SECONDS
    ) -> AsyncIterator[PostgresStores]:
        """Creates or migrates the schema; an unreachable server raises StoreUnusable."""
        database = await PostgresDatabase(
            url, pool_size=pool_size, wait_seconds=wait_seconds
        ).open()
        try:
            await database.check()
            yield cls(database)
        finally:
            await database.close()

    def queue(self, *, max_pending: int | None) -> PostgresEventQueue:
        return PostgresEventQueue(self.database, max_pending=max_pending)

    def prospect_store(self) -> PostgresProspectStore:
        return PostgresProspectStore(self.database)

    def prospect_index(self) -> PostgresProspectIndex:
        return PostgresProspectIndex(self.database)

    def api_calls(self) -> PostgresApiCallCounts:
        return PostgresApiCallCounts(self.database)

    def import_files(self) -> PostgresImportFileCounts:
        return PostgresImportFileCounts(self.database)

    def slot_busy(self) -> PostgresSlotBusyLog:
        return PostgresSlotBusyLog(self.database)

    def import_ledger(self) -> PostgresImportLedger:
        return PostgresImportLedger(self.database)

    def personal_data(self) -> PostgresPersonalData:
        return PostgresPersonalData(self.database)

    def suppression(self) -> PostgresPersonalData:
        return PostgresPersonalData(self.database)

    def history(
        self, *, retention: timedelta, clock: Callable[[], datetime]
    ) -> PostgresDeliveryHistory:
        return PostgresDeliveryHistory(self.database, retention=retention, clock=clock)

    def pardot_slots(self, business_unit: str, *, limit: int) -> PostgresSlots:
        return PostgresSlots(
            self.database, business_unit, limit=limit
        )  # released with the database
