"""`fields check`: the fields check (entrypoints.operator.fields), printed.

In: the command line. Out: the traits recent events carried that match no Pardot field, as
a table or JSON; exit 1 when there is any, 2 when the account's fields were never read.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click
from rich.table import Table

from entrypoints.cli.support import console, run_with_container
from entrypoints.container import Container
from entrypoints.operator.fields import FieldsReport, check


@click.group("fields")
def fields_group() -> None:
    """The account's fields against the traits events carry."""


@fields_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def fields_check(as_json: bool) -> None:
    """List traits of recent events that match no Pardot field (Pardot drops them silently).

    Exits 1 when there is any, so it can run in a scheduled check.
    """

    async def run(container: Container) -> FieldsReport:
        history = await container.history.async_()
        return await check(history, container.repository.async_, now=datetime.now(UTC))

    report = run_with_container(run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report)
    if report.checked_at is None:
        sys.exit(2)
    sys.exit(1 if report.unknown else 0)


def _print(report: FieldsReport) -> None:
    if report.problem:
        click.echo(f"could not read the account's fields: {report.problem}", err=True)
    if report.checked_at is None:
        click.echo("the account's custom fields were never read: nothing to compare", err=True)
    elif not report.unknown:
        click.echo(
            f"every one of the {report.seen} field(s) recent events carried exists in "
            f"Pardot (fields read {report.checked_at:%Y-%m-%d %H:%M} UTC)"
        )
    else:
        table = Table("trait (field id)", "events", "closest field in Pardot")
        for row in report.unknown:
            table.add_row(row["field"], str(row["events"]), row["closest"] or "-")
        console.print(table)
        click.echo(
            "Pardot ignores fields the account does not have: create them in Pardot "
            "(Admin > Configure Fields > Prospect Fields) or rename the traits."
        )
