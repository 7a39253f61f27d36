"""Issue 23: the prospect index filled by Pardot's exports, over HTTP to the fake.

The fake writes export dates in its API user's zone (never the account's), runs exports one
at a time, and refuses `notes` in them, and custom fields unless `export_custom_fields` is set
(Pardot's docs do not list them as exportable). Each test compares with the index the paged
scan fills on the same account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.memory.pardot_budget import InMemoryApiCallCounts
from adapters.memory.prospect_index import InMemoryProspectIndex
from adapters.memory.prospect_store import InMemoryProspectStore
from contracts.fake_pardot import FakePardot
from domain.budget import DailyBudget
from domain.events import parse_event
from domain.index import IndexKeeper
from domain.index.export import ExportOptions
from domain.ports import BulkPardot, IndexState
from domain.prospect import Prospect
from domain.sync import UNCHANGED, Delivered, SyncService
from tests.contracts.conftest import CUSTOM_FIELDS, Backend, open_backend
from tests.domain.conftest import make_settings

TIME = "%Y-%m-%d %H:%M:%S"
ACCOUNT = ZoneInfo("UTC")  # the fake's clock and stored times
ZONES = ("America/Los_Angeles", "Asia/Tokyo", "Pacific/Kiritimati", "UTC")
NOT_EXPORTED = frozenset({"notes", *CUSTOM_FIELDS})


def by_export(zone: str, **options: Any) -> ExportOptions:
    """Exports for any account (the costing is `domain.bulk_cost`'s, tested there)."""
    values: dict[str, Any] = {"first_wait": 0.001, "min_prospects": 1, **options}
    return ExportOptions(account_zone=ACCOUNT, export_zone=ZoneInfo(zone), **values)


async def fill(
    backend: Backend,
    exports: ExportOptions | None,
    *,
    budget: DailyBudget | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[IndexKeeper, list[Prospect], IndexState]:
    index = InMemoryProspectIndex()
    bulk: BulkPardot | None = backend.repo if exports is not None else None  # type: ignore[assignment]
    keeper = IndexKeeper(
        backend.repo, index, budget=budget, bulk=bulk, exports=exports, sleep=sleep
    )
    report = await keeper.rebuild()
    assert report.complete, report
    return keeper, await index.rows_after(0, 1_000_000), await index.state()


def ambiguous(account_time: str, zone: str) -> bool:
    """Whether the wall time an export writes for this moment happens twice in `zone` (the
    hour a clock goes back), so that a file's date cannot tell which was meant."""
    moment = datetime.strptime(account_time, TIME).replace(tzinfo=ACCOUNT)
    wall = moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    early, late = (wall.replace(tzinfo=ZoneInfo(zone), fold=f) for f in (0, 1))
    return early.utcoffset() != late.utcoffset()


def assert_same_index(
    scanned: list[Prospect], exported: list[Prospect], zone: str, *, carried: bool = False
) -> None:
    """Row by row the same, but for what exports cannot carry (marked unknown; rows read back
    by the refresh that ends the fill hold everything). A date in the hour a clock goes back
    is read as its earlier instant (never later than the truth)."""
    assert [p.id for p in exported] == [p.id for p in scanned]
    not_exported = frozenset({"notes"}) if carried else NOT_EXPORTED
    for scan, export in zip(scanned, exported, strict=True):
        assert export.unknown in (not_exported, frozenset())
        assert (export.email, export.fid) == (scan.email, scan.fid)
        known = {k: v for k, v in scan.fields.items() if k not in export.unknown}
        assert dict(export.fields) == known
        for name in ("updated_at", "created_at"):
            ours = getattr(export, name)
            truth = getattr(scan, name)
            if ours != truth and ambiguous(truth, zone):
                gap = datetime.strptime(truth, TIME) - datetime.strptime(ours, TIME)
                assert timedelta(0) < gap <= timedelta(hours=1)
            else:
                assert ours == truth


def seed_account(fake: FakePardot, rows: list[dict[str, Any]]) -> list[int]:
    ids = []
    for n, row in enumerate(rows):
        values = {k: v for k, v in row.items() if v not in ("", None)}
        ids.append(fake.seed_prospect(email=f"p{n}@example.com", **values))
    return ids


async def exporting_account(
    stack: AsyncExitStack, rows: list[dict[str, Any]], zone: str, *, carried: bool
) -> tuple[Backend, FakePardot]:
    """The fake over HTTP (v4) holding `rows`, its exports in `zone`, custom fields in them
    or refused."""
    backend = await open_backend(stack, "http", 4)
    fake = backend.fake
    assert fake is not None
    fake.export_user_time_zone = zone
    fake.export_custom_fields = carried
    seed_account(fake, rows)
    return backend, fake


moments = st.datetimes(min_value=datetime(2019, 1, 1), max_value=datetime(2026, 6, 1)).map(
    lambda moment: moment.replace(microsecond=0)
)
prospect_rows = st.fixed_dictionaries(
    {
        "updated_at": moments,
        "first_name": st.sampled_from(["", "Ada", "Zoë"]),
        "company": st.sampled_from(["", "Acme, Inc.", 'He said "hi"']),
        "is_do_not_email": st.sampled_from(["", "1"]),
        "score": st.sampled_from(["", "12"]),
        "notes": st.sampled_from(["", "two\nlines"]),
        "org_id": st.sampled_from(["", "o1"]),
        "salesforce_fid": st.sampled_from(["", "00Q000000000001AAA"]),
    }
).flatmap(
    lambda row: st.integers(0, 900 * 86_400).map(
        lambda earlier: {**row, "created_at": row["updated_at"] - timedelta(seconds=earlier)}
    )
)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(prospect_rows, max_size=25), zone=st.sampled_from(ZONES), carried=st.booleans()
)
def test_the_index_filled_by_exports_is_the_index_the_scan_fills(
    rows: list[dict[str, Any]], zone: str, carried: bool
) -> None:
    async def run() -> None:
        async with AsyncExitStack() as stack:
            backend, fake = await exporting_account(stack, rows, zone, carried=carried)
            _, scanned, scan_state = await fill(backend, None)
            calls = fake.total_calls
            _, exported, export_state = await fill(backend, by_export(zone))
            assert_same_index(scanned, exported, zone, carried=carried)
            assert export_state.high_water == scan_state.high_water
            assert export_state.complete and export_state.watermark_began is not None
            if rows:  # one export per year of updated_at, one after another
                span = max(r["updated_at"] for r in rows) - min(r["updated_at"] for r in rows)
                assert len(fake.exports.jobs) >= span / timedelta(days=366)
                # The first asked for custom fields; refused, it was asked again without.
                refused = 0 if carried else 1
                assert fake.calls["export/create"] == len(fake.exports.jobs) + refused
            else:
                # An empty account is the scan's: one call more, the size that says so.
                assert fake.total_calls - calls == calls + 1 and not fake.exports.jobs

    asyncio.run(run())


async def test_the_lookup_field_is_filled_by_the_scan_where_exports_refuse_custom_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        seed_account(fake, [{"org_id": f"o{n}"} for n in range(5)])
        keeper = IndexKeeper(
            backend.repo,
            InMemoryProspectIndex(),
            lookup_field="org_id",
            bulk=backend.repo,  # type: ignore[arg-type]
            exports=by_export("UTC"),
        )
        with caplog.at_level(logging.INFO):
            assert (await keeper.rebuild()).complete
        # One create asked for the lookup field and was refused (130): the scan filled.
        assert fake.calls["export/create"] == 1 and not fake.exports.jobs
        assert fake.calls["query"] > 1
        assert [p.id for p in await keeper.index.holding("o3")] != []
        refusals = [r for r in caplog.records if "refused custom fields" in r.getMessage()]
        # What Pardot's docs lead one to expect: said once, not as a warning.
        assert len(refusals) == 1 and refusals[0].levelno == logging.INFO
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # It is not asked again: the next fill goes straight to the scan.
        assert (await keeper.rebuild(restart=True)).complete
        assert fake.calls["export/create"] == 1


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(prospect_rows, max_size=20), zone=st.sampled_from(ZONES))
def test_exports_that_carry_custom_fields_fill_the_lookup_index_the_scan_fills(
    rows: list[dict[str, Any]], zone: str
) -> None:
    async def run() -> None:
        async with AsyncExitStack() as stack:
            backend, fake = await exporting_account(stack, rows, zone, carried=True)
            indexes = []
            for exports in (None, by_export(zone)):
                bulk = backend.repo if exports is not None else None
                keeper = IndexKeeper(
                    backend.repo, InMemoryProspectIndex(), lookup_field="org_id",
                    bulk=bulk, exports=exports,  # type: ignore[arg-type]
                )  # fmt: skip
                assert (await keeper.rebuild()).complete
                indexes.append(keeper.index)
            scanned = await indexes[0].rows_after(0, 1_000_000)
            exported = await indexes[1].rows_after(0, 1_000_000)
            assert_same_index(scanned, exported, zone, carried=True)
            holders = [sorted(p.id for p in await i.holding("o1")) for i in indexes]
            assert holders[0] == holders[1]
            assert len(holders[0]) == sum(r["org_id"] == "o1" for r in rows)
            assert len(fake.exports.jobs) == fake.calls.get("export/create", 0)
            assert bool(fake.exports.jobs) == bool(rows)

    asyncio.run(run())


def while_exporting(
    fake: FakePardot, act: Callable[[], Awaitable[None]]
) -> Callable[[float], Awaitable[None]]:
    """A sleep between an export's status reads that acts once its rows are taken."""
    done = False

    async def sleep(seconds: float) -> None:
        nonlocal done
        processing = any(job.state == "Processing" for job in fake.exports.jobs.values())
        if processing and not done:
            done = True
            await act()
        await asyncio.sleep(max(seconds, 0.02))

    return sleep


def changes_after_the_snapshot(
    fake: FakePardot, change: Callable[[], None]
) -> Callable[[float], Awaitable[None]]:
    """A sleep between status reads that, once the export is processing (its rows taken),
    makes `change` in Pardot, then lets the export finish."""

    async def act() -> None:
        change()

    return while_exporting(fake, act)


async def test_the_watermark_catches_changes_made_while_the_export_ran() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        fake.export_user_time_zone = "Asia/Tokyo"
        fake.export_rows_per_second = 100.0  # 30 rows: processing lasts 0.3 s
        now = fake.clock().replace(microsecond=0)
        # Within a year: one export, whose rows are taken before the marketer's changes.
        rows = [{"updated_at": now - timedelta(days=n * 10, hours=1)} for n in range(30)]
        edited, deleted, *_ = seed_account(fake, rows)

        def marketer() -> None:
            fake.update_record(fake.records[edited], {"first_name": "Changed"})
            fake.delete_prospect(deleted)
            fake.seed_prospect(email="new@example.com")

        _, exported, state = await fill(
            backend, by_export("Asia/Tokyo"), sleep=changes_after_the_snapshot(fake, marketer)
        )
        files = "".join(f for job in fake.exports.jobs.values() for f in job.files)
        assert "Changed" not in files and "new@example.com" not in files  # not in the export
        held = {p.id: p for p in exported}
        assert held[edited].fields.get("first_name") == "Changed"
        assert deleted not in held
        assert "new@example.com" in {p.email for p in exported}
        # The watermark is the refresh's, from Pardot's query, not the export's dates.
        assert state.high_water is not None
        assert state.high_water >= fake.records[edited].updated_at.strftime(TIME)
        _, scanned, _ = await fill(backend, None)
        assert_same_index(scanned, exported, "Asia/Tokyo")


async def test_export_dates_read_in_the_wrong_zone_keep_a_deleted_prospect() -> None:
    """Files in Tokyo's zone read as UTC put every change nine hours late: a prospect deleted
    within those hours looks changed after its deletion, so the refresh keeps it. Read in
    the right zone it goes."""
    outcomes = {}
    for configured in ("Asia/Tokyo", "UTC"):
        async with AsyncExitStack() as stack:
            backend = await open_backend(stack, "http", 4)
            fake = backend.fake
            assert fake is not None
            fake.export_user_time_zone = "Asia/Tokyo"
            fake.export_rows_per_second = 100.0
            now = fake.clock().replace(microsecond=0)
            gone, *_ = seed_account(fake, [{"updated_at": now - timedelta(hours=1)}] * 10)
            _, exported, _ = await fill(
                backend,
                by_export(configured),
                sleep=changes_after_the_snapshot(fake, partial(fake.delete_prospect, gone)),
            )
            outcomes[configured] = gone in {p.id for p in exported}
    assert outcomes == {"Asia/Tokyo": False, "UTC": True}


async def test_a_failed_export_leaves_the_fill_to_the_scan_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        seed_account(fake, [{"first_name": f"P{n}"} for n in range(12)])
        _, scanned, _ = await fill(backend, None)
        fake.export_failures = 1
        with caplog.at_level(logging.WARNING):
            keeper, filled, state = await fill(backend, by_export("America/Los_Angeles"))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "failed" in warnings[0].getMessage()
        assert [job.state for job in fake.exports.jobs.values()] == ["Failed"]
        assert filled == scanned and state.complete  # the scan's rows: every column held
        # The keeper does not try again: its next fill is the scan's, without a warning.
        await keeper.index.clear()
        assert (await keeper.rebuild()).complete
        assert len(fake.exports.jobs) == 1
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_exports_and_their_status_reads_count_against_the_budget() -> None:
    counts = InMemoryApiCallCounts()
    budget = DailyBudget(counts, limit=25_000)
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4, on_call=budget.count_call)
        fake = backend.fake
        assert fake is not None
        fake.export_queue_delay = 0.2  # a few status reads
        now = fake.clock().replace(microsecond=0)
        seed_account(fake, [{"updated_at": now - timedelta(days=n * 100)} for n in range(20)])
        await fill(backend, by_export("America/Los_Angeles"), budget=budget)
        assert fake.calls["export/read"] >= 2 and fake.calls["export/downloadResults"] >= 2
        assert (await budget.usage()).used == fake.total_calls


async def test_a_budget_short_of_the_exports_pauses_the_fill_and_never_overruns() -> None:
    counts = InMemoryApiCallCounts()
    budget = DailyBudget(counts, limit=10)  # scans use at most 9 of them
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4, on_call=budget.count_call)
        fake = backend.fake
        assert fake is not None
        fake.export_queue_delay = 0.3
        now = fake.clock().replace(microsecond=0)
        seed_account(fake, [{"updated_at": now - timedelta(days=n * 100)} for n in range(20)])
        keeper = IndexKeeper(
            backend.repo,
            InMemoryProspectIndex(),
            budget=budget,
            bulk=backend.repo,  # type: ignore[arg-type]
            exports=by_export("America/Los_Angeles"),
        )
        report = await keeper.rebuild()
        assert not report.complete and "budget" in report.reason
        assert fake.total_calls <= 9
        assert not (await keeper.index.state()).complete


async def test_both_adapters_fill_by_export_the_index_the_scan_fills(v4: Backend) -> None:
    for n in range(6):
        v4.seed(f"p{n}@example.com", first_name=f"P{n}", org_id=f"o{n}", notes="private")
    _, scanned, _ = await fill(v4, None)
    _, exported, _ = await fill(v4, by_export("America/Los_Angeles"))
    assert_same_index(scanned, exported, "America/Los_Angeles")
    assert any(p.unknown == NOT_EXPORTED for p in exported)  # filled by exports


async def test_a_value_no_export_carries_is_written_never_taken_as_held() -> None:
    """An event clearing a custom field Pardot holds: an index filled by exports does not
    know the field, so it writes the blank rather than judge it already held."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        fake = backend.fake
        assert fake is not None
        past = fake.clock().replace(microsecond=0) - timedelta(days=3)
        rows = [{"org_id": "o1", "notes": "private", "updated_at": past + timedelta(hours=n)}
                for n in range(3)]  # fmt: skip
        [held, *_] = seed_account(fake, rows)  # the oldest: not read back by the refresh
        keeper, _, _ = await fill(backend, by_export("America/Los_Angeles"))
        assert (await keeper.index.by_ids([held]))[held].unknown == NOT_EXPORTED
        service = SyncService(
            backend.repo, make_settings(api_version=4), InMemoryProspectStore(), index=keeper
        )
        event = {
            "type": "identify",
            "messageId": "m1",
            "userId": "u1",
            "timestamp": "2026-01-01T00:00:00Z",
            "receivedAt": datetime.now(UTC).isoformat(),
            "traits": {"email": "p0@example.com", "org_id": "", "notes": ""},
        }
        [outcome] = await service.sync([parse_event(event)])
        assert isinstance(outcome, Delivered) and outcome.reason != UNCHANGED, outcome
        prospect = fake.get_prospect(held)
        assert prospect is not None
        assert prospect.get("org_id") is None and prospect.get("notes") is None


async def test_a_lookup_field_set_after_an_export_fill_has_the_index_scanned_again() -> None:
    """Rows an export filled lack the custom fields: their lookup values cannot be computed
    from them, so the index is not ready until a scan filled it again."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        past = backend.fake.clock().replace(microsecond=0) - timedelta(days=3)
        seed_account(backend.fake, [{"org_id": f"o{n}", "updated_at": past} for n in range(5)])
        backend.fake.seed_prospect(email="late@example.com", org_id="o9")  # read back whole
        exported, _, _ = await fill(backend, by_export("America/Los_Angeles"))
        keeper = IndexKeeper(backend.repo, exported.index, lookup_field="org_id")
        assert not await keeper.ready()
        assert (await keeper.rebuild()).complete and await keeper.ready()
        assert [p.email for p in await keeper.index.holding("o3")] == ["p3@example.com"]
