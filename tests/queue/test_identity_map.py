"""The identity map's contract, held by the in-memory fake and the SQLite store alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters.identity_memory import InMemoryIdentityMap
from adapters.identity_sqlite import SQLiteIdentityMap

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
async def identities(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryIdentityMap()
    else:
        store = SQLiteIdentityMap(tmp_path / "identities.db")
        yield store
        await store.close()


async def test_unknown_identities_know_nothing(identities: Any) -> None:
    assert await identities.prospect_id("u1") is None
    assert await identities.field_times("u1") == {}


async def test_the_latest_prospect_id_is_remembered(identities: Any) -> None:
    await identities.remember("u1", 7)
    await identities.remember("u2", 8)
    await identities.remember("u1", 9)
    assert (await identities.prospect_id("u1"), await identities.prospect_id("u2")) == (9, 8)


async def test_field_times_keep_the_newest_time_per_field(identities: Any) -> None:
    await identities.record_field_times("u1", {"email": T0, "company": T0})
    await identities.record_field_times(
        "u1", {"email": T0 - timedelta(seconds=1), "company": T0 + timedelta(microseconds=1)}
    )
    await identities.record_field_times("u2", {"email": T0 + timedelta(days=1)})
    assert await identities.field_times("u1") == {
        "email": T0,
        "company": T0 + timedelta(microseconds=1),
    }


async def test_times_in_other_zones_compare_as_instants(identities: Any) -> None:
    paris = timezone(timedelta(hours=2))
    await identities.record_field_times("u1", {"email": T0})
    await identities.record_field_times("u1", {"email": T0.astimezone(paris) - timedelta(hours=1)})
    assert await identities.field_times("u1") == {"email": T0}


async def test_nothing_recorded_changes_nothing(identities: Any) -> None:
    await identities.record_field_times("u1", {})
    assert await identities.field_times("u1") == {}


async def test_sqlite_identities_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "identities.db"
    first = SQLiteIdentityMap(path)
    await first.remember("u1", 7)
    await first.record_field_times("u1", {"email": T0})
    await first.close()

    again = SQLiteIdentityMap(path)
    assert await again.prospect_id("u1") == 7
    assert await again.field_times("u1") == {"email": T0}
    await again.close()
