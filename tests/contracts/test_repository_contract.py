"""The behaviour every PardotRepository must have: in memory and over HTTP to the fake.

Where the two adapters disagree, one of them is wrong.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace

import pytest

from domain.errors import PermanentPardotError
from domain.ports import ProspectQuery, ProspectWrite
from tests.contracts.conftest import Backend, open_backend

FID = "00Q5e00000AbCdEfGH"


async def test_v3_upsert_by_email_creates_once_then_updates(v3: Backend) -> None:
    row = ProspectWrite("email", "ann@x.io", {"first_name": "Ann"}, {"campaign_id": "17"})
    assert await v3.repo.write_batch([row]) == [None]
    again = ProspectWrite("email", "ann@x.io", {"last_name": "Lee"}, {"campaign_id": "17"})
    assert await v3.repo.write_batch([again]) == [None]
    [prospect] = await v3.repo.read_by_email("ann@x.io")
    assert prospect.fields["first_name"] == "Ann" and prospect.fields["last_name"] == "Lee"
    assert v3.emails() == ["ann@x.io"]


async def test_v3_create_fields_apply_only_to_new_prospects(v3: Backend) -> None:
    existing = v3.seed("old@x.io", first_name="Old")
    rows = [
        ProspectWrite("email", "old@x.io", {"last_name": "Timer"}, {"campaign_id": "17"}),
        ProspectWrite("email", "new@x.io", {"last_name": "Comer"}, {"campaign_id": "17"}),
    ]
    assert await v3.repo.write_batch(rows) == [None, None]
    old = await v3.repo.read_by_id(existing)
    [new] = await v3.repo.read_by_email("new@x.io")
    assert old is not None and old.fields.get("campaign_id") != "17"
    assert old.fields["last_name"] == "Timer"
    assert new.fields["campaign_id"] == "17"


async def test_v4_read_by_email_returns_every_prospect_with_it(v4: Backend) -> None:
    a = v4.seed("pat@x.io", first_name="A")
    b = v4.seed("pat@x.io", first_name="B")
    v4.seed("other@x.io")
    found = await v4.repo.read_by_email("pat@x.io")
    assert sorted(p.id for p in found) == sorted([a, b])
    [single] = await v4.repo.read_by_email("other@x.io")
    assert single.email == "other@x.io"


async def test_v4_create_always_creates(v4: Backend) -> None:
    first = await v4.repo.create("pat@x.io", {"first_name": "One"})
    second = await v4.repo.create("pat@x.io", {"first_name": "Two"})
    assert first.id != second.id
    assert first.fields["first_name"] == "One"
    assert len(await v4.repo.read_by_email("pat@x.io")) == 2


async def test_v4_update_by_id_and_fid_touch_only_that_prospect(v4: Backend) -> None:
    by_id = v4.seed("pat@x.io")
    by_fid = v4.seed("pat@x.io", fid=FID)
    rows = [
        ProspectWrite("id", str(by_id), {"first_name": "Id"}, mode="update"),
        ProspectWrite("fid", FID, {"first_name": "Fid"}, mode="update"),
    ]
    assert await v4.repo.write_batch(rows) == [None, None]
    a = await v4.repo.read_by_id(by_id)
    b = await v4.repo.read_by_fid(FID)
    assert a is not None and a.fields["first_name"] == "Id"
    assert b is not None and b.id == by_fid and b.fields["first_name"] == "Fid"


async def test_batch_partial_failure_keeps_the_good_rows(v4: Backend) -> None:
    good = v4.seed("pat@x.io")
    rows = [
        ProspectWrite("id", str(good), {"first_name": "Kept"}, mode="update"),
        ProspectWrite("id", "999999", {"first_name": "Nobody"}, mode="update"),
        ProspectWrite("id", str(good), {"email": "not-an-email"}, mode="update"),
    ]
    errors = await v4.repo.write_batch(rows)
    assert errors[0] is None
    assert isinstance(errors[1], PermanentPardotError)
    assert isinstance(errors[2], PermanentPardotError)
    prospect = await v4.repo.read_by_id(good)
    assert prospect is not None and prospect.fields["first_name"] == "Kept"
    assert prospect.email == "pat@x.io"


async def test_not_found_reads_are_empty(v4: Backend) -> None:
    assert await v4.repo.read_by_id(424242) is None
    assert await v4.repo.read_by_fid("003000000000000AAA") is None
    assert await v4.repo.read_by_email("nobody@x.io") == []


async def test_invalid_email_is_permanent_with_code_4(v4: Backend) -> None:
    with pytest.raises(PermanentPardotError) as caught:
        await v4.repo.create("not an email", {})
    assert caught.value.code == 4


async def test_custom_fields_exist_or_are_ignored(v4: Backend) -> None:
    created = await v4.repo.create(
        "pat@x.io", {"org_id": "acme", "no_such_field": "x", "interests": ("golf", "chess")}
    )
    prospect = await v4.repo.read_by_id(created.id)
    assert prospect is not None
    assert prospect.field_text("org_id") == "acme"
    assert "no_such_field" not in prospect.fields
    assert prospect.fields["interests"] == ("golf", "chess")


async def test_an_empty_value_clears_a_field(v4: Backend) -> None:
    pid = v4.seed("pat@x.io", org_id="acme", first_name="Pat")
    assert await v4.repo.write_batch(
        [ProspectWrite("id", str(pid), {"org_id": "", "first_name": ""}, mode="update")]
    ) == [None]
    prospect = await v4.repo.read_by_id(pid)
    assert prospect is not None
    assert prospect.field_text("org_id") is None and prospect.field_text("first_name") is None


async def test_query_pages_by_ascending_id(v4: Backend) -> None:
    ids = [v4.seed(f"p{i}@x.io") for i in range(5)]
    first = await v4.repo.query(limit=2)
    assert [p.id for p in first] == ids[:2]
    rest = await v4.repo.query(id_greater_than=ids[1], limit=200)
    assert [p.id for p in rest] == ids[2:]
    offset = await v4.repo.query(limit=2, offset=4)
    assert [p.id for p in offset] == ids[4:]


async def test_the_latest_updated_prospect_is_identifiable(v4: Backend) -> None:
    older = v4.seed("pat@x.io")
    newer = v4.seed("pat@x.io")
    await v4.repo.write_batch(
        [ProspectWrite("id", str(older), {"first_name": "Touched"}, mode="update")]
    )
    found = await v4.repo.read_by_email("pat@x.io")
    latest = max(found, key=lambda p: (p.updated, p.id))
    assert latest.id == older != newer


# ---- the recycle bin: deleted prospects, and those merged away into another ------------


async def _ids(backend: Backend, query: ProspectQuery) -> list[int]:
    return [p.id for p in (await backend.repo.query_page(query)).prospects]


async def _latest_change(backend: Backend) -> str:
    """The newest `updated_at` Pardot shows now: a high-water mark taken from its answers."""
    page = await backend.repo.query_page(
        ProspectQuery(sort_by="updated_at", sort_order="descending", limit=1)
    )
    return page.prospects[0].updated_at


async def test_deleted_and_merged_prospects_answer_only_deleted_queries(v4: Backend) -> None:
    kept = v4.seed("kept@x.io")
    deleted = v4.seed("gone@x.io")
    survivor = v4.seed("pat@x.io")
    absorbed = v4.seed("pat.work@x.io")
    v4.delete(deleted)
    v4.merge(survivor, absorbed)
    assert await _ids(v4, ProspectQuery()) == [kept, survivor]
    assert await _ids(v4, ProspectQuery(deleted=True)) == [deleted, absorbed]
    page = await v4.repo.query_page(ProspectQuery(deleted=True, fields=("email",)))
    assert page.total == 2 and [p.email for p in page.prospects] == ["gone@x.io", "pat.work@x.io"]
    # Reads call them gone, as they call an id that never existed (3/4).
    assert await v4.repo.read_by_id(deleted) is None and await v4.repo.read_by_id(absorbed) is None
    assert await v4.repo.read_by_email("gone@x.io") == []
    assert v4.emails() == ["kept@x.io", "pat@x.io"]


async def test_a_deletion_is_a_change_updated_after_finds(v4: Backend) -> None:
    """Without `updated_at` moving on deletion, a client paging the recycle bin by its last
    mark would never learn of a prospect created before the mark and deleted after it."""
    before = [v4.seed(f"p{i}@x.io") for i in range(4)]
    mark = await _latest_change(v4)
    v4.delete(before[2])
    v4.merge(before[0], before[1])
    since = ProspectQuery(deleted=True, updated_after=mark, sort_by="updated_at")
    assert await _ids(v4, since) == [before[2], before[1]]  # in the order they were binned
    newest_first = replace(since, sort_order="descending")
    assert await _ids(v4, newest_first) == [before[1], before[2]]
    until = await _latest_change_in_bin(v4)
    assert await _ids(v4, ProspectQuery(deleted=True, updated_after=until)) == []
    assert await _ids(v4, ProspectQuery(deleted=True, updated_before=until)) == [before[2]]
    # The survivor changed too: a plain query since the mark has it, and only it.
    assert await _ids(v4, ProspectQuery(updated_after=mark)) == [before[0]]


async def _latest_change_in_bin(backend: Backend) -> str:
    page = await backend.repo.query_page(
        ProspectQuery(deleted=True, sort_by="updated_at", sort_order="descending", limit=1)
    )
    return page.prospects[0].updated_at


async def test_the_recycle_bin_pages_by_id(v4: Backend) -> None:
    ids = [v4.seed(f"p{i}@x.io") for i in range(6)]
    for prospect_id in ids[1:]:
        v4.delete(prospect_id)
    first = await v4.repo.query_page(ProspectQuery(deleted=True, limit=2))
    assert [p.id for p in first.prospects] == ids[1:3] and first.total == 5
    rest = ProspectQuery(deleted=True, id_greater_than=ids[2], id_less_than=ids[5])
    assert await _ids(v4, rest) == ids[3:5]
    assert await _ids(v4, ProspectQuery(id_greater_than=ids[0])) == []


async def test_a_merge_fills_only_the_survivors_empty_fields(v4: Backend) -> None:
    absorbed = v4.seed(
        "pat.work@x.io", fid=FID, first_name="Patricia", last_name="Lee", org_id="acme"
    )
    survivor = v4.seed("pat@x.io", first_name="Pat")
    v4.merge(survivor, absorbed)
    merged = await v4.repo.read_by_id(survivor)
    assert merged is not None and merged.email == "pat@x.io"
    by_fid = await v4.repo.read_by_fid(FID)  # the live holder, not the one in the bin
    assert by_fid is not None and by_fid.id == survivor
    assert merged.fields["first_name"] == "Pat" and merged.fields["last_name"] == "Lee"
    assert merged.field_text("org_id") == "acme"


async def test_an_update_by_id_of_a_deleted_prospect_fails_and_an_upsert_restores_it(
    v4: Backend,
) -> None:
    gone = v4.seed("gone@x.io", fid=FID)
    v4.delete(gone)
    [error] = await v4.repo.write_batch(
        [ProspectWrite("id", str(gone), {"first_name": "Nobody"}, mode="update")]
    )
    assert isinstance(error, PermanentPardotError) and error.code == 3
    # Pardot's upsert by id or fid "unarchives" a match in the recycle bin, then updates it.
    assert await v4.repo.write_batch(
        [ProspectWrite("fid", FID, {"first_name": "Back"}, mode="upsert")]
    ) == [None]
    restored = await v4.repo.read_by_id(gone)
    assert restored is not None and restored.fields["first_name"] == "Back"
    assert await _ids(v4, ProspectQuery(deleted=True)) == []
    assert v4.emails() == ["gone@x.io"]


@pytest.mark.parametrize("version", [3, 4])
async def test_delete_prospect_moves_it_to_the_recycle_bin_once(
    backend_kind: str, version: int
) -> None:
    """`do/delete/id/N` (PARDOT_API.md, "Delete"): the prospect answers only `deleted=true`
    queries afterwards; deleting it again, or an id Pardot never had, says False."""
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, backend_kind, version)
        gone = backend.seed("gone@x.io", first_name="Gone")
        kept = backend.seed("kept@x.io")
        assert await backend.repo.delete_prospect(gone) is True
        assert await backend.repo.read_by_id(gone) is None
        assert await backend.repo.read_by_email("gone@x.io") == []
        assert await _ids(backend, ProspectQuery(deleted=True)) == [gone]
        assert await _ids(backend, ProspectQuery()) == [kept]
        assert await backend.repo.delete_prospect(gone) is False
        assert await backend.repo.delete_prospect(999_999) is False
        assert backend.emails() == ["kept@x.io"]
