from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.pardot.in_memory import InMemoryPardot
from domain.events import parse_event
from domain.settings import DestinationSettings
from domain.sync import Outcome, SyncService
from domain.sync.import_lane import ImportLane, ImportPolling
from tests.strategies import BUSINESS_UNIT


def make_settings(**overrides: Any) -> DestinationSettings:
    values: dict[str, Any] = {
        "api_version": 4,
        "account_id": "507251",
        "business_unit_id": BUSINESS_UNIT,
    }
    values.update(overrides)
    return DestinationSettings(**values)


# The rule properties hold with the bulk lane on: the updates of one column set in a
# call go by a Pardot import, every one of them (PARDOT_TEST_BULK=off: batches only).
BULK = os.environ.get("PARDOT_TEST_BULK", "auto") != "off"


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def bulk_lane(pardot: InMemoryPardot, version: int) -> ImportLane:
    return ImportLane(pardot, version, min_rows=1, polling=ImportPolling(0, 0), sleep=_no_wait)


class World:
    """An in-memory Pardot, an identity map and the sync service wired together."""

    def __init__(
        self,
        settings: DestinationSettings,
        custom_fields: tuple[str, ...] | dict[str, str] = (),
        *,
        create_campaign_id: str | None = None,
        yields: Iterator[int] | None = None,
        bulk: bool = BULK,
    ) -> None:
        self.settings = settings
        lookup = settings.lookup_field
        if lookup is not None and lookup not in custom_fields:
            custom_fields = (
                {**custom_fields, lookup: "Text"}
                if isinstance(custom_fields, dict)
                else (*custom_fields, lookup)
            )
        self.pardot = InMemoryPardot(
            version=settings.api_version, custom_fields=custom_fields, yields=yields
        )
        self.store = InMemoryProspectStore()
        self.service = SyncService(
            self.pardot,
            settings,
            self.store,
            create_campaign_id=create_campaign_id,
            imports=bulk_lane(self.pardot, settings.api_version) if bulk else None,
        )

    async def send(self, *payloads: dict[str, Any]) -> list[Outcome]:
        return await self.service.sync([parse_event(p) for p in payloads])

    def state(self) -> list[tuple[int, str | None, dict[str, Any]]]:
        return [(p.id, p.email, dict(p.fields)) for p in self.pardot.prospects()]
