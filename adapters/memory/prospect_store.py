"""A ProspectStore in dicts: for tests, dry runs and single-process experiments."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence

from adapters.shared.email_locks import EmailLocks
from domain.ports import FieldStamp


class InMemoryProspectStore:
    def __init__(self) -> None:
        self._links: dict[str, str] = {}
        self._stamps: dict[str, dict[str, FieldStamp]] = {}
        self._locks = EmailLocks()

    async def links(self, identities: Sequence[str]) -> dict[str, str]:
        return {i: self._links[i] for i in identities if i in self._links}

    async def link(self, links: Mapping[str, str]) -> None:
        self._links.update(links)

    async def unlink(self, identities: Sequence[str]) -> None:
        for identity in identities:
            self._links.pop(identity, None)

    async def stamps(self, prospect: str) -> dict[str, FieldStamp]:
        return dict(self._stamps.get(prospect, {}))

    async def record(self, prospect: str, stamps: Mapping[str, FieldStamp]) -> None:
        current = self._stamps.setdefault(prospect, {})
        for name, stamp in stamps.items():
            if later_or_equal(stamp, current.get(name)):
                current[name] = stamp

    def forget(
        self,
        prospects: Collection[str],
        identities: Collection[str],
        suffixes: Collection[str],
        *,
        dry_run: bool = False,
    ) -> tuple[int, int]:
        """Remove the stamps of `prospects` and every link to them, of `identities`, or a
        `creating:lookup:` mark ending with one of `suffixes`; returns (stamps, links)."""
        stamps = sum(len(self._stamps.get(p, {})) for p in prospects)
        links = [
            identity
            for identity, prospect in self._links.items()
            if prospect in prospects
            or identity in identities
            or (identity.startswith("creating:lookup:") and identity.endswith(tuple(suffixes)))
        ]
        if not dry_run:
            for prospect in prospects:
                self._stamps.pop(prospect, None)
            for identity in links:
                del self._links[identity]
        return stamps, len(links)

    def linked_to(self, prospects: Collection[str]) -> list[str]:
        return [i for i, p in self._links.items() if p in prospects]

    def create_lock(self, email: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.hold([email])

    @contextlib.asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        async with self._locks.hold_all(keys):
            yield


def later_or_equal(stamp: FieldStamp, current: FieldStamp | None) -> bool:
    """Whether `stamp` replaces `current`: an unknown time never loses to a known one."""
    if current is None or stamp.at is None or current.at is None:
        return True
    return stamp.at >= current.at
