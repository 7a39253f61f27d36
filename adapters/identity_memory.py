"""An IdentityMap in a dict: for tests, dry runs and single-process experiments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime


class InMemoryIdentityMap:
    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._times: dict[str, dict[str, datetime]] = {}

    async def prospect_id(self, identity: str) -> int | None:
        return self._ids.get(identity)

    async def remember(self, identity: str, prospect_id: int) -> None:
        self._ids[identity] = prospect_id

    async def field_times(self, identity: str) -> dict[str, datetime]:
        return dict(self._times.get(identity, {}))

    async def record_field_times(self, identity: str, times: Mapping[str, datetime]) -> None:
        current = self._times.setdefault(identity, {})
        for name, when in times.items():
            if name not in current or when > current[name]:
                current[name] = when
