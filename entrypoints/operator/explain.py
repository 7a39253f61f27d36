"""The explain report: the answer to "why does Pardot say X?", from the store alone.

In: an email or a userId, the prospect store and the delivery history. Out: an
`ExplainReport`: the prospects this person maps to (by userId, anonymousId, or the email we
wrote or events carried), the identities linked to each, the value and event time of every
field the service wrote there, and the last events that touched them; `as_dict()` is its
JSON. No call to Pardot: what a marketer changed in Pardot itself is not known here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from domain.ports import DeliveryHistory, FieldStamp, HistoryEntry, ProspectStore
from domain.prospect import normalise_email


@dataclass(frozen=True)
class ProspectExplained:
    prospect: str  # the prospect's key: its id, or `email:...` under v3
    identities: list[str]
    fields: dict[str, FieldStamp]  # by field id, in name order
    events: list[HistoryEntry]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prospect": self.prospect,
            "identities": self.identities,
            "fields": {
                name: {"value": s.value, "event_time": s.at and s.at.isoformat()}
                for name, s in self.fields.items()
            },
            "events": [_entry_dict(e) for e in self.events],
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
    query: str, store: ProspectStore, history: DeliveryHistory, *, limit: int
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
                identities=await history.identities_of(key),
                fields=dict(sorted(stamps.items())),
                events=[e for e in entries if e.prospect == key],
            )
        )
    unplaced = [e for e in entries if e.prospect is None]
    return ExplainReport(query, found, unplaced)


def _entry_dict(entry: HistoryEntry) -> dict[str, Any]:
    return asdict(entry) | {"at": entry.at.isoformat(), "fields": dict(entry.fields)}
