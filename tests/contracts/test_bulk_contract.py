"""The bulk lane (Pardot's Import and Export APIs), alike in memory and over HTTP to the fake.

Facts from Pardot's Import and Export pages (PARDOT_API.md, "Bulk: Import and Export").
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapters.pardot.in_memory import InMemoryPardot
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from domain.errors import BulkLimitExceeded, ImportUnavailable, PermanentPardotError
from domain.ports import (
    BULK_BATCH_BYTES,
    ExportRequest,
    ExportStatus,
    ImportColumn,
    ImportStatus,
    export_time,
)
from tests.contracts.conftest import Backend, open_backend

USER_ZONE = ZoneInfo("America/Los_Angeles")  # the API user's zone, not the account's (UTC)


async def finished_import(backend: Backend, import_id: int) -> ImportStatus:
    for _ in range(500):
        status = await backend.repo.read_import(import_id)  # type: ignore[attr-defined]
        if status.state == "Complete":
            return status
        await asyncio.sleep(0.01)
    raise AssertionError("the import never completed")


async def finished_export(backend: Backend, export_id: int) -> ExportStatus:
    for _ in range(500):
        status = await backend.repo.read_export(export_id)  # type: ignore[attr-defined]
        if status.state == "Complete":
            return status
        await asyncio.sleep(0.01)
    raise AssertionError("the export never completed")


async def run_import(
    backend: Backend, columns: list[ImportColumn], csv_text: str, *, restore: bool = False
) -> ImportStatus:
    repo = backend.repo
    created = await repo.create_import(columns, restore_deleted=restore)  # type: ignore[attr-defined]
    assert created.state == "Open"
    await repo.add_import_batch(created.id, csv_text.encode())  # type: ignore[attr-defined]
    submitted = await repo.submit_import(created.id)  # type: ignore[attr-defined]
    assert submitted.state in ("Waiting", "Processing", "Complete")
    return await finished_import(backend, created.id)


def field_of(backend: Backend, prospect_id: int, name: str) -> object:
    async def read() -> object:
        prospect = await backend.repo.read_by_id(prospect_id)
        assert prospect is not None
        return prospect.fields.get(name)

    return read()


def for_user_zone(backend: Backend) -> None:
    if backend.fake is not None:
        backend.fake.export_user_time_zone = "America/Los_Angeles"


async def test_a_v3_import_updates_by_email_and_creates_the_rest(v3: Backend) -> None:
    known = v3.seed("known@example.com", first_name="Old", company="Acme")
    status = await run_import(
        v3,
        [ImportColumn("email"), ImportColumn("first_name")],
        "email,first_name\nknown@example.com,New\nfresh@example.com,Fresh\n",
    )
    assert (status.created, status.updated, status.failed) == (1, 1, 0)
    assert await field_of(v3, known, "first_name") == "New"
    assert await field_of(v3, known, "company") == "Acme"  # a column not sent is untouched
    [fresh] = await v3.repo.read_by_email("fresh@example.com")
    assert fresh.fields.get("first_name") == "Fresh"


async def test_an_overwrite_false_column_only_fills_new_prospects(v3: Backend) -> None:
    known = v3.seed("known@example.com", source="Webinar")
    status = await run_import(
        v3,
        [ImportColumn("email"), ImportColumn("source", overwrite=False)],
        "email,source\nknown@example.com,Import\nfresh@example.com,Import\n",
    )
    assert (status.created, status.updated) == (1, 1)
    assert await field_of(v3, known, "source") == "Webinar"
    [fresh] = await v3.repo.read_by_email("fresh@example.com")
    assert fresh.fields.get("source") == "Import"


async def test_a_v4_import_updates_by_id_and_skips_rows_without_one(v4: Backend) -> None:
    known = v4.seed("known@example.com", first_name="Old")
    before = sorted(v4.emails())
    status = await run_import(
        v4,
        [ImportColumn("prospect_id"), ImportColumn("email"), ImportColumn("first_name")],
        f"prospect_id,email,first_name\n{known},known@example.com,New\n"
        ",nobody@example.com,Nobody\n",
    )
    assert (status.created, status.updated, status.failed) == (0, 1, 1)
    assert await field_of(v4, known, "first_name") == "New"
    assert sorted(v4.emails()) == before  # v4 imports never create
    [error] = await v4.repo.import_errors(status.id)  # type: ignore[attr-defined]
    assert error.row["email"] == "nobody@example.com" and error.reason


async def test_blank_cells_clear_unless_null_overwrite_is_off(v4: Backend) -> None:
    known = v4.seed("known@example.com", company="Acme", job_title="CEO")
    await run_import(
        v4,
        [
            ImportColumn("prospect_id"),
            ImportColumn("company", null_overwrite=False),
            ImportColumn("job_title"),
        ],
        f"prospect_id,company,job_title\n{known},,\n",
    )
    assert await field_of(v4, known, "company") == "Acme"
    assert await field_of(v4, known, "job_title") in (None, "")


async def test_failed_rows_come_back_with_pardots_reason(v3: Backend) -> None:
    status = await run_import(
        v3,
        [ImportColumn("email"), ImportColumn("first_name")],
        "email,first_name\nnot-an-email,Broken\ngood@example.com,Good\n",
    )
    assert (status.created, status.failed) == (1, 1)
    [error] = await v3.repo.import_errors(status.id)  # type: ignore[attr-defined]
    assert error.row == {"email": "not-an-email", "first_name": "Broken"}
    assert "email" in error.reason.lower()


async def test_recycle_bin_rows_are_skipped_unless_restore_deleted(v4: Backend) -> None:
    gone = v4.seed("gone@example.com", first_name="Old")
    v4.delete(gone)
    csv_text = f"prospect_id,first_name\n{gone},Back\n"
    columns = [ImportColumn("prospect_id"), ImportColumn("first_name")]
    skipped = await run_import(v4, columns, csv_text)
    assert (skipped.updated, skipped.failed) == (0, 1)
    assert await v4.repo.read_by_id(gone) is None
    restored = await run_import(v4, columns, csv_text, restore=True)
    assert restored.updated == 1
    assert await field_of(v4, gone, "first_name") == "Back"


async def test_an_account_without_imports_refuses_with_its_own_error(v4: Backend) -> None:
    if v4.fake is not None:
        v4.fake.import_enabled = False
    else:
        assert isinstance(v4.repo, InMemoryPardot)
        v4.repo.import_enabled = False
    with pytest.raises(ImportUnavailable):
        await v4.repo.create_import([ImportColumn("prospect_id")])  # type: ignore[attr-defined]


async def test_a_batch_of_10_mb_and_an_eleventh_batch_are_refused(v4: Backend) -> None:
    known = v4.seed("known@example.com")
    created = await v4.repo.create_import([])  # type: ignore[attr-defined]
    row = f"{known},{'x' * 80}\n"
    huge = ("prospect_id,comments\n" + row * (BULK_BATCH_BYTES // len(row) + 1)).encode()
    with pytest.raises(BulkLimitExceeded):
        await v4.repo.add_import_batch(created.id, huge)  # type: ignore[attr-defined]
    small = f"prospect_id,comments\n{known},hello\n".encode()
    for _ in range(10):
        await v4.repo.add_import_batch(created.id, small)  # type: ignore[attr-defined]
    with pytest.raises(BulkLimitExceeded) as refused:
        await v4.repo.add_import_batch(created.id, small)  # type: ignore[attr-defined]
    assert refused.value.code == 160


async def test_an_export_returns_the_range_with_dates_in_the_users_zone(v4: Backend) -> None:
    for_user_zone(v4)
    ids = [v4.seed(f"p{n}@example.com", first_name=f"P{n}") for n in range(3)]
    prospects = [await v4.repo.read_by_id(i) for i in ids]
    stamps = [
        datetime.strptime(p.updated_at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for p in prospects
        if p is not None
    ]
    # After the first prospect's own second: the other two only (bounds are exclusive).
    request = ExportRequest(
        ("id", "email", "first_name", "updated_at"), updated_after=stamps[0], zone=USER_ZONE
    )
    created = await v4.repo.create_export(request)  # type: ignore[attr-defined]
    done = await finished_export(v4, created.id)
    rows = []
    for ref in done.files:
        rows += await v4.repo.download_export(ref)  # type: ignore[attr-defined]
    by_id = {int(row["id"]): row for row in rows}
    assert sorted(by_id) == ids[1:]
    for prospect_id, stamp in zip(ids[1:], stamps[1:], strict=True):
        assert export_time(by_id[prospect_id]["updated_at"], USER_ZONE) == stamp
        assert by_id[prospect_id]["updated_at"] != stamp.strftime("%Y-%m-%d %H:%M:%S")


async def test_an_export_longer_than_a_year_is_refused(v4: Backend) -> None:
    prospect = await v4.repo.read_by_id(v4.seed("one@example.com"))
    assert prospect is not None
    # Pardot's "now" (the store's clock), which is not this host's in memory.
    now = datetime.strptime(prospect.updated_at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    too_long = [
        ExportRequest(("id",), updated_after=now - timedelta(days=400), zone=USER_ZONE),
        ExportRequest(
            ("id",),
            updated_after=now - timedelta(days=800),
            updated_before=now - timedelta(days=300),
            zone=USER_ZONE,
        ),
    ]
    for request in too_long:
        with pytest.raises(PermanentPardotError) as refused:
            await v4.repo.create_export(request)  # type: ignore[attr-defined]
        assert refused.value.code == 177


def carry_custom_fields(backend: Backend, carried: bool) -> None:
    pardot = backend.fake if backend.fake is not None else backend.repo
    pardot.export_custom_fields = carried  # type: ignore[union-attr]


@pytest.mark.parametrize("carried", [False, True])
async def test_custom_fields_are_exported_only_where_the_account_allows(
    v4: Backend, carried: bool
) -> None:
    """Pardot's docs list no custom field as exportable: refused with 130 by default, carried
    where the knob says Pardot does. More than 150 fields are refused either way."""
    carry_custom_fields(v4, carried)
    first = await v4.repo.read_by_id(v4.seed("one@example.com", org_id="o1"))
    assert first is not None
    stamp = datetime.strptime(first.updated_at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    after = stamp - timedelta(hours=1)
    request = ExportRequest(("id", "email", "org_id"), updated_after=after, zone=USER_ZONE)
    if not carried:
        with pytest.raises(PermanentPardotError) as refused:
            await v4.repo.create_export(request)  # type: ignore[attr-defined]
        assert refused.value.code == 130
    else:
        created = await v4.repo.create_export(request)  # type: ignore[attr-defined]
        done = await finished_export(v4, created.id)
        [ref] = done.files
        rows = await v4.repo.download_export(ref)  # type: ignore[attr-defined]
        assert [(row["id"], row["org_id"]) for row in rows] == [(str(first.id), "o1")]
    too_many = ExportRequest(("id",) + ("email",) * 150, updated_after=after, zone=USER_ZONE)
    with pytest.raises(PermanentPardotError) as refused:
        await v4.repo.create_export(too_many)  # type: ignore[attr-defined]
    assert refused.value.code == 130


async def test_exports_finish_one_at_a_time_oldest_first(v4: Backend) -> None:
    prospect = await v4.repo.read_by_id(v4.seed("one@example.com"))
    assert prospect is not None
    stamp = datetime.strptime(prospect.updated_at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    request = ExportRequest(("id",), updated_after=stamp - timedelta(hours=1), zone=USER_ZONE)
    first = await v4.repo.create_export(request)  # type: ignore[attr-defined]
    second = await v4.repo.create_export(request)  # type: ignore[attr-defined]
    await finished_export(v4, second.id)
    assert (await v4.repo.read_export(first.id)).state == "Complete"  # type: ignore[attr-defined]


async def test_every_bulk_call_is_counted_like_any_call() -> None:
    """The budget hook hears of each bulk request, downloads and status reads included."""
    heard: list[str] = []

    async def on_call(operation: str) -> None:
        heard.append(operation.split("/")[0])

    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 3, on_call=on_call)
        status = await run_import(
            backend, [ImportColumn("email")], "email\nnew@example.com\nbroken\n"
        )
        await backend.repo.import_errors(status.id)  # type: ignore[attr-defined]
        assert backend.fake is not None
        assert heard[:3] == ["create", "batch", "update"]
        assert heard[3:-1] == ["read"] * (len(heard) - 4) and heard[-1] == "downloadErrors"
        assert backend.fake.budget_used[DEFAULT_BUSINESS_UNIT_ID] == len(heard)


async def test_a_submit_whose_answer_was_lost_is_found_submitted() -> None:
    """Pardot took the submit but a proxy ate the answer: the retry's 155 ("must be Open")
    is read as done, not as a failure."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 3)
        assert backend.fake is not None
        repo = backend.repo
        created = await repo.create_import([])  # type: ignore[attr-defined]
        await repo.add_import_batch(created.id, b"email\na@example.com\n")  # type: ignore[attr-defined]
        backend.fake.answer_next(1, "gateway", after_call=True, operation="import/update")
        submitted = await repo.submit_import(created.id)  # type: ignore[attr-defined]
        assert submitted.state != "Open"
        assert (await finished_import(backend, created.id)).created == 1


async def test_an_answer_that_is_not_pardots_is_retried_not_believed() -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, "http", 4)
        assert backend.fake is not None
        created = await backend.repo.create_import([])  # type: ignore[attr-defined]
        backend.fake.answer_next(1, "empty_object", operation="import/read")
        status = await backend.repo.read_import(created.id)  # type: ignore[attr-defined]
        assert status.state == "Open"
        assert backend.fake.calls["import/read"] == 2
