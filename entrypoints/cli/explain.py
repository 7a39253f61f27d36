"""`explain EMAIL|USER_ID`: the answer to "why does Pardot say X?", from the store alone.

The prospects this person maps to (by userId, anonymousId, or the email we wrote or events
carried), the identities linked to each, the value and event time of every field the
service wrote there, and the last events that touched them: messageId, outcome, reason and
the fields each wrote. No call to Pardot: what a marketer changed in Pardot itself is not
known here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from domain.ports import DeliveryHistory, FieldStamp, HistoryEntry, ProspectStore
from domain.prospect import FieldValue, normalise_email
from entrypoints.cli.support import console, run_with_container


def _value(value: FieldValue) -> str:
    return ", ".join(value) if isinstance(value, tuple) else value


def _fields(fields: dict[str, FieldValue] | Any) -> str:
    return "; ".join(f"{k}={_value(v)!r}" for k, v in fields.items()) or "-"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def gather(
    query: str, store: ProspectStore, history: DeliveryHistory, *, limit: int
) -> dict[str, Any]:
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
        stamps: dict[str, FieldStamp] = await store.stamps(key)
        found.append(
            {
                "prospect": key,
                "identities": await history.identities_of(key),
                "fields": {
                    name: {"value": s.value, "event_time": s.at}
                    for name, s in sorted(stamps.items())
                },
                "events": [e for e in entries if e.prospect == key],
            }
        )
    unplaced = [e for e in entries if e.prospect is None]
    return {"query": query, "prospects": found, "other_events": unplaced}


def _entry_dict(entry: HistoryEntry) -> dict[str, Any]:
    return asdict(entry) | {"at": entry.at.isoformat(), "fields": dict(entry.fields)}


def _events_table(entries: list[HistoryEntry], title: str) -> Table:
    table = Table("settled", "messageId", "outcome", "reason", "fields written", title=title)
    for e in entries:
        table.add_row(
            _when(e.at), e.message_id or "-", e.outcome, e.reason, _fields(dict(e.fields))
        )
    return table


@click.command()
@click.argument("who")
@click.option("--limit", default=20, show_default=True, help="how many recent events to show")
@click.option("--json", "as_json", is_flag=True, help="print the answer as JSON")
def explain(who: str, limit: int, as_json: bool) -> None:
    """Why does Pardot hold what it holds for WHO (an email or a userId)?"""

    async def run(container: Any) -> dict[str, Any]:
        store = await container.prospect_store.async_()
        history = await container.history.async_()
        return await gather(who, store, history, limit=limit)

    answer = run_with_container(run)
    if as_json:
        out = {
            "query": answer["query"],
            "prospects": [
                p
                | {
                    "events": [_entry_dict(e) for e in p["events"]],
                    "fields": {
                        k: {
                            "value": v["value"],
                            "event_time": v["event_time"] and v["event_time"].isoformat(),
                        }
                        for k, v in p["fields"].items()
                    },
                }
                for p in answer["prospects"]
            ],
            "other_events": [_entry_dict(e) for e in answer["other_events"]],
        }
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        _print(answer)
    if not answer["prospects"] and not answer["other_events"]:
        sys.exit(1)


def _print(answer: dict[str, Any]) -> None:
    who = answer["query"]
    if not answer["prospects"] and not answer["other_events"]:
        click.echo(
            f"nothing known about {who}: no prospect is linked to it and no recent event "
            "with this userId or email was settled (the history keeps "
            "DESTINATION_RETENTION_DAYS)"
        )
        return
    click.echo(f"{who} maps to {len(answer['prospects'])} prospect(s)")
    for p in answer["prospects"]:
        key = p["prospect"]
        name = f"prospect {key}" if not key.startswith("email:") else f"prospect {key} (v3)"
        links = ", ".join(p["identities"]) or "none"
        console.print(f"\n[bold]{name}[/]  linked identities: {links}")
        fields = Table("field", "value the service wrote", "event time", title="fields written")
        for field, stamp in p["fields"].items():
            fields.add_row(field, _value(stamp["value"]), _when(stamp["event_time"]))
        console.print(fields)
        if p["events"]:
            console.print(_events_table(p["events"], "last events that touched it"))
    if answer["other_events"]:
        console.print(_events_table(answer["other_events"], "\nevents that reached no prospect"))
    click.echo(
        "\nFrom the service's own records; a value changed in Pardot by hand is not seen here."
    )
