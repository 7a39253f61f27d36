"""The account's 1,000 import files a day, budgeted like calls (issue 23): an import whose
files would not fit in what is left of the account's day goes by batches, with one warning
a day; files reserved for an import Pardot refused to create are given back."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.pardot_budget import InMemoryApiCallCounts
from domain.errors import RetryableError
from domain.import_files import ImportFileBudget
from domain.sync import Delivered
from tests.domain.conftest import World, make_settings


def identify(user: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # 23:00 on March 1st in LA

    def __call__(self) -> datetime:
        return self.now


async def world_with_files(files: int, clock: Clock | None = None) -> tuple[World, Any]:
    world = World(make_settings(api_version=4))
    await world.send(*(identify(f"u{i}", email=f"u{i}@x.io") for i in range(3)))
    lane = world.service.imports
    assert lane is not None
    lane.file_budget = ImportFileBudget(
        InMemoryApiCallCounts(),
        limit=files,
        zone=ZoneInfo("America/Los_Angeles"),
        clock=clock or Clock(),
    )
    return world, lane


async def test_an_import_whose_files_do_not_fit_the_day_goes_by_batches_warning_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    world, lane = await world_with_files(2, clock)
    with caplog.at_level(logging.WARNING):
        for round_ in range(4):
            outcomes = await world.send(
                *(identify(f"u{i}", company=f"c{round_}") for i in range(3))
            )
            assert all(isinstance(o, Delivered) for o in outcomes)
    vias = [o.via for o in outcomes if isinstance(o, Delivered)]
    assert vias == ["", "", ""]  # the last rounds went by batches
    assert world.pardot.calls["import/create"] == 2  # one file each: two fit in the day
    assert await lane.file_budget.used() == 2
    warnings = [r for r in caplog.records if "import files" in r.getMessage()]
    assert len(warnings) == 1
    assert [p.fields.get("company") for p in world.pardot.prospects()] == ["c3"] * 3
    # The account's midnight (Los Angeles): a new day of files, and of warnings.
    clock.now += timedelta(hours=1, minutes=1)
    outcomes = await world.send(*(identify(f"u{i}", company="next") for i in range(3)))
    assert {o.via for o in outcomes if isinstance(o, Delivered)} != {""}
    assert world.pardot.calls["import/create"] == 3


async def test_files_reserved_for_an_import_pardot_refused_to_create_are_given_back() -> None:
    world, lane = await world_with_files(1)

    async def busy(*_: Any, **__: Any) -> Any:
        raise RetryableError("Pardot is busy", code=66)

    real = world.pardot.create_import
    world.pardot.create_import = busy  # type: ignore[method-assign]
    outcomes = await world.send(*(identify(f"u{i}", company="a") for i in range(3)))
    assert all(isinstance(o, Delivered) and not o.via for o in outcomes)
    assert await lane.file_budget.used() == 0
    world.pardot.create_import = real  # type: ignore[method-assign]
    outcomes = await world.send(*(identify(f"u{i}", company="b") for i in range(3)))
    assert all(isinstance(o, Delivered) and o.via for o in outcomes)
    assert await lane.file_budget.used() == 1


@given(limit=st.integers(0, 30), asks=st.lists(st.integers(1, 12), max_size=12))
def test_reservations_never_overrun_the_day_and_take_what_fits(limit: int, asks: list[int]) -> None:
    async def run() -> None:
        budget = ImportFileBudget(InMemoryApiCallCounts(), limit=limit)
        used = 0
        for files in asks:
            taken = await budget.take(files)
            assert taken == (used + files <= limit)
            used += files if taken else 0
            assert await budget.used() == used <= limit

    asyncio.run(run())
