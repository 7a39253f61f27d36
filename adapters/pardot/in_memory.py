"""An in-memory Pardot with the real one's semantics, for domain tests and dry runs.

v3: one prospect per email. v4: many; upsert by email alone creates; there is no update
by email. Fields that do not exist in the account are ignored, as Pardot ignores them.
Deleted and merged-away prospects go to a recycle bin that only `deleted=true` queries see.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

from adapters.pardot.in_memory_bulk import InMemoryBulk, _Export, _Import
from domain.errors import ConfigurationError, PardotError, PermanentPardotError
from domain.ports import BATCH_LIMIT, ProspectPage, ProspectQuery, ProspectWrite
from domain.prospect import (
    STANDARD_FIELDS,
    CustomField,
    Fields,
    FieldValue,
    Prospect,
    normalise_email,
)

# Pardot's times have whole seconds in the account's zone; here every change takes the next
# second after this one, so `updated_at` orders changes as `updated` does.
EPOCH = datetime(2024, 1, 1)
_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass
class _Record:
    id: int
    email: str
    fid: str | None
    updated: int
    fields: dict[str, FieldValue] = field(default_factory=dict)
    created: int = 0


def pardot_time(tick: int) -> str:
    return (EPOCH + timedelta(seconds=tick)).strftime(_TIME)


class InMemoryPardot(InMemoryBulk):
    """A PardotRepository (and BulkPardot) that keeps prospects in a dict."""

    def __init__(
        self,
        *,
        version: int = 4,
        custom_fields: Iterable[str] | Mapping[str, str] = (),
        yields: Iterator[int] | None = None,
        import_enabled: bool = True,
        account_zone: tzinfo = UTC,
    ) -> None:
        """`custom_fields` names the account's custom fields, or maps them to their types
        (`Text`, `Number`, `Date`). `yields` says how often each call gives way to the event
        loop before it acts (default once), so tests can draw interleavings that reproduce.
        `import_enabled=False` refuses imports as such an account does; `account_zone` is the
        zone of the stored times (exports write theirs in the zone they are asked for).
        """
        if version not in (3, 4):
            raise ValueError("version must be 3 or 4")
        self._version = version
        types = custom_fields if isinstance(custom_fields, Mapping) else {}
        self.custom_field_types: dict[str, str] = {
            name: types.get(name, "Text") for name in custom_fields
        }
        self._yields = yields
        self._records: dict[int, _Record] = {}
        self._recycle_bin: dict[int, _Record] = {}  # deleted: only `deleted=true` queries
        self._ids = itertools.count(1001)
        self._clock = itertools.count(1)
        self.calls: dict[str, int] = {}
        self.import_enabled = import_enabled
        self.account_zone = account_zone
        self.bulk_imports: dict[int, _Import] = {}
        self.bulk_exports: dict[int, _Export] = {}
        self.export_failures = 0  # the next this many exports end Failed
        # Pardot's docs do not say custom fields can be exported: off, as in the fake.
        self.export_custom_fields = False
        self.batches_today = 0

    @property
    def api_version(self) -> int:
        return self._version

    async def detect_version(self) -> int:
        return self._version

    # Test helpers: not part of the port.
    def seed(self, email: str, *, fid: str | None = None, **fields: FieldValue) -> int:
        record = self._new(email, fid)
        self._apply(record, fields)
        return record.id

    def prospects(self) -> list[Prospect]:
        return [self._view(r) for r in sorted(self._records.values(), key=lambda r: r.id)]

    async def custom_fields(self) -> list[CustomField]:
        await self._count_async("customField")
        return [CustomField(n, t) for n, t in sorted(self.custom_field_types.items())]

    def update(self, prospect_id: int, **fields: FieldValue) -> None:
        """Test helper: a change made in Pardot by someone else (a marketer, a form)."""
        self._apply(self._records[prospect_id], fields)

    def delete(self, prospect_id: int) -> None:
        """Test helper: a marketer deleted the prospect in Pardot (deleting moves updated_at)."""
        record = self._records.pop(prospect_id)
        record.updated = next(self._clock)
        self._recycle_bin[prospect_id] = record

    def merge(self, survivor_id: int, absorbed_id: int) -> None:
        """Test helper: a marketer merged two prospects in Pardot. The survivor keeps its
        values and takes the absorbed one's where it has none; the absorbed one goes to the
        recycle bin. Both change, so both `updated_at` move."""
        if survivor_id == absorbed_id:
            raise ValueError("a prospect cannot be merged into itself")
        survivor, absorbed = self._records[survivor_id], self._records[absorbed_id]
        for name, value in absorbed.fields.items():
            if survivor.fields.get(name) in (None, "", ()):
                survivor.fields[name] = value
        survivor.fid = survivor.fid or absorbed.fid
        survivor.updated = next(self._clock)
        self.delete(absorbed_id)

    async def read_by_email(self, email: str) -> list[Prospect]:
        await self._count_async("read")
        return [self._view(r) for r in self._by_email(email)]

    async def read_by_id(self, prospect_id: int) -> Prospect | None:
        await self._count_async("read")
        record = self._records.get(prospect_id)
        return self._view(record) if record else None

    async def read_by_fid(self, fid: str) -> Prospect | None:
        await self._count_async("read")
        record = self._by_fid(fid)
        return self._view(record) if record else None

    async def create(self, email: str, fields: Fields) -> Prospect:
        await self._count_async("create")
        if normalise_email(email) is None:
            raise PermanentPardotError("Invalid prospect email address", code=4)
        if self._version == 3 and self._by_email(email):
            raise PermanentPardotError("Prospect email address already exists", code=9)
        record = self._new(email, None)
        self._apply(record, fields)
        return self._view(record)

    async def delete_prospect(self, prospect_id: int) -> bool:
        await self._count_async("delete")
        if prospect_id not in self._records:
            return False
        self.delete(prospect_id)
        return True

    async def write_batch(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        await self._count_async("batch")
        if len(writes) > BATCH_LIMIT:
            raise ConfigurationError(f"batch of {len(writes)} exceeds {BATCH_LIMIT}", code=70)
        return [self._write(w) for w in writes]

    async def query(
        self, *, id_greater_than: int | None = None, limit: int = 200, offset: int = 0
    ) -> list[Prospect]:
        await self._count_async("query")
        rows = [r for r in sorted(self._records.values(), key=lambda r: r.id)]
        if id_greater_than is not None:
            rows = [r for r in rows if r.id > id_greater_than]
        return [self._view(r) for r in rows[offset : offset + min(limit, 200)]]

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        await self._count_async("query")
        rows = list((self._recycle_bin if query.deleted else self._records).values())
        if query.id_greater_than is not None:
            rows = [r for r in rows if r.id > query.id_greater_than]
        if query.id_less_than is not None:
            rows = [r for r in rows if r.id < query.id_less_than]
        if query.created_after is not None:
            rows = [r for r in rows if pardot_time(r.created) > query.created_after]
        if query.created_before is not None:
            rows = [r for r in rows if pardot_time(r.created) < query.created_before]
        if query.updated_after is not None:
            rows = [r for r in rows if pardot_time(r.updated) > query.updated_after]
        if query.updated_before is not None:
            rows = [r for r in rows if pardot_time(r.updated) < query.updated_before]
        attribute = {"id": "id", "created_at": "created", "updated_at": "updated"}[query.sort_by]
        rows.sort(key=lambda r: getattr(r, attribute), reverse=query.sort_order == "descending")
        page = [self._view(r, query.fields) for r in rows[: min(query.limit, 200)]]
        return ProspectPage(page, len(rows))

    def _write(self, write: ProspectWrite) -> PardotError | None:
        try:
            record = self._find(write)
            if record is None:
                record = self._create_for(write)
                self._apply(record, {**write.create_fields, **write.fields})
            else:
                self._apply(record, write.fields)
        except PardotError as error:
            return error
        return None

    def _find(self, write: ProspectWrite) -> _Record | None:
        if write.by == "id":
            if not write.key.isdigit():
                return None
            found = self._records.get(int(write.key))
            return found or self._restored(write, self._recycle_bin.get(int(write.key)))
        if write.by == "fid":
            if self._version == 3:
                raise PermanentPardotError("fid is only supported by API version 4", code=77)
            found = self._by_fid(write.key)
            return found or self._restored(write, self._by_fid(write.key, self._recycle_bin))
        if write.mode == "create":
            return None
        if self._version == 4:
            if write.mode == "update":
                raise PermanentPardotError("version 4 has no update by email", code=13)
            return None  # v4 upsert by email alone always creates
        matches = self._by_email(write.key)
        return matches[0] if matches else None

    def _create_for(self, write: ProspectWrite) -> _Record:
        if write.mode == "create" and self._version == 3 and self._by_email(write.key):
            raise PermanentPardotError(
                "A prospect with the specified email address already exists", code=9
            )
        if write.mode == "update":
            raise PermanentPardotError(f"Invalid prospect {write.by}: {write.key}", code=3)
        email = write.key if write.by == "email" else write.fields.get("email")
        if not isinstance(email, str) or not email:
            raise PermanentPardotError(
                f"no prospect with {write.by} {write.key} and no email", code=14
            )
        if normalise_email(email) is None:
            raise PermanentPardotError("Invalid prospect email address", code=4)
        return self._new(email, None)

    def _new(self, email: str, fid: str | None) -> _Record:
        tick = next(self._clock)
        record = _Record(next(self._ids), email.strip(), fid, tick, created=tick)
        self._records[record.id] = record
        return record

    def _apply(self, record: _Record, fields: Fields) -> None:
        for name, value in fields.items():
            if name == "email":
                if isinstance(value, str) and value:
                    if normalise_email(value) is None:
                        raise PermanentPardotError("Invalid prospect email address", code=4)
                    record.email = value.strip()
            elif name in STANDARD_FIELDS:
                record.fields[name] = value
            elif name in self.custom_field_types:
                record.fields[name] = _as_stored(value, self.custom_field_types[name])
        record.updated = next(self._clock)

    def _by_email(self, email: str) -> list[_Record]:
        wanted = email.strip().lower()
        return [r for r in self._records.values() if r.email.lower() == wanted]

    def _by_fid(self, fid: str, among: Mapping[int, _Record] | None = None) -> _Record | None:
        records = self._records if among is None else among
        return next((r for r in records.values() if r.fid == fid), None)

    def _restored(self, write: ProspectWrite, binned: _Record | None) -> _Record | None:
        """An upsert by id or fid takes its prospect out of the recycle bin (Pardot's docs:
        "if the matching prospect is archived, it will be unarchived"); an update does not."""
        if binned is None or write.mode != "upsert":
            return None
        self._records[binned.id] = self._recycle_bin.pop(binned.id)
        return binned

    def _view(self, record: _Record, only: Sequence[str] = ()) -> Prospect:
        fields = {
            k: v for k, v in record.fields.items() if v not in ("", ()) and (not only or k in only)
        }
        updated = (pardot_time(record.updated), record.updated)
        created = pardot_time(record.created)
        return Prospect(record.id, record.email, record.fid, updated, fields, created)

    async def _count_async(self, operation: str) -> None:
        # Give way to the event loop as a network call would, so concurrent callers interleave.
        for _ in range(next(self._yields, 0) if self._yields is not None else 1):
            await asyncio.sleep(0)
        self.calls[operation] = self.calls.get(operation, 0) + 1


def _as_stored(value: FieldValue, field_type: str) -> FieldValue:
    """Pardot converts what it stores: a Number reads back as an integer, a Date as its day."""
    if isinstance(value, tuple) or not value:
        return value
    if field_type == "Number":
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return value
        return str(int(number)) if number == number.to_integral_value() else str(number)
    if field_type == "Date":
        return value.strip()[:10]
    return value
