"""The lookup field must be a custom field of the account; a mismatch pauses, never guesses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import ConfigurationError
from domain.lookup_field import check_lookup_field, closest_field
from domain.prospect import CustomField, Prospect, traits_to_fields
from domain.sync import Delivered
from tests.domain.conftest import World, make_settings

FIELDS = [CustomField("org_id", "Text"), CustomField("premium_users", "Checkbox")]


def event(n: int, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": "u1",
        "timestamp": f"2026-01-01T00:00:{n:02d}Z",
        "traits": {"email": "pat@x.io", **traits},
    }


@pytest.mark.parametrize(
    ("configured", "hint"),
    [("Org_Id", "did you mean org_id?"), ("org_idd", "did you mean org_id?"), ("zzz", None)],
)
def test_a_lookup_field_the_account_lacks_is_named_with_the_closest_one(
    configured: str, hint: str | None
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_lookup_field(configured, FIELDS, setting="PARDOT_LOOKUP_FIELD_ID")
    message = str(caught.value)
    assert f"PARDOT_LOOKUP_FIELD_ID={configured} is not a custom field" in message
    assert "\n" not in message
    assert (hint in message) if hint else ("did you mean" not in message)


def test_a_standard_field_is_refused_as_a_lookup_field() -> None:
    with pytest.raises(ConfigurationError, match="email is a standard prospect field"):
        check_lookup_field("email", FIELDS)


@given(st.sampled_from(["org_id", "premium_users"]), st.sampled_from(["upper", "swapcase"]))
def test_the_closest_field_of_a_case_variant_is_the_field_itself(name: str, how: str) -> None:
    assert closest_field(getattr(name, how)(), [f.field_id for f in FIELDS]) == name


async def test_nothing_is_written_until_the_field_exists_then_deliveries_resume() -> None:
    world = World(make_settings(prospect_lookup_field_id="Org_Id"), ("org_id",))
    del world.pardot.custom_field_types["Org_Id"]  # the account only has org_id
    with pytest.raises(ConfigurationError, match="did you mean org_id"):
        await world.send(event(1, Org_Id="acme"))
    assert world.pardot.prospects() == []
    world.pardot.custom_field_types["Org_Id"] = "Text"  # a marketer creates it
    [outcome] = await world.send(event(2, Org_Id="acme"))
    assert isinstance(outcome, Delivered)
    [prospect] = world.pardot.prospects()
    assert prospect.fields["Org_Id"] == "acme"


async def test_a_created_prospect_without_its_lookup_value_pauses_instead_of_multiplying() -> None:
    world = World(make_settings(prospect_lookup_field_id="org_id"))
    real_create = world.pardot.create

    async def drops_the_value(email: str, fields: Any) -> Prospect:
        return await real_create(email, {k: v for k, v in fields.items() if k != "org_id"})

    world.pardot.create = drops_the_value  # type: ignore[method-assign]
    for n in range(3):
        with pytest.raises(ConfigurationError, match="check the type of the field org_id"):
            await world.send(event(n, org_id="acme"))
    assert len(world.pardot.prospects()) == 1  # one stray prospect, not one per event
    world.pardot.create = real_create  # type: ignore[method-assign]
    world.pardot.custom_field_types["org_id"] = "Number"  # the operator changed the field
    [outcome] = await world.send(event(9, org_id="7"))
    assert isinstance(outcome, Delivered)


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Ann\tLee", "Ann", "Lee"),
        ("Ann\u00a0Mary  Lee", "Ann", "Mary  Lee"),
        ("Cher", "Cher", None),
    ],
)
def test_name_splits_on_any_whitespace(full: str, first: str, last: str | None) -> None:
    fields = traits_to_fields({"name": full})
    assert (fields.get("first_name"), fields.get("last_name")) == (first, last)


def test_a_string_address_is_the_first_address_line() -> None:
    assert traits_to_fields({"address": "1 Main St, Springfield"}) == {
        "address_one": "1 Main St, Springfield"
    }
