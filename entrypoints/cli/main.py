"""`pardot-destination`: every command a user needs."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from domain.errors import DestinationError, StoreUnusable
from domain.matching import plan_payload
from entrypoints.cli.connect import connect
from entrypoints.cli.dead_letters import dead_letters, requeue_dead
from entrypoints.cli.explain import explain
from entrypoints.cli.fields import fields_group
from entrypoints.cli.status import status
from entrypoints.cli.support import config as _config
from entrypoints.cli.support import console
from entrypoints.cli.support import container as _container
from entrypoints.cli.sync_file import sync_command
from entrypoints.config import admin_exposure_warning, exposure_problem
from entrypoints.container import Container, opened
from entrypoints.logs import configure_logging
from entrypoints.service import WorkerFailed, build_app, listen, run_worker_alone

log = logging.getLogger("entrypoints.cli.main")
T = TypeVar("T")


def _run(command: Coroutine[Any, Any, T]) -> T:
    """Run a command; a store that cannot be used or a worker that gave up ends it with one
    line and a non-zero exit instead of a traceback."""
    try:
        return asyncio.run(command)
    except StoreUnusable as exc:
        click.echo(f"pardot-destination: {exc}", err=True)
        sys.exit(2)
    except WorkerFailed as exc:
        click.echo(f"pardot-destination: {exc}; exiting for the process manager", err=True)
        sys.exit(1)


@click.group()
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning")
def main(log_level: str) -> None:
    """Deliver Segment identify calls to Salesforce Pardot."""
    configure_logging(log_level)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int, help="0 picks a free port")
@click.option(
    "--insecure-open",
    is_flag=True,
    help="listen beyond loopback without DESTINATION_WRITE_KEY: anyone may post events",
)
def serve(host: str, port: int, insecure_open: bool) -> None:
    """Run the webhook and the delivery worker in one process."""
    config = _config()
    problem = exposure_problem(host, config, insecure_open=insecure_open)
    if problem is not None:
        click.echo(f"pardot-destination: {problem}", err=True)
        sys.exit(2)
    warning = admin_exposure_warning(host, config)
    if warning is not None:
        log.warning(warning)
    _run(_serve(Container(config=config), host, port))


async def _serve(container: Container, host: str, port: int) -> None:
    stop = asyncio.Event()
    worker_failed = asyncio.Event()

    def give_up() -> None:
        worker_failed.set()
        stop.set()

    app = await build_app(container, on_worker_failed=give_up)
    runner = await listen(app, host, port)
    address = runner.addresses[0]
    click.echo(f"pardot-destination listening on http://{address[0]}:{address[1]}", err=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    click.echo("pardot-destination stopping: no new requests, finishing deliveries", err=True)
    await runner.cleanup()
    if worker_failed.is_set():
        raise WorkerFailed("the delivery worker failed after every restart")


@main.command()
def worker() -> None:
    """Run only the delivery worker (scale out: many workers may share one queue)."""
    _run(run_worker_alone(_container()))


@main.command("fake-pardot")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option(
    "--api-version", "version", default="4", show_default=True, type=click.Choice(["3", "4"])
)
@click.option("--custom-field", "custom_fields", multiple=True, help="a custom field id (repeat)")
def fake_pardot(host: str, port: int, version: str, custom_fields: tuple[str, ...]) -> None:
    """Run the fake Pardot (and Salesforce login) to try a pipeline offline."""
    from contracts.fake_pardot import serve_forever

    serve_forever(host, port, version=int(version), custom_fields=list(custom_fields))


@main.command()
@click.option("--seconds", default=60.0, show_default=True, help="give up waiting after this")
def demo(seconds: float) -> None:
    """Start the fake Pardot and the real service, send the seed's examples, show prospects."""
    from entrypoints.cli.demo import run_demo

    sys.exit(asyncio.run(run_demo(console, wait_seconds=seconds)))


@main.group()
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


@main.command("plan")
@click.argument("events", type=click.File("r"), default="-")
def plan_command(events: Any) -> None:
    """Dry run: what each event (JSON object, array, or one per line) would do to Pardot."""
    config = _config()
    version = config.fixed_api_version
    if version is None:
        raise click.UsageError("set PARDOT_API_VERSION to 3 or 4 for a dry run")
    settings = config.destination(version)
    text = events.read()
    try:
        payloads = json.loads(text)
    except json.JSONDecodeError:
        payloads = [json.loads(line) for line in text.splitlines() if line.strip()]
    for payload in payloads if isinstance(payloads, list) else [payloads]:
        decision = plan_payload(payload, settings, destination_keys=config.destination_keys)
        message_id = payload.get("messageId") if isinstance(payload, dict) else None
        click.echo(f"{message_id or '-'}\t{type(decision).__name__}\t{decision.reason}")


for command in (connect, status, dead_letters, requeue_dead, explain, fields_group, sync_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
