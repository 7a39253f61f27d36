"""The account's import files a day, budgeted like calls.

Pardot takes at most 1,000 import batches (CSV files) a day per account (PARDOT_API.md,
"Bulk: Import and Export"), whoever uploads them. Every process sharing the store counts the
files it is about to upload in one counter per account day, as calls are counted
(`domain.budget`): an import goes ahead only when its files fit in what is left of the day,
else its rows go by batch calls, which no file limit touches.

A reservation is taken before the import is created and counts whether or not every file is
then uploaded: an import abandoned half-way spent what it uploaded, and a count too high
only sends rows by batches early, where one too low would have Pardot refuse the files.
"""

from __future__ import annotations

from domain.budget import AccountDayCounter
from domain.ports.bulk import BULK_BATCHES_PER_DAY


class ImportFileBudget(AccountDayCounter):
    """Import files per account day, `limit` of them (DESTINATION_IMPORT_FILES_PER_DAY)."""

    default_limit = BULK_BATCHES_PER_DAY

    async def used(self) -> int:
        return await self._counts.used(self.today())

    async def take(self, files: int) -> bool:
        """Reserve `files` of today's files: False (nothing reserved) when they do not fit.

        Added first and given back when over, so two processes reserving at once can never
        both get the last files (the counter's add is atomic, a read then an add is not)."""
        day = self.today()
        if await self._counts.add(day, files) <= self.limit:
            return True
        await self._counts.add(day, -files)
        return False

    async def give_back(self, files: int) -> None:
        """Files reserved for an import Pardot refused to create: none was uploaded."""
        await self._counts.add(self.today(), -files)
