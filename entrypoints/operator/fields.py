"""The fields check: traits that go nowhere because the account has no such field.

In: the delivery history (the field ids recent events carried, and the stored list of the
account's custom fields) and, optionally, a way to ask Pardot for that list. Out: a
`FieldsReport`, plain data that `fields check` prints and `status` and the status page show.

Pardot ignores a field it does not have (the seed: custom fields are ignored until created),
so a trait sent under a name the account lacks is lost without a word. The field ids recent
events carried are compared with the account's custom fields (one `customField` query, kept
in the store so `status` and the status page reuse it) and the standard fields; each
unknown one is listed with the closest field id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.errors import DestinationError
from domain.lookup_field import closest_field
from domain.ports import DeliveryHistory, PardotRepository
from domain.prospect import READ_ONLY_FIELDS, STANDARD_FIELDS, CustomField

ACCOUNT_FIELDS_NOTE = "account_custom_fields"
RECENT = timedelta(days=7)  # "recent events": the history keeps DESTINATION_RETENTION_DAYS
FRESH_ENOUGH = timedelta(hours=1)  # the status page reuses a field list this young

RepositoryProvider = Callable[[], Awaitable[PardotRepository]]


@dataclass(frozen=True)
class FieldsReport:
    checked_at: datetime | None  # when the account's fields were read; None: never
    unknown: list[dict[str, Any]]  # {"field", "events", "closest"}
    seen: int  # how many distinct field ids recent events carried
    problem: str = ""  # why the account's fields could not be read

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "unknown": self.unknown,
            "seen": self.seen,
            "problem": self.problem,
        }

    @property
    def warning(self) -> str:
        if not self.unknown:
            return ""
        names = ", ".join(
            f"{u['field']} (did you mean {u['closest']}?)" if u["closest"] else u["field"]
            for u in self.unknown[:5]
        )
        more = f" and {len(self.unknown) - 5} more" if len(self.unknown) > 5 else ""
        return (
            f"{len(self.unknown)} trait(s) match no field of the Pardot account and are "
            f"dropped by Pardot: {names}{more}; run `pardot-destination fields check`"
        )


async def account_fields(
    history: DeliveryHistory,
    repository: RepositoryProvider | None,
    *,
    now: datetime,
    max_age: timedelta,
) -> tuple[datetime, list[CustomField]] | None:
    """The account's custom fields: the stored list when younger than `max_age`, else asked
    of Pardot (one call) and stored. None when never read and Pardot cannot be asked."""
    cached = await history.noted(ACCOUNT_FIELDS_NOTE)
    stored = None
    if cached is not None:
        checked = datetime.fromisoformat(cached["checked_at"])
        stored = (checked, [CustomField(f["field_id"], f["type"]) for f in cached["fields"]])
        if now - checked < max_age:
            return stored
    if repository is None:
        return stored
    fields = await (await repository()).custom_fields()
    await history.note(
        ACCOUNT_FIELDS_NOTE,
        {
            "checked_at": now.isoformat(),
            "fields": [{"field_id": f.field_id, "type": f.type} for f in fields],
        },
    )
    return now, fields


def unknown_fields(seen: dict[str, int], custom: list[CustomField]) -> list[dict[str, Any]]:
    """Field ids that are neither standard nor custom fields of the account, most used first."""
    known = {f.field_id for f in custom}
    candidates = sorted(known | STANDARD_FIELDS)
    unknown = [
        {"field": name, "events": count, "closest": closest_field(name, candidates)}
        for name, count in seen.items()
        if name not in known and name not in STANDARD_FIELDS and name not in READ_ONLY_FIELDS
    ]
    return sorted(unknown, key=lambda u: (-u["events"], u["field"]))


async def check(
    history: DeliveryHistory,
    repository: RepositoryProvider | None,
    *,
    now: datetime,
    max_age: timedelta = timedelta(0),
) -> FieldsReport:
    seen = await history.fields_seen(now - RECENT)
    problem = ""
    try:
        found = await account_fields(history, repository, now=now, max_age=max_age)
    except DestinationError as error:
        # Pardot or the credentials said no: fall back on the stored list, and say why.
        problem = str(error)
        found = await account_fields(history, None, now=now, max_age=max_age)
    if found is None:
        return FieldsReport(None, [], len(seen), problem or "the account's fields were never read")
    checked_at, fields = found
    return FieldsReport(checked_at, unknown_fields(seen, fields), len(seen), problem)
