"""Forgetting a person in memory: PersonalData and SuppressionList over the memory queue and
prospect store, with the SQL stores' semantics (no delivery history is kept in memory)."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.memory.queue import InMemoryEventQueue
from adapters.shared.forget_match import create_names, lookup_suffixes, tally
from domain.forget import event_identities
from domain.ports.forget import Person, Removed


class InMemoryPersonalData:
    def __init__(self, queue: InMemoryEventQueue, store: InMemoryProspectStore) -> None:
        self._queue = queue
        self._store = store
        self._salt = secrets.token_bytes(32)
        self._suppressed: set[str] = set()

    async def forget(self, person: Person, *, suppress: Collection[str], dry_run: bool) -> Removed:
        def theirs(payload: Mapping[str, Any]) -> bool:
            return bool(event_identities(payload) & person.identities)

        states = self._queue.remove_where(theirs, dry_run=dry_run)
        names = create_names(person, self._store.linked_to(person.prospects))
        stamps, links = self._store.forget(
            person.prospects,
            person.identities | set(names),
            lookup_suffixes(person),
            dry_run=dry_run,
        )
        if not dry_run:
            self._suppressed.update(suppress)
        return Removed(stamps=stamps, links=links, **tally(states))

    async def identities_in_events(self, identities: Collection[str]) -> frozenset[str]:
        return self._queue.identities_naming(frozenset(identities))

    async def drop_events(self, event_ids: Sequence[int]) -> int:
        return self._queue.remove(event_ids)

    async def scrub(self) -> bool:
        return True  # nothing outlives the process

    async def salt(self) -> bytes:
        return self._salt

    async def suppressed(self, digests: Collection[str]) -> set[str]:
        return set(digests) & self._suppressed

    async def everyone(self) -> frozenset[str]:
        return frozenset(self._suppressed)

    async def lift(self, digests: Collection[str]) -> int:
        lifted = set(digests) & self._suppressed
        self._suppressed -= lifted
        return len(lifted)
