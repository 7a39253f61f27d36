"""What every command shares: the console, the configuration, the container, exit statuses."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich.console import Console

from domain.errors import ConfigurationError, InvalidSettings, StoreUnusable
from entrypoints.config import ServiceConfig, load_config
from entrypoints.container import Container, opened

T = TypeVar("T")

# Wide enough for the demo's tables when the output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 140)

EXIT_USAGE = 2  # a usage or setup error, as click itself exits on a bad option


def config() -> ServiceConfig:
    try:
        return load_config()
    except InvalidSettings as exc:
        # One line naming the setting, and a non-zero exit: no traceback for a typo.
        click.echo(f"pardot-destination: configuration error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def container() -> Container:
    return Container(config=config())


def run_with_container(action: Callable[[Container], Awaitable[T]]) -> T:
    """Run `action` with the container's resources open; a setup problem exits 2 in one line."""
    built = container()

    async def run() -> T:
        async with opened(built):
            return await action(built)

    try:
        return asyncio.run(run())
    except (ConfigurationError, StoreUnusable) as exc:
        # A damaged queue file is a setup problem too: one line naming it, no traceback.
        click.echo(f"pardot-destination: {exc}", err=True)
        sys.exit(EXIT_USAGE)
