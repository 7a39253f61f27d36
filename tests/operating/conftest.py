"""The operator's commands run as a user runs them (click's CliRunner), on real files and a
real SQLite queue, against the fake Pardot served over HTTP from the test's event loop.

A command runs `asyncio.run` itself, so it is invoked in a worker thread while the fake keeps
answering on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from entrypoints.cli.main import main
from entrypoints.config import load_config
from entrypoints.container import Container, opened


@dataclass
class Operator:
    """A terminal at the operator's desk: the settings, the queue file, the fake account."""

    fake: FakePardot
    env: dict[str, str]
    tmp: Path

    async def run(self, *args: str, input: str | None = None, **env: str) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(
            runner.invoke, main, list(args), input=input, env={**self.env, **env}
        )

    def write(self, name: str, events: Iterable[Any], *, array: bool = False) -> Path:
        path = self.tmp / name
        rows = list(events)
        if array:
            path.write_text(json.dumps(rows, indent=1))
        else:
            path.write_text("".join(json.dumps(e) + "\n" for e in rows))
        return path

    def container(self, **env: str) -> Container:
        """The container the commands build, for putting events in the queue and delivering."""
        previous = dict(os.environ)
        os.environ.update({**self.env, **env})
        try:
            config = load_config()
        finally:
            os.environ.clear()
            os.environ.update(previous)
        return Container(config=config)

    async def deliver(self, rounds: int = 3, **env: str) -> None:
        """What `serve` does with the queue: the real worker, a few rounds, in this loop."""
        built = self.container(**env)
        async with opened(built):
            worker = await built.worker.async_()
            for _ in range(rounds):
                await worker.run_once()

    async def enqueue(self, *events: dict[str, Any]) -> None:
        built = self.container()
        async with opened(built):
            await (await built.queue.async_()).put(list(events))


def identify(n: int, user: str, minute: int = 0, **traits: Any) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m-{n}",
        "userId": user,
        "timestamp": f"2026-03-01T10:{minute:02d}:00Z",
        "traits": traits,
    }


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("PARDOT_", "SALESFORCE_", "DESTINATION_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env or TOML file from the checkout


async def _operator(tmp_path: Path, version: int) -> AsyncIterator[Operator]:
    fake = FakePardot(version=version, custom_fields={"org_id", "premium_users", "plan"})
    async with running_fake_pardot(fake) as server:
        env = {
            "PARDOT_API_VERSION": str(version),
            "PARDOT_ACCOUNT_ID": "507251",
            "PARDOT_BUSINESS_UNIT_ID": DEFAULT_BUSINESS_UNIT_ID,
            "PARDOT_BASE_URL": server.url,
            "SALESFORCE_LOGIN_URL": server.url,
            "SALESFORCE_CLIENT_ID": DEFAULT_CLIENT_ID,
            "SALESFORCE_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "SALESFORCE_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
            "DESTINATION_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
            "DESTINATION_RETRY_INITIAL_SECONDS": "0.05",
            "PARDOT_RETRY_WAIT_MAX": "0.05",
            "SALESFORCE_TOKEN_FILE": str(tmp_path / "tokens.json"),
            "PARDOT_DESTINATION_CONFIG": str(tmp_path / "absent.toml"),
        }
        yield Operator(fake, env, tmp_path)


@pytest.fixture
async def v4(tmp_path: Path) -> AsyncIterator[Operator]:
    async for operator in _operator(tmp_path, 4):
        yield operator


@pytest.fixture
async def v3(tmp_path: Path) -> AsyncIterator[Operator]:
    async for operator in _operator(tmp_path, 3):
        yield operator
