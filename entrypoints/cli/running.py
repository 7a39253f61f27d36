"""`serve` and `worker`: the service as a process, with or without the HTTP door.

A store that cannot be used or a worker that gave up ends the command with one line and a
non-zero exit instead of a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from domain.errors import StoreUnusable
from entrypoints.cli.support import config as _config
from entrypoints.cli.support import container as _container
from entrypoints.config import admin_exposure_warning, exposure_problem
from entrypoints.container import Container
from entrypoints.service import WorkerFailed, build_app, listen, run_worker_alone

log = logging.getLogger(__name__)
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


@click.command()
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


@click.command()
def worker() -> None:
    """Run only the delivery worker (scale out: many workers may share one queue)."""
    _run(run_worker_alone(_container()))
