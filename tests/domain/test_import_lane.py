"""The import lane (domain/sync/import_lane.py) around the sync: what an import carries, what
goes back to batches, and how an import is followed to its end."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from domain.errors import RetryableError
from domain.sync import Delivered
from domain.sync.import_lane import ImportPolling
from tests.domain.conftest import World, make_settings


def identify(user: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits}


async def known(world: World, n: int) -> None:
    await world.send(*(identify(f"u{i}", email=f"u{i}@x.io") for i in range(n)))


def calls(world: World) -> dict[str, int]:
    return dict(world.pardot.calls)


async def test_updates_of_known_prospects_go_by_one_import_and_creates_by_batches() -> None:
    world = World(make_settings(api_version=4))
    await known(world, 4)
    before = calls(world)
    outcomes = await world.send(
        *(identify(f"u{i}", first_name=f"N{i}") for i in range(4)),
        identify("new", email="new@x.io", first_name="New"),
    )
    assert all(isinstance(o, Delivered) for o in outcomes)
    assert {o.via for o in outcomes if isinstance(o, Delivered)} == {"import 701", ""}
    assert [p.fields.get("first_name") for p in world.pardot.prospects()] == [
        "N0", "N1", "N2", "N3", "New"
    ]  # fmt: skip
    spent = {k: v - before.get(k, 0) for k, v in calls(world).items() if v != before.get(k, 0)}
    assert spent.get("import/create") == 1 and spent.get("import/batch") == 1
    assert "batchUpdate" not in spent and "batchUpsert" not in spent


async def test_an_account_that_refuses_imports_warns_once_and_writes_by_batches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(make_settings(api_version=4))
    world.pardot.import_enabled = False
    await known(world, 3)
    with caplog.at_level(logging.WARNING):
        for round_ in range(2):
            outcomes = await world.send(
                *(identify(f"u{i}", company=f"p{round_}") for i in range(3))
            )
            assert all(isinstance(o, Delivered) and not o.via for o in outcomes)
    warnings = [r for r in caplog.records if "imports unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert world.service.imports is not None and world.service.imports.unavailable
    assert [p.fields.get("company") for p in world.pardot.prospects()] == ["p1"] * 3


async def test_an_import_that_fails_before_it_is_submitted_leaves_its_rows_to_batches() -> None:
    world = World(make_settings(api_version=4))
    await known(world, 3)
    real = world.pardot.add_import_batch

    async def refused(import_id: int, data: bytes) -> None:
        raise RetryableError("Pardot is busy", code=66)

    world.pardot.add_import_batch = refused  # type: ignore[method-assign]
    outcomes = await world.send(*(identify(f"u{i}", company="pro") for i in range(3)))
    assert all(isinstance(o, Delivered) and not o.via for o in outcomes)
    assert [p.fields.get("company") for p in world.pardot.prospects()] == ["pro"] * 3
    world.pardot.add_import_batch = real  # type: ignore[method-assign]
    assert world.service.imports is not None and not world.service.imports.unavailable


async def test_a_submitted_import_is_read_backing_off_until_complete_even_through_errors() -> None:
    world = World(make_settings(api_version=4))
    lane = world.service.imports
    assert lane is not None
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    lane.sleep, lane.polling = sleep, ImportPolling(5, 60)
    await known(world, 3)
    real, reads = world.pardot.read_import, 0

    async def slow(import_id: int) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise RetryableError("Pardot is busy", code=66)
        status = await real(import_id)
        # Pardot takes its time: Processing for the first six reads.
        return status if reads > 6 else type(status)(status.id, "Processing")

    world.pardot.read_import = slow  # type: ignore[method-assign]
    outcomes = await world.send(*(identify(f"u{i}", company="pro") for i in range(3)))
    assert all(isinstance(o, Delivered) and o.via == "import 701" for o in outcomes)
    assert waits == [5, 10, 20, 40, 60, 60, 60]
    assert lane.running == {} and lane.done == 1 and lane.rows_imported == 3


@pytest.mark.parametrize("taken", [True, False])
async def test_a_submit_whose_answer_is_lost_is_followed_if_pardot_took_it(taken: bool) -> None:
    """The submit errs (its answer lost, retries spent). Pardot may have taken it all the
    same: its state says. Taken, it is followed and its rows are not written again by batches
    (which the import, landing later, could overwrite after a newer event); not taken, it is
    abandoned and its rows go by batches."""
    world = World(make_settings(api_version=4))
    await known(world, 3)
    real = world.pardot.submit_import

    async def lost(import_id: int) -> Any:
        if taken:
            await real(import_id)
        raise RetryableError("the answer never came", code=None)

    world.pardot.submit_import = lost  # type: ignore[method-assign]
    before = calls(world)
    outcomes = await world.send(*(identify(f"u{i}", company="pro") for i in range(3)))
    spent = {k: v - before.get(k, 0) for k, v in calls(world).items() if v != before.get(k, 0)}
    vias = {o.via for o in outcomes if isinstance(o, Delivered)}
    assert len(outcomes) == 3 and all(isinstance(o, Delivered) for o in outcomes)
    assert [p.fields.get("company") for p in world.pardot.prospects()] == ["pro"] * 3
    if taken:
        assert vias == {"import 701"} and "batch" not in spent
    else:
        assert vias == {""} and spent.get("batch") == 1
    assert spent.get("import/read", 0) >= 1  # the state that told
