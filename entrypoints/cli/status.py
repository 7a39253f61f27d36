"""`status` and `status --json`: the status figures (entrypoints.operator.status), printed.

In: the command line. Out: the figures as a rich table, or as the JSON `/status.json` serves.
"""

from __future__ import annotations

import json

import click
from rich.table import Table

from entrypoints.cli.support import console, run_with_container
from entrypoints.container import Container
from entrypoints.operator.status import StatusReport, build_report


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(report: StatusReport) -> Table:
    """The report as the `status` command prints it."""
    table = Table("figure", "value", title="pardot-destination status", title_justify="left")
    counts = report.queue
    table.add_row("waiting (pending, retry, leased)", str(report.depth))
    table.add_row("oldest waiting", _age(report.oldest_pending_seconds))
    if report.pardot_slots_busy_ratio is not None:
        table.add_row(
            "Pardot slots busy (last minute)",
            f"{report.pardot_slots_busy_ratio:.0%} of {report.pardot_slots}",
        )
    if report.paused_until:
        table.add_row("deliveries paused until", report.paused_until.isoformat())
    table.add_row("deliveries per minute", f"{report.deliveries_per_minute:g}")
    for state in ("delivered", "skipped", "rejected", "dead"):
        table.add_row(f"{state} (kept)", str(counts.get(state, 0)))
    budget = report.api_budget
    table.add_row(
        "Pardot API calls today",
        f"{budget.used:,} of {budget.limit:,}" if budget else "not counted",
    )
    token = report.token
    detail = f": {token['detail']}" if token.get("detail") else ""
    table.add_row("Salesforce token", token["state"] + detail)
    index = report.index
    table.add_row(
        "prospect index",
        f"{index.prospects:,} prospects, fresh to {index.fresh_to or '-'}"
        + ("" if index.complete else " (still filling)")
        if index
        else "not kept",
    )
    if index:
        age = index.age.seconds
        table.add_row(
            "index age",
            "- (no complete refresh yet)"
            if age is None
            else _age(age) + " since its last refresh began",
        )
        table.add_row("index refreshes in the last minute", str(index.age.refreshes_last_minute))
    if report.ready is not None:
        table.add_row("ready", "yes" if report.ready else f"no: {report.unready_reason}")
    for job in report.imports:
        late = (
            " [bold yellow](past DESTINATION_IMPORT_TIMEOUT_SECONDS)[/]" if job["overdue"] else ""
        )
        table.add_row(
            f"Pardot import {job['id']}",
            f"{job['rows']:,} rows, {job['state']}, {_age(job['age_seconds'])}{late}",
        )
    fields = report.fields
    if fields.warning:
        table.add_row("[bold yellow]fields[/]", fields.warning)
    elif fields.checked_at is None:
        table.add_row("fields", "not checked: " + (fields.problem or "-"))
    else:
        table.add_row("fields", f"all {fields.seen} field(s) events carry exist in Pardot")
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def status(as_json: bool) -> None:
    """Queue depth and age, deliveries per minute, dead letters, API budget, token, index."""

    async def run(container: Container) -> StatusReport:
        sources = await container.status_sources.async_()
        return await build_report(sources)

    report = run_with_container(run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(render(report))
        if report.dead_count:
            console.print(
                f"{report.dead_count} dead letter(s): `pardot-destination dead-letters` lists them"
            )
