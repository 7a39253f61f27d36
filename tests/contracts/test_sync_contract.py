"""The sync use case gives the same prospects through either repository."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest

from adapters.prospect_store_memory import InMemoryProspectStore
from domain.events import parse_event
from domain.sync import Delivered, Rejected, SyncService
from tests.contracts.conftest import open_backend
from tests.domain.conftest import make_settings

BASE = {"type": "identify", "userId": "u1", "timestamp": "2025-01-01T00:00:00Z"}


def event(message_id: str, when: str = "00:00", **traits: Any) -> dict[str, Any]:
    return {
        **BASE,
        "messageId": message_id,
        "timestamp": f"2025-01-01T{when}:00Z",
        "traits": traits,
    }


@pytest.mark.parametrize("kind", ["memory", "http"])
async def test_v4_lookup_audience_and_latest_by_email_end_alike(kind: str) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, kind, 4)
        settings = make_settings(prospect_lookup_field_id="org_id", campaign_id="99")
        service = SyncService(
            backend.repo, settings, InMemoryProspectStore(), create_campaign_id="17"
        )
        backend.seed("pat@x.io", org_id="other")
        outcomes = await service.sync(
            [
                parse_event(
                    event("m2", "00:05", email="pat@x.io", org_id="acme", premium_users=False)
                ),
                parse_event(
                    event("m1", "00:01", email="pat@x.io", org_id="acme", premium_users=True)
                ),
                parse_event(event("m3", "00:02", email="solo@x.io", first_name="Solo")),
            ]
        )
        assert all(isinstance(o, Delivered) for o in outcomes), outcomes
        again = await service.sync(
            [parse_event(event("m4", "00:09", email="pat@x.io", org_id="acme", first_name="Pat"))]
        )
        assert isinstance(again[0], Delivered) and again[0].reason.startswith("updated prospect")
        found = await backend.repo.read_by_email("pat@x.io")
        acme = [p for p in found if p.field_text("org_id") == "acme"]
        assert len(found) == 2 and len(acme) == 1
        assert acme[0].field_text("premium_users") == "false"
        assert acme[0].field_text("first_name") == "Pat"
        assert acme[0].field_text("campaign_id") == "17"
        [solo] = await backend.repo.read_by_email("solo@x.io")
        assert solo.field_text("first_name") == "Solo"


@pytest.mark.parametrize("kind", ["memory", "http"])
async def test_unknown_pardot_id_is_rejected_not_created(kind: str) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, kind, 4)
        service = SyncService(backend.repo, make_settings(), InMemoryProspectStore())
        payload = {**event("m1", email="pat@x.io"), "integrations": {"Pardot": {"id": 987654}}}
        [outcome] = await service.sync([parse_event(payload)])
        assert isinstance(outcome, Rejected)
        assert backend.emails() == []


@pytest.mark.parametrize("kind", ["memory", "http"])
async def test_v3_tom_is_one_prospect(kind: str) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, kind, 3)
        service = SyncService(
            backend.repo,
            make_settings(api_version=3, campaign_id="99"),
            InMemoryProspectStore(),
            create_campaign_id="17",
        )
        tom = event("m1", email="tom@initech.example", first_name="Tom", title="Product Manager")
        tom2 = event("m2", "00:01", email="tom@initech.example", last_name="Smykowski")
        assert all(isinstance(o, Delivered) for o in await service.sync([parse_event(tom)]))
        assert all(isinstance(o, Delivered) for o in await service.sync([parse_event(tom2)]))
        [prospect] = await backend.repo.read_by_email("tom@initech.example")
        assert prospect.field_text("job_title") == "Product Manager"
        assert prospect.field_text("last_name") == "Smykowski"
        assert prospect.field_text("campaign_id") == "17"
