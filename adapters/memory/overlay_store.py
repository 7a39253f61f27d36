"""A ProspectStore and call counts over the real ones that keep their own writes in memory.

In: the store (or call counts) a real run would use. Out: the same port, read through to it,
where links, unlinks, field stamps, locks and counted calls land in dicts of this
object and are gone when it is. A dry run drives the real SyncService over these, so it
decides as the real run would and leaves the shared store exactly as it found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

from adapters.memory.prospect_store import later_or_equal
from adapters.shared.email_locks import EmailLocks
from domain.ports import ApiCallCounts, FieldStamp, ProspectStore


class OverlayProspectStore:
    def __init__(self, store: ProspectStore) -> None:
        self._store = store
        self._links: dict[str, str | None] = {}  # None: unlinked during the run
        self._stamps: dict[str, dict[str, FieldStamp]] = {}
        # Process-local: the shared create locks are a write to the store too.
        self._locks = EmailLocks()

    async def links(self, identities: Sequence[str]) -> dict[str, str]:
        asked = [i for i in identities if i not in self._links]
        found = await self._store.links(asked) if asked else {}
        for identity in identities:
            key = self._links.get(identity)
            if key is not None:
                found[identity] = key
        return found

    async def link(self, links: Mapping[str, str]) -> None:
        self._links.update(links)

    async def unlink(self, identities: Sequence[str]) -> None:
        self._links.update(dict.fromkeys(identities))

    async def stamps(self, prospect: str) -> dict[str, FieldStamp]:
        return {**await self._store.stamps(prospect), **self._stamps.get(prospect, {})}

    async def record(self, prospect: str, stamps: Mapping[str, FieldStamp]) -> None:
        current = await self.stamps(prospect)
        mine = self._stamps.setdefault(prospect, {})
        for name, stamp in stamps.items():
            if later_or_equal(stamp, current.get(name)):
                mine[name] = stamp

    def create_lock(self, email: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.hold([email])

    @contextlib.asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        async with self._locks.hold_all(keys):
            yield


class OverlayApiCallCounts:
    """The day's real count plus the calls counted here; nothing reaches the real budget."""

    def __init__(self, counts: ApiCallCounts) -> None:
        self._counts = counts
        self._added: dict[str, int] = {}

    async def add(self, day: str, calls: int = 1) -> int:
        self._added[day] = self._added.get(day, 0) + calls
        return await self.used(day)

    async def used(self, day: str) -> int:
        return await self._counts.used(day) + self._added.get(day, 0)
