"""`index rebuild`: pull every prospect of the account into the index, with a progress bar."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from domain.errors import DestinationError
from entrypoints.cli.support import console
from entrypoints.cli.support import container as _container
from entrypoints.container import opened


@click.group("index")
def index() -> None:
    """The index of the account's prospects that decisions are made from."""


@index.command("rebuild")
@click.option("--restart", is_flag=True, help="forget the index and scan from the start")
def index_rebuild(restart: bool) -> None:
    """Pull every prospect of the account into the index (resumes an interrupted scan)."""
    container = _container()

    async def run() -> Any:
        async with opened(container):
            keeper = await container.index_keeper.async_()
            columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeRemainingColumn(), console=console) as progress:
                task = progress.add_task("prospects", total=None)

                def advance(pulled: int, expected: int) -> None:
                    progress.update(task, completed=pulled, total=expected)

                return await keeper.rebuild(advance, restart=restart)

    try:
        report = asyncio.run(run())
    except DestinationError as exc:
        click.echo(f"pardot-destination: {exc}", err=True)
        sys.exit(1)
    if report.complete:
        click.echo(f"index complete: {report.pulled} prospects pulled with {report.calls} calls")
    else:
        click.echo(f"index paused ({report.reason}); run again to resume", err=True)
        sys.exit(1)
