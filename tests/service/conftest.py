"""The real service as a child process (`pardot-destination serve`) against the fake Pardot."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.fake_pardot import FakePardot, running_fake_pardot
from contracts.fake_pardot_state import (
    DEFAULT_BUSINESS_UNIT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
)
from tests.child_server import ChildServer, start_server

WRITE_KEY = "e2e-write-key"
SHARED_SECRET = "e2e-shared-secret"
# The `worker` command serves no HTTP: it is ready once it says so.
WORKER_STARTED = re.compile(r"delivery worker started")


@dataclass
class ServiceProcess:
    """One `serve` (or `worker`) child process; its log is kept for assertions and reports."""

    env: dict[str, str]
    command: str = "serve"
    server: ChildServer | None = None

    @property
    def url(self) -> str:
        return self.server.url if self.server is not None else ""

    @property
    def log(self) -> list[str]:
        return self.server.log if self.server is not None else []

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.process.returncode is None

    async def start(self) -> None:
        if self.command == "serve":
            arguments = ["serve", "--port", "0"]
            self.server = await start_server("-m", "entrypoints.cli.main", *arguments, env=self.env)
        else:
            self.server = await start_server(
                "-m", "entrypoints.cli.main", self.command, env=self.env, ready=WORKER_STARTED
            )

    async def kill9(self) -> None:
        assert self.server is not None
        await self.server.stop(kill=True)

    async def terminate(self) -> int:
        assert self.server is not None
        return await self.server.stop()


@dataclass
class Stack:
    fake: FakePardot
    pardot_url: str
    tmp: Path
    services: list[ServiceProcess] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PARDOT_", "SALESFORCE_", "DESTINATION_"))
        }
        env.update(
            {
                "PARDOT_API_VERSION": str(self.fake.version),
                "PARDOT_ACCOUNT_ID": "507251",
                "PARDOT_BUSINESS_UNIT_ID": DEFAULT_BUSINESS_UNIT_ID,
                "PARDOT_BASE_URL": self.pardot_url,
                "SALESFORCE_LOGIN_URL": self.pardot_url,
                "SALESFORCE_CLIENT_ID": DEFAULT_CLIENT_ID,
                "SALESFORCE_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
                "SALESFORCE_REFRESH_TOKEN": DEFAULT_REFRESH_TOKEN,
                "DESTINATION_WRITE_KEY": WRITE_KEY,
                "DESTINATION_SHARED_SECRET": SHARED_SECRET,
                "DESTINATION_QUEUE_URL": f"sqlite:///{self.tmp / 'queue.db'}",
                "DESTINATION_RETRY_INITIAL_SECONDS": "0.2",
                "PARDOT_RETRY_WAIT_MAX": "0.2",
                "SALESFORCE_TOKEN_FILE": str(self.tmp / "tokens.json"),
                "PARDOT_DESTINATION_CONFIG": str(self.tmp / "absent.toml"),
            }
        )
        env.update(overrides)
        return env

    async def service(self, command: str = "serve", **overrides: str) -> ServiceProcess:
        service = ServiceProcess(self.env(**overrides), command)
        self.services.append(service)
        await service.start()
        return service

    async def wait_until(
        self, url: str, predicate: Callable[[Callable[[str], int]], bool], seconds: float = 20.0
    ) -> dict[str, int]:
        """Poll /metrics until `predicate(count_of_state)` holds for the queue gauges."""
        async with httpx.AsyncClient() as client:
            deadline = asyncio.get_running_loop().time() + seconds
            counts: dict[str, int] = {}
            while asyncio.get_running_loop().time() < deadline:
                metrics = (await client.get(f"{url}/metrics")).text
                counts = {
                    state: int(float(value))
                    for state, value in re.findall(
                        r'pardot_destination_queue_events\{state="(\w+)"\} (\S+)', metrics
                    )
                }
                if predicate(lambda state, now=counts: now.get(state, 0)):
                    return counts
                await asyncio.sleep(0.1)
        raise AssertionError(
            f"queue never reached {predicate}: {counts}\n"
            + "\n".join(s for svc in self.services for s in svc.log[-30:])
        )


async def open_stack(tmp_path: Path, version: int, **fake_options: Any) -> AsyncIterator[Stack]:
    fake_options.setdefault("custom_fields", {"org_id", "premium_users", "plan"})
    fake = FakePardot(version=version, **fake_options)
    async with running_fake_pardot(fake) as server:
        stack = Stack(fake, server.url, tmp_path)
        try:
            yield stack
        finally:
            for service in stack.services:
                if service.running:
                    await service.kill9()


@pytest.fixture
async def v4_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(tmp_path, 4):
        yield stack


@pytest.fixture
async def v3_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(tmp_path, 3):
        yield stack
