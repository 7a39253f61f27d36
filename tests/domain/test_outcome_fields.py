"""Each delivery names its prospect and the fields that event's values won: explain's answer."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.settlement import RetryPolicy, settle
from domain.sync import Delivered
from tests.domain.conftest import World, make_settings

NOW = datetime(2024, 5, 2, tzinfo=UTC)


def _identify(n: int, minute: int, **traits: object) -> dict[str, object]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": "ada",
        "timestamp": f"2024-05-01T10:{minute:02d}:00Z",
        "traits": {"email": "ada@example.com", **traits},
    }


async def test_a_created_prospect_credits_each_event_with_the_values_it_won() -> None:
    world = World(make_settings(), ("plan",))
    first, second = await world.send(
        _identify(1, 0, firstName="Ada", plan="a"), _identify(2, 5, plan="b")
    )
    assert isinstance(first, Delivered) and isinstance(second, Delivered)
    [prospect] = world.pardot.prospects()
    assert first.prospect == second.prospect == str(prospect.id)
    assert dict(first.fields) == {"first_name": "Ada"}
    assert dict(second.fields) == {"plan": "b", "email": "ada@example.com"}


async def test_an_older_event_after_a_newer_one_wrote_nothing_and_is_unchanged() -> None:
    world = World(make_settings(), ("plan",))
    [newer] = await world.send(_identify(1, 5, plan="new"))
    [older] = await world.send(_identify(2, 0, plan="old"))
    assert isinstance(newer, Delivered) and not newer.unchanged
    assert isinstance(older, Delivered) and older.unchanged and older.prospect == newer.prospect
    assert world.pardot.prospects()[0].fields["plan"] == "new"
    settled = settle(older, 1, RetryPolicy(), NOW)
    assert settled.unchanged and settled.prospect == newer.prospect
    assert not settle(newer, 1, RetryPolicy(), NOW).unchanged


async def test_v3_updates_name_the_email_key_and_the_fields_written() -> None:
    world = World(make_settings(api_version=3))
    [created] = await world.send(_identify(1, 0, firstName="Ada"))
    assert isinstance(created, Delivered)
    assert created.prospect == "email:ada@example.com"
    assert dict(created.fields) == {"first_name": "Ada", "email": "ada@example.com"}
