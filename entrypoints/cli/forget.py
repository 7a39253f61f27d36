"""`forget EMAIL|USER_ID|ANONYMOUS_ID [--in-pardot] [--dry-run]` and `forget --lift WHO`.

In: the command line. Out: what the forget removed (or would), per kind, each prospect of
the person and what became of it, and whether they are now suppressed (the use case is
entrypoints.operator.forget, the same as /admin/forget runs). Exit statuses: see `EXIT_*`.
"""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from domain.errors import PardotError
from domain.forget import InvalidPerson, from_query
from entrypoints.cli.support import EXIT_USAGE, console, run_with_container
from entrypoints.container import Container
from entrypoints.operator.forget import ForgetReport
from entrypoints.operator.forget import forget as forget_person
from entrypoints.operator.forget import lift as lift_person

EXIT_FORGOTTEN = 0  # --lift: at least one identity was taken off the list
EXIT_NOTHING_MATCHED = 1  # nothing removed, nobody suppressed (--lift: none was on the list)
EXIT_PARDOT_FAILED = 3  # removed here, but a prospect could not be deleted in Pardot

_KINDS = {
    "waiting": "queued events not yet delivered",
    "in_flight": "queued events a worker was delivering (its write is stopped)",
    "settled": "delivered, skipped or rejected events",
    "dead": "dead letters",
    "history": "delivery history rows",
    "stamps": "field stamps",
    "links": "identity links, create marks and locks",
    "index": "prospect index rows",
}


@click.command()
@click.argument("who")
@click.option(
    "--in-pardot", is_flag=True, help="also delete the person's prospects in Pardot (one call each)"
)
@click.option("--dry-run", is_flag=True, help="print what would go; remove nothing")
@click.option("--lift", is_flag=True, help="take WHO off the suppression list instead")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def forget(who: str, in_pardot: bool, dry_run: bool, lift: bool, as_json: bool) -> None:
    """Forget a person (a deletion request): remove every event, history row, field stamp and
    identity link of WHO (an email, a userId or an anonymousId) and everyone linked to them,
    and suppress them: later events for them are refused at the door until `--lift`.

    Exit 0 forgotten, 1 nothing matched (nothing removed), 2 bad input, 3 a prospect could not
    be deleted in Pardot.
    """
    try:
        asked = from_query(who)
    except InvalidPerson as error:
        click.echo(f"pardot-destination: {error}", err=True)
        sys.exit(EXIT_USAGE)
    if lift:
        if in_pardot or dry_run:
            click.echo(
                "pardot-destination: --lift takes neither --in-pardot nor --dry-run", err=True
            )
            sys.exit(EXIT_USAGE)
        _lift(who, asked, as_json)
        return

    async def run(container: Container) -> ForgetReport | PardotError:
        sources = await container.forgetting.sources.async_()
        try:
            return await forget_person(asked, sources, in_pardot=in_pardot, dry_run=dry_run)
        except PardotError as error:  # raised before anything is removed
            return error

    report = run_with_container(run)
    if isinstance(report, PardotError):
        click.echo(
            f"pardot-destination: Pardot could not be used, nothing removed: {report}", err=True
        )
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        _print(who, report)
    if report.nothing_matched:
        sys.exit(EXIT_NOTHING_MATCHED)
    sys.exit(EXIT_PARDOT_FAILED if report.pardot_failed else EXIT_FORGOTTEN)


def _lift(who: str, asked: frozenset[str], as_json: bool) -> None:
    async def run(container: Container) -> int:
        suppression = await container.forgetting.personal_data.async_()
        return await lift_person(asked, suppression)

    lifted = run_with_container(run)
    if as_json:
        click.echo(json.dumps({"lifted": lifted}))
    elif lifted:
        click.echo(f"{who}: taken off the suppression list; its events are accepted again")
    else:
        click.echo(f"{who} is not on the suppression list: nothing to lift")
    sys.exit(EXIT_FORGOTTEN if lifted else EXIT_NOTHING_MATCHED)


def _print(who: str, report: ForgetReport) -> None:
    if report.nothing_matched:
        click.echo(
            f"nothing known about {who}: no event, history row, stamp, link or prospect of "
            "theirs is kept (the history keeps DESTINATION_RETENTION_DAYS); nothing removed, "
            "nobody suppressed"
        )
        return
    verb = "would remove" if report.dry_run else "removed"
    table = Table("what", verb, title=f"{who}: {report.identities} identities found")
    for kind, count in report.removed.as_dict().items():
        table.add_row(_KINDS[kind], str(count))
    console.print(table)
    for p in report.prospects:
        name = f"Pardot prospect {p.prospect_id}" if p.prospect_id else f"prospect {p.prospect}"
        click.echo(f"{name}: {p.fate}{f' ({p.error})' if p.error else ''}")
    if not report.in_pardot and report.prospects:
        click.echo(
            "Pardot still holds these prospects and the prospect index keeps their rows: "
            "run with --in-pardot to delete them there too"
        )
    if report.dry_run:
        click.echo("dry run: nothing was removed and nobody was suppressed")
        return
    click.echo(
        f"suppressed: {report.suppressed} identities (kept as salted digests); their events "
        "are refused at the door until `forget --lift`. A write a worker had already sent to "
        "Pardot cannot be withdrawn."
    )
    if report.removed.in_flight:
        click.echo(
            f"{report.removed.in_flight} of their events were in flight: run this again once "
            "they are settled (a lease later for a batch; a submitted Pardot import cannot be "
            "cancelled and runs until complete: /status lists imports in progress)"
        )
    if report.scrubbed is False:
        click.echo(
            "the store's files may still hold old copies of the removed rows until the "
            'database reclaims that space: see "What we keep" in docs/operating.md'
        )
