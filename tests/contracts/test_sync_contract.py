"""The sync use case gives the same prospects through either repository."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest

from adapters.memory.prospect_store import InMemoryProspectStore
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
                # Another person: u1's own events without the lookup value would follow the
                # prospect its lookup events link it to (issue 21, row 4).
                parse_event(
                    {**event("m3", "00:02", email="solo@x.io", first_name="Solo"), "userId": "u2"}
                ),
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


@pytest.mark.parametrize("kind", ["gateway", "empty", "maintenance"])
@pytest.mark.parametrize("lookup", [None, "org_id"])
async def test_a_create_whose_answer_was_lost_is_found_next_time_not_made_twice(
    kind: str, lookup: str | None
) -> None:
    """Pardot created the prospect, but a proxy's answer replaced Pardot's: the event is
    retried, and the retry finds the prospect by email instead of creating a second."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        repo = backend.repo
        real_create = repo.create

        async def create_answered_by_a_proxy(email: str, fields: Any) -> Any:
            fake.answer_next(1, kind, after_call=True)  # the create itself, nothing before it
            return await real_create(email, fields)

        repo.create = create_answered_by_a_proxy  # type: ignore[method-assign]
        settings = make_settings(prospect_lookup_field_id=lookup)
        service = SyncService(repo, settings, InMemoryProspectStore())
        sent = event("m1", "00:05", email="pat@x.io", first_name="Pat", org_id="acme")
        [first] = await service.sync([parse_event(sent)])
        assert not isinstance(first, Delivered) and first.reason.startswith("retry")
        assert len(fake.prospects_by_email("pat@x.io")) == 1  # it did happen
        repo.create = real_create  # type: ignore[method-assign]
        [second] = await service.sync([parse_event(sent)])
        assert isinstance(second, Delivered), second
        [only] = fake.prospects_by_email("pat@x.io")
        assert only["first_name"] == "Pat" and fake.calls["create"] == 1
