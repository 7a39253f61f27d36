"""The explain report: the answer to "why does Pardot say X?".

In: an email or a userId, the prospect store, the delivery history and the prospect index.
Out: an `ExplainReport`: the prospects this person maps to (by userId, anonymousId, or the
email we wrote or events carried), each with its Pardot id (under v3, where the store keys a
prospect by email, the index knows the id), the identities linked to it, the value and event
time of every field the service wrote there, and the last events that touched them;
`as_dict()` is its JSON. No call to Pardot: what a marketer changed there is not known.

`read_live` adds what Pardot holds now (one read per prospect, `live.look_up`): per field
written, Pardot's value and whether it differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from domain.ports import (
    DeliveryHistory,
    FieldStamp,
    HistoryEntry,
    ProspectIndex,
    ProspectStore,
)
from domain.prospect import normalise_email
from entrypoints.operator.fields import RepositoryProvider
from entrypoints.operator.live import FieldType, LiveProspect, look_up


@dataclass(frozen=True)
class ProspectExplained:
    prospect: str  # the prospect's key: its id, or `email:...` under v3
    prospect_id: int | None  # Pardot's id; None under v3 when the index never saw the email
    identities: list[str]
    fields: dict[str, FieldStamp]  # by field id, in name order
    events: list[HistoryEntry]
    live: LiveProspect | None = None  # what Pardot holds now, when asked (`read_live`)

    @property
    def email(self) -> str | None:
        """The email that keys this prospect under v3."""
        return self.prospect.removeprefix("email:") if self.prospect.startswith("email:") else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "prospect": self.prospect,
            "prospect_id": self.prospect_id,
            "identities": self.identities,
            "fields": {
                name: {"value": s.value, "event_time": s.at and s.at.isoformat()}
                for name, s in self.fields.items()
            },
            "events": [_entry_dict(e) for e in self.events],
            **({"live": self.live.as_dict()} if self.live is not None else {}),
        }


@dataclass(frozen=True)
class ExplainReport:
    query: str
    prospects: list[ProspectExplained]
    other_events: list[HistoryEntry]  # events of this person that reached no prospect

    @property
    def nothing_known(self) -> bool:
        return not self.prospects and not self.other_events

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "prospects": [p.as_dict() for p in self.prospects],
            "other_events": [_entry_dict(e) for e in self.other_events],
        }


async def explain(
    query: str,
    store: ProspectStore,
    history: DeliveryHistory,
    *,
    limit: int,
    index: ProspectIndex | None = None,
) -> ExplainReport:
    query = query.strip()
    email = normalise_email(query) if "@" in query else None
    people = [f"user:{query}", f"anonymous:{query}"]
    linked = await store.links(people)
    prospects = list(dict.fromkeys(linked.values()))
    if email is not None:
        prospects += [p for p in await history.prospects_with_email(email) if p not in prospects]
    entries = await history.touching(
        prospects=prospects,
        user_ids=[query],
        emails=[email] if email else [],
        limit=limit,
    )
    for entry in entries:  # an event of this person may have reached another prospect
        if entry.prospect is not None and entry.prospect not in prospects:
            prospects.append(entry.prospect)
    found = []
    for key in prospects:
        stamps = await store.stamps(key)
        found.append(
            ProspectExplained(
                prospect=key,
                prospect_id=await _prospect_id(key, index),
                identities=await history.identities_of(key),
                fields=dict(sorted(stamps.items())),
                events=[e for e in entries if e.prospect == key],
            )
        )
    unplaced = [e for e in entries if e.prospect is None]
    return ExplainReport(query, found, unplaced)


async def _prospect_id(key: str, index: ProspectIndex | None) -> int | None:
    """The Pardot id behind a store key: the key itself, or (v3) the id the index holds for the
    email; the latest updated when the index holds several (v3 upserts write to one)."""
    if key.isdigit():
        return int(key)
    if not key.startswith("email:") or index is None:
        return None
    email = key.removeprefix("email:").lower()
    holders = (await index.by_emails([email])).get(email, [])
    return max(holders, key=lambda p: p.updated).id if holders else None


async def read_live(
    report: ExplainReport, pardot: RepositoryProvider, field_type: FieldType
) -> ExplainReport:
    """The report with what Pardot holds now for each prospect: one read each (by id, or by
    email under v3 when the index does not know the id)."""
    prospects = [
        replace(
            p,
            live=await look_up(
                pardot,
                prospect_id=p.prospect_id,
                email=p.email,
                stamps=p.fields,
                events=p.events,
                field_type=field_type,
            ),
        )
        for p in report.prospects
    ]
    return replace(report, prospects=prospects)


def _entry_dict(entry: HistoryEntry) -> dict[str, Any]:
    return asdict(entry) | {"at": entry.at.isoformat(), "fields": dict(entry.fields)}
