"""The SQLite backend's store ports, all in the queue's one file (one machine).

In: the file's path (`SQLiteStores.opened`) or an open SQLiteDatabase. Out: `SQLiteStores`,
which builds the queue, prospect store, prospect index, API call counts and delivery history
over that one database, and the Pardot slots in files beside it (`slots_beside`, usable
before and without the database).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.history import SQLiteDeliveryHistory
from adapters.sqlite.import_ledger import SQLiteImportLedger
from adapters.sqlite.pardot_budget import SQLiteApiCallCounts, SQLiteImportFileCounts
from adapters.sqlite.pardot_slots import SQLiteStoreSlots
from adapters.sqlite.personal_data import SQLitePersonalData
from adapters.sqlite.prospect_index import SQLiteProspectIndex
from adapters.sqlite.prospect_store import SQLiteProspectStore
from adapters.sqlite.queue import SQLiteEventQueue
from adapters.sqlite.slot_busy import SQLiteSlotBusyLog


class SQLiteStores:
    """Every store port over one open SQLite file (see adapters.shared.stores.Stores)."""

    def __init__(self, database: SQLiteDatabase) -> None:
        self.database = database

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, path: str | Path) -> AsyncIterator[SQLiteStores]:
        """The file, checked (a damaged one raises StoreUnusable, naming it), closed after."""
        database = SQLiteDatabase(path)
        try:
            await database.check()
            yield cls(database)
        finally:
            await database.close()

    def queue(self, *, max_pending: int | None) -> SQLiteEventQueue:
        return SQLiteEventQueue(self.database, max_pending=max_pending)

    def prospect_store(self) -> SQLiteProspectStore:
        return SQLiteProspectStore(self.database)

    def prospect_index(self) -> SQLiteProspectIndex:
        return SQLiteProspectIndex(self.database)

    def api_calls(self) -> SQLiteApiCallCounts:
        return SQLiteApiCallCounts(self.database)

    def import_files(self) -> SQLiteImportFileCounts:
        return SQLiteImportFileCounts(self.database)

    def slot_busy(self) -> SQLiteSlotBusyLog:
        return SQLiteSlotBusyLog(self.database)

    def import_ledger(self) -> SQLiteImportLedger:
        return SQLiteImportLedger(self.database)

    def personal_data(self) -> SQLitePersonalData:
        return SQLitePersonalData(self.database)

    def suppression(self) -> SQLitePersonalData:
        return SQLitePersonalData(self.database)

    def history(
        self, *, retention: timedelta, clock: Callable[[], datetime]
    ) -> SQLiteDeliveryHistory:
        return SQLiteDeliveryHistory(self.database, retention=retention, clock=clock)

    def pardot_slots(self, business_unit: str, *, limit: int) -> SQLiteStoreSlots:
        return slots_beside(self.database.path, business_unit, limit=limit)


def slots_beside(path: str | Path, business_unit: str, *, limit: int) -> SQLiteStoreSlots:
    """The Pardot slots in files beside the store's file: they need no open database."""
    return SQLiteStoreSlots(path, business_unit, limit=limit)
