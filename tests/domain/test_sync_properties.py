"""Property-based tests of the sync use case against the in-memory Pardot."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.sync import Delivered, RetryLater
from tests.domain.conftest import World, make_settings
from tests.strategies import events, settings

BASE = datetime(2025, 1, 1, tzinfo=UTC)
AUDIENCE = "premium_users"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@given(st.lists(events("identify"), min_size=1, max_size=6), settings())
@hsettings(max_examples=60, deadline=None)
def test_an_identical_event_applied_twice_leaves_the_state_of_once(
    payloads: list[dict[str, Any]], config: Any
) -> None:
    async def scenario() -> None:
        once = World(config, custom_fields=("org_id", "Org_Id", "customer_key"))
        await once.send(*payloads)
        twice = World(config, custom_fields=("org_id", "Org_Id", "customer_key"))
        await twice.send(*payloads)
        await twice.send(*payloads)  # again, as a redelivery after a crash would
        assert twice.state() == once.state()

    run(scenario())


@given(
    st.lists(
        st.tuples(
            st.integers(0, 50), st.sampled_from(["a@x.io", "b@x.io", "A@X.io"]), st.booleans()
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 5),
)
@hsettings(max_examples=60, deadline=None)
def test_a_stream_for_one_lookup_value_never_yields_two_prospects_with_it(
    stream: list[tuple[int, str, bool]], batch_size: int
) -> None:
    async def scenario() -> None:
        world = World(make_settings(prospect_lookup_field_id="org_id"), custom_fields=("org_id",))
        payloads = [
            {
                "type": "identify",
                "userId": "u1",
                "messageId": f"m{i}",
                "timestamp": (BASE + timedelta(seconds=second)).isoformat(),
                "traits": {"email": email, "org_id": "acme", "vip": vip},
            }
            for i, (second, email, vip) in enumerate(stream)
        ]
        for start in range(0, len(payloads), batch_size):
            await world.send(*payloads[start : start + batch_size])
        holders = [p for p in world.pardot.prospects() if p.field_text("org_id") == "acme"]
        assert len(holders) == 1

    run(scenario())


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.booleans(), st.text(max_size=5)),
        min_size=1,
        max_size=10,
        unique_by=lambda t: t[0],
    ),
    st.randoms(use_true_random=False),
    st.integers(1, 4),
    st.sampled_from([3, 4]),
)
@hsettings(max_examples=80, deadline=None)
def test_final_fields_are_those_of_the_latest_event_by_timestamp(
    stream: list[tuple[int, bool, str]], rng: Any, batch_size: int, version: int
) -> None:
    """Whatever order the events arrive in and however they are batched."""

    async def scenario() -> None:
        world = World(make_settings(api_version=version), custom_fields=(AUDIENCE, "plan"))
        payloads = [
            {
                "type": "identify",
                "userId": "u1",
                "messageId": f"m{second}",
                "timestamp": (BASE + timedelta(seconds=second)).isoformat(),
                "traits": {"email": "pat@x.io", AUDIENCE: member, "plan": plan_name},
            }
            for second, member, plan_name in stream
        ]
        latest = max(stream)
        arrival = list(payloads)
        rng.shuffle(arrival)
        for start in range(0, len(arrival), batch_size):
            outcomes = await world.send(*arrival[start : start + batch_size])
            assert all(isinstance(o, Delivered) for o in outcomes)
        [prospect] = world.pardot.prospects()
        assert prospect.fields.get(AUDIENCE) == ("true" if latest[1] else "false")
        assert prospect.fields.get("plan", "") == latest[2]

    run(scenario())


async def test_engage_true_then_false_in_one_batch_in_the_wrong_order_ends_false() -> None:
    world = World(make_settings(), custom_fields=(AUDIENCE,))
    entered = {
        "type": "identify",
        "userId": "u1",
        "messageId": "m1",
        "timestamp": "2025-01-01T00:00:00Z",
        "traits": {"email": "pat@x.io", AUDIENCE: True},
    }
    left = {
        **entered,
        "messageId": "m2",
        "timestamp": "2025-01-01T00:05:00Z",
        "traits": {"email": "pat@x.io", AUDIENCE: False},
    }
    outcomes = await world.send(left, entered)
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert world.pardot.calls.get("batch", 0) + world.pardot.calls.get("create", 0) == 1
    [prospect] = world.pardot.prospects()
    assert prospect.fields[AUDIENCE] == "false"


async def test_duplicate_message_ids_in_one_call_are_delivered_once() -> None:
    world = World(make_settings(api_version=3))
    event = {"type": "identify", "userId": "u1", "messageId": "same", "traits": {"email": "a@x.io"}}
    first, second = await world.send(event, event)
    assert isinstance(first, Delivered)
    assert second.reason == "skipped: duplicate messageId same"


async def test_retryable_pardot_errors_become_retry_later() -> None:
    from domain.errors import RetryableError

    # The batch call's error mapping: with the bulk lane the row would go by an import.
    world = World(make_settings(api_version=3), bulk=False)

    async def broken(writes: Any) -> Any:
        raise RetryableError("Pardot is busy", code=66, retry_after=2.0)

    world.pardot.write_batch = broken  # type: ignore[method-assign]
    [outcome] = await world.send({"type": "identify", "userId": "u", "traits": {"email": "a@x.io"}})
    assert outcome == RetryLater("retry: Pardot error 66: Pardot is busy", delay=2.0)


async def test_permanent_row_errors_reject_only_their_event() -> None:
    world = World(make_settings(api_version=4))
    good = world.pardot.seed("a@x.io")
    outcomes = await world.send(
        {
            "type": "identify",
            "userId": "u",
            "messageId": "1",
            "traits": {"email": "a@x.io"},
            "integrations": {"Pardot": {"id": good}},
        },
        {
            "type": "identify",
            "userId": "v",
            "messageId": "2",
            "traits": {"first_name": "x"},
            "integrations": {"Pardot": {"id": 999999}},
        },
    )
    assert isinstance(outcomes[0], Delivered)
    assert outcomes[1].reason.startswith("rejected by Pardot: Pardot error 3")
