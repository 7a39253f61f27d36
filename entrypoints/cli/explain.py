"""`explain EMAIL|USER_ID`: the explain report (entrypoints.operator.explain), printed.

In: the command line. Out: each prospect the person maps to, with its Pardot id, its linked
identities, the fields the service wrote and the events that touched it, as rich tables or
JSON; with `--live`, beside each field what Pardot holds now, differences marked. Exit
statuses: see `EXIT_*` below (docs/operating.md lists them).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta

import click
from rich.table import Table

from domain.ports import HistoryEntry, PardotRepository
from domain.prospect import FieldValue
from entrypoints.cli.support import console, run_with_container
from entrypoints.container import Container
from entrypoints.operator.explain import ExplainReport, ProspectExplained, read_live
from entrypoints.operator.explain import explain as explain_report
from entrypoints.operator.fields import account_fields
from entrypoints.operator.live import LiveProspect

EXIT_EXPLAINED = 0  # with --live: and Pardot holds every value the service wrote
EXIT_NOTHING_KNOWN = 1
EXIT_UNREACHABLE = 3  # --live: Pardot could not be read (the store's side is still printed)
EXIT_DIFFERS = 4  # --live: Pardot holds another value somewhere, or no longer has the prospect


def _value(value: FieldValue | None) -> str:
    if value is None:
        return "(not set)"
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
@click.option("--live", is_flag=True, help="read each prospect from Pardot (one call) and compare")
def explain(who: str, limit: int, as_json: bool, live: bool) -> None:
    """Why does Pardot hold what it holds for WHO (an email or a userId)?

    Exit 0 explained, 1 nothing known; with --live, 3 when Pardot could not be read and 4
    when Pardot holds something else than the service wrote (or no longer has the prospect).
    """

    async def run(container: Container) -> ExplainReport:
        store = await container.prospect_store.async_()
        history = await container.history.async_()
        index = await container.prospect_index.async_()
        report = await explain_report(who, store, history, limit=limit, index=index)
        if not live or not report.prospects:
            return report

        async def pardot() -> PardotRepository:
            repository: PardotRepository = await container.repository.async_()
            await repository.detect_version()
            return repository

        # The field types as last noted (no call): Number and Date values compare in their form.
        noted = await account_fields(
            history, None, now=datetime.now().astimezone(), max_age=timedelta.max
        )
        types = {} if noted is None else {f.field_id: f.type for f in noted[1]}
        return await read_live(report, pardot, lambda name: types.get(name, "Text"))

    report = run_with_container(run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print(report)
    sys.exit(_exit_status(report))


def _exit_status(report: ExplainReport) -> int:
    if report.nothing_known:
        return EXIT_NOTHING_KNOWN
    lives = [p.live for p in report.prospects if p.live is not None]
    if any(live.state == "unreachable" for live in lives):
        return EXIT_UNREACHABLE
    if any(live.differs for live in lives):
        return EXIT_DIFFERS
    return EXIT_EXPLAINED


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
        console.print(
            f"\n[bold]{_name(p)}[/]  linked identities: {', '.join(p.identities) or 'none'}"
        )
        if p.live is None:
            fields = Table("field", "value the service wrote", "event time", title="fields written")
            for field, stamp in p.fields.items():
                fields.add_row(field, _value(stamp.value), _when(stamp.at))
            console.print(fields)
        else:
            _print_live(p.live)
        if p.events:
            console.print(_events_table(p.events, "last events that touched it"))
    if report.other_events:
        console.print(_events_table(report.other_events, "\nevents that reached no prospect"))
    if not any(p.live for p in report.prospects):
        click.echo(
            "\nFrom the service's own records; a value changed in Pardot by hand is not seen "
            "here (--live reads Pardot)."
        )


def _name(p: ProspectExplained) -> str:
    if p.email is None:
        return f"Pardot prospect {p.prospect}"
    if p.prospect_id is None:
        return f"Pardot prospect of {p.email} (v3; its id is not in the prospect index)"
    return f"Pardot prospect {p.prospect_id} ({p.email}, v3)"


def _print_live(live: LiveProspect) -> None:
    if live.state == "unreachable":
        console.print(f"[bold yellow]{live.detail}[/]")
        return
    if live.state == "missing":
        console.print(
            f"[bold red]{live.detail}[/]: deleted or merged in Pardot, or never created; "
            "what the service wrote there is gone"
        )
        return
    changed = sum(f.differs for f in live.fields)
    fields = Table(
        "field", "the service wrote", "event time", "written at", "Pardot holds now", "",
        title=f"fields written, against Pardot (updated {live.updated_at or '-'})",
    )  # fmt: skip
    for f in live.fields:
        fields.add_row(
            f.name,
            _value(f.written.value),
            _when(f.written.at),
            _when(f.written_at),
            _value(f.pardot),
            "[bold red]DIFFERS[/]" if f.differs else "same",
        )
    console.print(fields)
    console.print(
        f"{changed} field(s) differ: changed in Pardot since the service wrote them"
        if changed
        else "Pardot holds every value the service wrote"
    )
