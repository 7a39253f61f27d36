"""Issue 21's rules for one person with decisions from the index, through either repository."""

from __future__ import annotations

from typing import Any

from domain.sync import Delivered
from tests.contracts.test_prospect_index_sync import identify, make

__all__ = ["make"]  # the fixture, shared with the index's own contract tests


async def test_one_users_lookup_and_plain_events_in_one_batch_reach_one_prospect(
    make: Any,
) -> None:
    setup = await make(lookup=True)
    await setup.keeper.rebuild()
    outcomes = await setup.send(
        identify("m1", 1, email="ann@x.io", org_id="acme"),
        identify("m2", 2, email="ann.new@x.io"),
        identify("m3", 3, plan="pro"),
    )
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    [(_, email, fields)] = setup.prospects()
    assert (email, fields["org_id"], fields["plan"]) == ("ann.new@x.io", "acme", "pro")


async def test_visitors_sharing_a_device_keep_their_own_prospects(make: Any) -> None:
    setup = await make()
    await setup.keeper.rebuild()
    device = {"userId": None, "anonymousId": "device-1"}
    first = {**identify("m1", 1, email="ann@x.io", plan="a"), **device}
    second = {**identify("m2", 2, email="bob@x.io", plan="b"), **device}
    await setup.send(first)
    await setup.send(second)
    again = {**identify("m3", 3, email="ann@x.io", plan="a2"), **device}
    [outcome] = await setup.send(again)
    assert isinstance(outcome, Delivered)
    found = sorted((email, fields["plan"]) for _, email, fields in setup.prospects())
    assert found == [("ann@x.io", "a2"), ("bob@x.io", "b")]
