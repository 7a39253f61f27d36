"""A PardotRepository that never opens a socket: the account as the prospect index last saw it.

In: the prospect index (an overlay, so what a run learns stays in memory), the store (what the
service wrote), the account's custom fields as last noted, and the API version. Out: reads
answered from the index; writes and creates applied to in-memory copies of the prospects they
touch (a create gets a provisional id above any real one), so the later events of a run see
them; and, per batch, which prospects were created and which fields a write would change.

Where only Pardot could answer (the index is incomplete, or a v3 upsert names an email the
service never wrote) the call fails with a retryable error whose message starts "needs
Pardot", which the sync service turns into "try later": the dry run shows it as `unknown`.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from domain.errors import ConfigurationError, PardotError, PermanentPardotError, RetryableError
from domain.ports import (
    BATCH_LIMIT,
    ProspectIndex,
    ProspectPage,
    ProspectQuery,
    ProspectStore,
    ProspectWrite,
)
from domain.prospect import (
    BOOLEAN_FIELDS,
    STANDARD_FIELDS,
    CustomField,
    Fields,
    FieldValue,
    Prospect,
    boolean_read_back,
    normalise_email,
    stored_form,
)

# Far above any id Pardot hands out, so a provisional id can never name a real prospect.
PROVISIONAL_BASE = 9 * 10**15
_TIME = "%Y-%m-%d %H:%M:%S"
# Pardot never reads the password back.
_UNREAD_FIELDS = frozenset({"password"})


def _email_key(prospect: Prospect) -> str:
    return (prospect.email or "").strip().lower()


class NeedsPardot(RetryableError):
    """Only Pardot could answer this; the dry run does not ask it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"needs Pardot: {what}")


@dataclass
class BatchWrites:
    """What the writes since the last look did, by the store's prospect key."""

    created: set[str] = field(default_factory=set)
    changed: dict[str, set[str]] = field(default_factory=dict)  # fields whose value changes


class IndexOnlyPardot:
    """The PardotRepository of a dry run."""

    def __init__(
        self,
        index: ProspectIndex,
        store: ProspectStore,
        *,
        version: int,
        custom_fields: Sequence[CustomField] | None,
        lookup_field: str | None = None,
    ) -> None:
        """`custom_fields` None: the account's fields were never noted; then the lookup field
        is taken for a Text field and every other field name is kept as written."""
        self._index = index
        self._store = store
        self._version = version
        self._fields = (
            None if custom_fields is None else {f.field_id: f.type for f in custom_fields}
        )
        assumed = [] if lookup_field is None else [CustomField(lookup_field, "Text")]
        self._custom = list(custom_fields) if custom_fields is not None else assumed
        self._touched: dict[int, Prospect] = {}  # Pardot's copy after this run's writes
        self._touched_emails: dict[str, set[int]] = {}
        self._updates: list[tuple[str, int]] = []  # (updated_at, id), in the order written
        self._creates: list[tuple[str, int]] = []
        self._provisional = itertools.count(1)
        self._ticks = itertools.count(1)
        self._base: datetime | None = None
        self._batch = BatchWrites()

    # -- what the dry run asks besides the port ----------------------------------------------

    def take_batch(self) -> BatchWrites:
        """The creates and changes since the last call (one sync call's worth)."""
        batch, self._batch = self._batch, BatchWrites()
        return batch

    def new_prospect(self, key: str) -> int | None:
        """For a provisional prospect key, its number in the order of creation."""
        number = int(key) if key.isdigit() else 0
        return number - PROVISIONAL_BASE if number > PROVISIONAL_BASE else None

    # -- the port ----------------------------------------------------------------------------

    @property
    def api_version(self) -> int:
        return self._version

    async def detect_version(self) -> int:
        return self._version

    async def custom_fields(self) -> list[CustomField]:
        return list(self._custom)

    async def read_by_email(self, email: str) -> list[Prospect]:
        if not await self._complete():
            raise NeedsPardot(f"find the prospects with email {email}")
        return await self._with_email(email)

    async def read_by_id(self, prospect_id: int) -> Prospect | None:
        known = await self._known(prospect_id)
        if known is None and not await self._complete():
            raise NeedsPardot(f"read prospect {prospect_id}")
        return known

    async def read_by_fid(self, fid: str) -> Prospect | None:
        known = next((p for p in self._touched.values() if p.fid == fid), None)
        known = known or await self._index.by_fid(fid)
        if known is None and not await self._complete():
            raise NeedsPardot(f"find the prospect with fid {fid}")
        return known

    async def create(self, email: str, fields: Fields) -> Prospect:
        if normalise_email(email) is None:
            raise PermanentPardotError("Invalid prospect email address", code=4)
        if self._version == 3 and await self._with_email(email):
            raise PermanentPardotError("Prospect email address already exists", code=9)
        return await self._new(email, fields)

    async def delete_prospect(self, prospect_id: int) -> bool:
        raise NeedsPardot(f"deleting prospect {prospect_id}")  # a dry run changes nothing

    async def write_batch(self, writes: Sequence[ProspectWrite]) -> list[PardotError | None]:
        if len(writes) > BATCH_LIMIT:
            raise ConfigurationError(f"batch of {len(writes)} exceeds {BATCH_LIMIT}", code=70)
        answers: list[PardotError | None] = []
        for write in writes:
            try:
                await self._write(write)
                answers.append(None)
            except PardotError as error:
                answers.append(error)
        return answers

    async def query(
        self, *, id_greater_than: int | None = None, limit: int = 200, offset: int = 0
    ) -> list[Prospect]:
        raise NeedsPardot("a scan of the account")

    async def query_page(self, query: ProspectQuery) -> ProspectPage:
        """Changes since a mark: only this run's own (changes made in Pardot are not seen).

        A refresh of an index that never saw a change has no mark: every change of the run.
        A dry run deletes nothing: its recycle bin is empty.
        """
        if query.deleted:
            return ProspectPage([], 0)
        changes = query.updated_after or query.created_after or query.sort_by != "id"
        if not changes:
            raise NeedsPardot("a scan of the account")
        if query.created_after is not None or query.sort_by == "created_at":
            rows = self._since(self._creates, query.created_after or "", created=True)
        else:
            rows = self._since(self._updates, query.updated_after or "", created=False)
        if query.updated_after is not None:
            rows = [p for p in rows if p.updated_at > query.updated_after]
        if query.updated_before is not None:
            rows = [p for p in rows if p.updated_at < query.updated_before]
        if query.id_greater_than is not None:
            rows = [p for p in rows if p.id > query.id_greater_than]
        if query.id_less_than is not None:
            rows = [p for p in rows if p.id < query.id_less_than]
        order = {"id": lambda p: p.id, "created_at": lambda p: p.created_at}
        rows.sort(
            key=order.get(query.sort_by, lambda p: p.updated),
            reverse=query.sort_order == "descending",
        )
        return ProspectPage(rows[: min(query.limit, 200)], len(rows))

    # -- writes ------------------------------------------------------------------------------

    async def _write(self, write: ProspectWrite) -> None:
        if write.by == "email":
            await self._write_by_email(write)
            return
        if write.by == "fid":
            prospect = await self.read_by_fid(write.key)
        else:
            prospect = await self._known(int(write.key)) if write.key.isdigit() else None
        if prospect is None and await self._complete():
            raise PermanentPardotError(f"Invalid prospect {write.by}: {write.key}", code=3)
        key = str(prospect.id) if prospect is not None else write.key
        await self._update(key, prospect, write.fields)

    async def _write_by_email(self, write: ProspectWrite) -> None:
        if write.mode == "create" or (self._version == 4 and write.mode == "upsert"):
            # v4 upsert by email alone always creates (PARDOT_API.md).
            await self.create(write.key, {**write.create_fields, **write.fields})
            return
        if self._version == 4:
            raise PermanentPardotError("version 4 has no update by email", code=13)
        key = f"email:{write.key.strip().lower()}"
        found = await self._with_email(write.key)
        if found:
            await self._update(key, found[0], write.fields)
        elif await self._complete():
            if write.mode == "update":
                raise PermanentPardotError(f"Invalid prospect email: {write.key}", code=3)
            await self._new(write.key, {**write.create_fields, **write.fields})
        elif await self._store.stamps(key):
            await self._update(key, None, write.fields)  # the service wrote it: it exists
        else:
            raise NeedsPardot(
                f"upsert by email {write.key} creates or updates, and this service never wrote "
                "to that email"
            )

    async def _update(self, key: str, prospect: Prospect | None, fields: Fields) -> None:
        known: dict[str, FieldValue | None]
        if prospect is not None:
            known = {"email": prospect.email, **prospect.fields}
        else:  # what the service last wrote is the best guess at what Pardot holds
            known = {name: stamp.value for name, stamp in (await self._store.stamps(key)).items()}
        changed = self._batch.changed.setdefault(key, set())
        for name, value in fields.items():
            if name == "email":
                now: FieldValue | None = value.strip() if isinstance(value, str) else value
            else:
                now = self._stored(name, value) if prospect is not None else value
            if now != known.get(name) and (now or known.get(name)):
                changed.add(name)
        if prospect is not None:
            self._remember(await self._applied(prospect, fields), created=False)

    async def _new(self, email: str, fields: Fields) -> Prospect:
        prospect_id = PROVISIONAL_BASE + next(self._provisional)
        blank = Prospect(prospect_id, email.strip())
        prospect = await self._applied(blank, fields, created=True)
        self._remember(prospect, created=True)
        key = f"email:{email.strip().lower()}" if self._version == 3 else str(prospect_id)
        self._batch.created.add(key)
        return prospect

    async def _applied(
        self, prospect: Prospect, fields: Fields, *, created: bool = False
    ) -> Prospect:
        """The prospect as Pardot would hold it after the write: unknown fields dropped,
        values in the form Pardot stores them, an empty value clearing the field."""
        values = dict(prospect.fields)
        email = prospect.email
        for name, value in fields.items():
            if name == "email":
                if isinstance(value, str) and value.strip():
                    if normalise_email(value) is None:
                        raise PermanentPardotError("Invalid prospect email address", code=4)
                    email = value.strip()
                continue
            stored = self._stored(name, value)
            if stored is None:
                values.pop(name, None)
            else:
                values[name] = stored
        now = await self._tick()
        return replace(
            prospect,
            email=email,
            fields=values,
            updated=(now, 0),
            created_at=now if created else prospect.created_at,
        )

    def _stored(self, name: str, value: FieldValue) -> FieldValue | None:
        """A written value as Pardot reads it back; None when the field ends up unset."""
        if name in _UNREAD_FIELDS:
            return None
        if name not in STANDARD_FIELDS and self._fields is not None and name not in self._fields:
            return None  # Pardot ignores a field the account does not have
        if isinstance(value, tuple):
            items = tuple(item for item in value if item.strip())
            return items or None
        if not value.strip():
            return None
        if name in BOOLEAN_FIELDS:
            return boolean_read_back(value) or None
        if name in STANDARD_FIELDS:
            return value
        return stored_form(value, (self._fields or {}).get(name, "Text"))

    def _remember(self, prospect: Prospect, *, created: bool) -> None:
        before = self._touched.get(prospect.id)
        if before is not None:
            self._touched_emails.get(_email_key(before), set()).discard(prospect.id)
        self._touched[prospect.id] = prospect
        self._touched_emails.setdefault(_email_key(prospect), set()).add(prospect.id)
        self._updates.append((prospect.updated_at, prospect.id))
        if created:
            self._creates.append((prospect.created_at, prospect.id))

    # -- reads -------------------------------------------------------------------------------

    async def _known(self, prospect_id: int) -> Prospect | None:
        if prospect_id in self._touched:
            return self._touched[prospect_id]
        return (await self._index.by_ids([prospect_id])).get(prospect_id)

    async def _with_email(self, email: str) -> list[Prospect]:
        wanted = email.strip().lower()
        indexed = (await self._index.by_emails([email])).get(wanted, [])
        rows = {p.id: self._touched.get(p.id, p) for p in indexed}
        rows.update({i: self._touched[i] for i in self._touched_emails.get(wanted, ())})
        return [p for _, p in sorted(rows.items()) if _email_key(p) == wanted]

    def _since(self, marks: list[tuple[str, int]], after: str, *, created: bool) -> list[Prospect]:
        start = bisect_right(marks, (after, PROVISIONAL_BASE * 2))
        rows: dict[int, Prospect] = {}
        for at, prospect_id in marks[start:]:
            prospect = self._touched[prospect_id]
            current = prospect.created_at if created else prospect.updated_at
            if current == at:
                rows[prospect_id] = prospect
        return list(rows.values())

    async def _complete(self) -> bool:
        return (await self._index.state()).complete

    async def _tick(self) -> str:
        """The next second after everything the index saw: this run's changes come later
        than every change Pardot had shown, as they would in Pardot."""
        if self._base is None:
            state = await self._index.state()
            now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            mark = state.high_water
            self._base = datetime.strptime(mark, _TIME) if mark else now
        return (self._base + timedelta(seconds=next(self._ticks))).strftime(_TIME)
