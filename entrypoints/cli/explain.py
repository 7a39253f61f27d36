"""`explain EMAIL|USER_ID`: the explain report (entrypoints.operator.explain), printed.

In: the command line. Out: each prospect the person maps to, with its linked identities, the
fields the service wrote and the events that touched it, as rich tables or JSON; exit 1
when nothing is known about them.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click
from rich.table import Table

from domain.ports import HistoryEntry
from domain.prospect import FieldValue
from entrypoints.cli.support import console, run_with_container
from entrypoints.container import Container
from entrypoints.operator.explain import ExplainReport
from entrypoints.operator.explain import explain as explain_report


def _value(value: FieldValue) -> str:
    return ", ".join(value) if isinstance(value, tuple) else value


def _fields(fields: dict[str, FieldValue]) -> str:
    return "; ".join(f"{k}={_value(v)!r}" for k, v in fields.items()) or "-"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


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

    async def run(container: Container) -> ExplainReport:
        store = await container.prospect_store.async_()
        history = await container.history.async_()
        return await explain_report(who, store, history, limit=limit)

    report = run_with_container(run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print(report)
    if report.nothing_known:
        sys.exit(1)


def _print(report: ExplainReport) -> None:
    who = report.query
    if report.nothing_known:
        click.echo(
            f"nothing known about {who}: no prospect is linked to it and no recent event "
            "with this userId or email was settled (the history keeps "
            "DESTINATION_RETENTION_DAYS)"
        )
        return
    click.echo(f"{who} maps to {len(report.prospects)} prospect(s)")
    for p in report.prospects:
        key = p.prospect
        name = f"prospect {key}" if not key.startswith("email:") else f"prospect {key} (v3)"
        links = ", ".join(p.identities) or "none"
        console.print(f"\n[bold]{name}[/]  linked identities: {links}")
        fields = Table("field", "value the service wrote", "event time", title="fields written")
        for field, stamp in p.fields.items():
            fields.add_row(field, _value(stamp.value), _when(stamp.at))
        console.print(fields)
        if p.events:
            console.print(_events_table(p.events, "last events that touched it"))
    if report.other_events:
        console.print(_events_table(report.other_events, "\nevents that reached no prospect"))
    click.echo(
        "\nFrom the service's own records; a value changed in Pardot by hand is not seen here."
    )
