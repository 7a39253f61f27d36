"""The examples of the seed's documentation, end to end against the in-memory Pardot."""

from __future__ import annotations

from domain.sync import Delivered, Rejected
from tests.domain.conftest import World, make_settings

TOM = {
    "type": "identify",
    "messageId": "m-tom-1",
    "userId": "f4ca124298",
    "timestamp": "2024-05-01T10:00:00Z",
    "traits": {
        "email": "tom@initech.example",
        "first_name": "Tom",
        "last_name": "Smykowski",
        "company": "Initech",
        "department": "Products",
        "years_in_business": 10,
        "notes": "Takes the specs to the engineers",
        "description": "People person",
        "title": "Product Manager",
    },
}


async def test_v3_tom_smykowski_becomes_one_prospect_with_mapped_fields() -> None:
    # The seed's campaign id is for the tracking code; the service's own setting names the
    # campaign of prospects it creates.
    world = World(make_settings(api_version=3, campaign_id="99"), create_campaign_id="17")
    [outcome] = await world.send(TOM)
    assert isinstance(outcome, Delivered)
    [prospect] = world.pardot.prospects()
    assert prospect.email == "tom@initech.example"
    assert dict(prospect.fields) == {
        "first_name": "Tom",
        "last_name": "Smykowski",
        "company": "Initech",
        "department": "Products",
        "years_in_business": "10",
        "notes": "Takes the specs to the engineers",
        "comments": "People person",
        "job_title": "Product Manager",
        "campaign_id": "17",
    }
    # The same person again updates, never duplicates, and the campaign is not rewritten.
    again = {
        **TOM,
        "messageId": "m-tom-2",
        "traits": {"email": " TOM@initech.example ", "department": "Sales"},
    }
    world.pardot.custom_field_types["department"] = "Text"
    await world.send(again)
    [prospect] = world.pardot.prospects()
    assert prospect.fields["department"] == "Sales"
    assert prospect.fields["campaign_id"] == "17"


async def test_v4_fid_option_updates_the_salesforce_linked_prospect() -> None:
    world = World(make_settings())
    lead = world.pardot.seed("tom@initech.example", fid="00Q5e00000AbCdEfGH", first_name="Tom")
    other = world.pardot.seed("tom@initech.example", first_name="Tommy")
    event = {**TOM, "integrations": {"Pardot": {"fid": "00Q5e00000AbCdEfGH"}}}
    [outcome] = await world.send(event)
    assert outcome == Delivered(f"updated prospect {lead}: matched by fid 00Q5e00000AbCdEfGH", lead)
    by_id = {p.id: p for p in world.pardot.prospects()}
    assert by_id[lead].fields["last_name"] == "Smykowski"
    assert "last_name" not in by_id[other].fields
    assert len(by_id) == 2


async def test_v4_id_option_updates_that_prospect() -> None:
    world = World(make_settings())
    first = world.pardot.seed("tom@initech.example")
    world.pardot.seed("tom@initech.example")
    [outcome] = await world.send({**TOM, "integrations": {"Pardot": {"id": first}}})
    assert isinstance(outcome, Delivered)
    assert world.pardot.prospects()[0].fields["first_name"] == "Tom"
    assert "first_name" not in world.pardot.prospects()[1].fields


async def test_v4_org_id_lookup_creates_then_updates_the_same_prospect() -> None:
    world = World(make_settings(prospect_lookup_field_id="org_id"), custom_fields=("org_id",))
    world.pardot.seed("tom@initech.example", org_id="other-org")  # same email, other org
    event = {**TOM, "traits": {**TOM["traits"], "org_id": "initech-1"}}
    [created] = await world.send(event)
    assert isinstance(created, Delivered) and created.reason.startswith("created prospect")
    assert "no prospect has org_id=initech-1" in created.reason
    [updated] = await world.send(
        {
            **event,
            "messageId": "m2",
            "traits": {
                "email": "tom@initech.example",
                "org_id": "initech-1",
                "first_name": "Thomas",
            },
        }
    )
    assert isinstance(updated, Delivered) and updated.reason.startswith("updated prospect")
    holders = [p for p in world.pardot.prospects() if p.field_text("org_id") == "initech-1"]
    assert len(holders) == 1 and holders[0].fields["first_name"] == "Thomas"
    assert len(world.pardot.prospects()) == 2


async def test_v4_use_user_id_as_lookup_value() -> None:
    settings = make_settings(prospect_lookup_field_id="org_id", use_user_id_as_lookup_value=True)
    world = World(settings, custom_fields=("org_id",))
    [outcome] = await world.send(TOM)
    assert isinstance(outcome, Delivered)
    [prospect] = world.pardot.prospects()
    assert prospect.field_text("org_id") == "f4ca124298"


async def test_v4_two_holders_of_a_lookup_value_write_nothing() -> None:
    world = World(make_settings(prospect_lookup_field_id="org_id"), custom_fields=("org_id",))
    a = world.pardot.seed("tom@initech.example", org_id="initech-1")
    b = world.pardot.seed("tom@initech.example", org_id="initech-1")
    before = world.state()
    [outcome] = await world.send({**TOM, "traits": {**TOM["traits"], "org_id": "initech-1"}})
    assert isinstance(outcome, Rejected)
    assert "initech-1" in outcome.reason and f"{a}, {b}" in outcome.reason
    assert world.state() == before


async def test_v4_without_keys_updates_the_latest_prospect_with_the_email() -> None:
    world = World(make_settings())
    world.pardot.seed("tom@initech.example")
    latest = world.pardot.seed("tom@initech.example")
    [outcome] = await world.send(TOM)
    assert outcome == Delivered(
        f"updated prospect {latest}: the latest with email tom@initech.example", latest
    )
    assert len(world.pardot.prospects()) == 2


async def test_v3_without_email_is_rejected_naming_the_trait() -> None:
    world = World(make_settings(api_version=3))
    [outcome] = await world.send({**TOM, "traits": {"first_name": "Tom"}})
    assert outcome == Rejected("rejected: missing trait email (API v3 matches prospects by email)")
    assert world.pardot.prospects() == []
