"""`pardot-destination`: every command a user needs, one module per command group."""

from __future__ import annotations

import click

from entrypoints.cli.connect import connect
from entrypoints.cli.dead_letters import dead_letters, requeue_dead
from entrypoints.cli.explain import explain
from entrypoints.cli.fields import fields_group
from entrypoints.cli.forget import forget
from entrypoints.cli.index import index
from entrypoints.cli.offline import demo, fake_pardot
from entrypoints.cli.plan import plan_command
from entrypoints.cli.running import serve, worker
from entrypoints.cli.status import status
from entrypoints.cli.sync_file import sync_command
from entrypoints.logs import configure_logging


@click.group()
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning")
def main(log_level: str) -> None:
    """Deliver Segment identify calls to Salesforce Pardot."""
    configure_logging(log_level)


for command in (
    serve,
    worker,
    fake_pardot,
    demo,
    index,
    plan_command,
    connect,
    status,
    dead_letters,
    requeue_dead,
    explain,
    forget,
    fields_group,
    sync_command,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
