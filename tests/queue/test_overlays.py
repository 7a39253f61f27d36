"""The dry run's overlays: they read through to the real store, index and call counts, show
their own writes, and leave the real ones exactly as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.memory.overlay_index import OverlayProspectIndex
from adapters.memory.overlay_store import OverlayApiCallCounts, OverlayProspectStore
from adapters.sqlite.pardot_budget import SQLiteApiCallCounts
from adapters.sqlite.prospect_index import SQLiteProspectIndex
from adapters.sqlite.prospect_store import SQLiteProspectStore
from domain.ports import FieldStamp, IndexState
from domain.prospect import Prospect

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def prospect(pid: int, email: str, **fields: Any) -> Prospect:
    return Prospect(pid, email, fields.pop("fid", None), ("2026-01-01 00:00:00", 0), fields)


async def test_the_store_overlay_reads_through_and_keeps_its_writes(tmp_path: Path) -> None:
    real = SQLiteProspectStore(tmp_path / "store.db")
    await real.link({"user:u1": "1001", "user:u2": "1002"})
    await real.record("1001", {"first_name": FieldStamp("Ada", T0)})
    overlay = OverlayProspectStore(real)

    await overlay.link({"user:u3": "1003"})
    await overlay.unlink(["user:u2"])
    await overlay.record("1001", {"first_name": FieldStamp("Old", T0 - timedelta(hours=1))})
    await overlay.record("1001", {"last_name": FieldStamp("Lovelace", T0)})
    async with overlay.create_lock("ada@example.com"):
        pass

    found = await overlay.links(["user:u1", "user:u2", "user:u3"])
    assert found == {"user:u1": "1001", "user:u3": "1003"}
    assert await overlay.stamps("1001") == {
        "first_name": FieldStamp("Ada", T0),  # an older stamp loses, as in the real store
        "last_name": FieldStamp("Lovelace", T0),
    }
    assert await real.links(["user:u2", "user:u3"]) == {"user:u2": "1002"}
    assert await real.stamps("1001") == {"first_name": FieldStamp("Ada", T0)}
    await real.close()


async def test_the_index_overlay_reads_through_and_keeps_its_changes(tmp_path: Path) -> None:
    real = SQLiteProspectIndex(tmp_path / "index.db")
    await real.put(
        [(prospect(1, "a@x.example", fid="00Q000000000001AAA"), "o1"),
         (prospect(2, "a@x.example"), None),
         (prospect(3, "c@x.example"), "o3")]
    )  # fmt: skip
    await real.save_state(IndexState(complete=True, high_water="2026-01-01 00:00:00"))
    overlay = OverlayProspectIndex(real)

    await overlay.put([(prospect(2, "b@x.example"), "o1"), (prospect(9, "a@x.example"), None)])
    await overlay.drop([3])
    await overlay.save_state(IndexState(complete=True, high_water="2026-01-02 00:00:00"))

    emails = await overlay.by_emails(["A@x.example", "b@x.example", "c@x.example"])
    assert {e: [p.id for p in ps] for e, ps in emails.items()} == {
        "a@x.example": [1, 9],  # 2 moved to b@ in this run
        "b@x.example": [2],
    }
    assert [p.id for p in await overlay.holding("o1")] == [1, 2]
    assert await overlay.holding("o3") == []
    assert set(await overlay.by_ids([1, 2, 3, 9])) == {1, 2, 9}
    assert (await overlay.by_fid("00Q000000000001AAA")) == (await real.by_fid("00Q000000000001AAA"))
    assert await overlay.count() == 3
    assert (await overlay.state()).high_water == "2026-01-02 00:00:00"

    assert await real.count() == 3 and (await real.state()).high_water == "2026-01-01 00:00:00"
    assert [p.id for p in (await real.by_emails(["a@x.example"]))["a@x.example"]] == [1, 2]
    await real.close()


async def test_calls_counted_in_the_overlay_never_reach_the_real_budget(tmp_path: Path) -> None:
    real = SQLiteApiCallCounts(tmp_path / "counts.db")
    await real.add("2026-01-01", 10)
    overlay = OverlayApiCallCounts(real)
    assert await overlay.add("2026-01-01", 5) == 15
    assert await overlay.used("2026-01-01") == 15 and await real.used("2026-01-01") == 10
    await real.close()
