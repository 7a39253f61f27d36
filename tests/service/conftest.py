"""The real service as a child process (`pardot-destination serve`) against the fake Pardot."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
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

WRITE_KEY = "e2e-write-key"
SHARED_SECRET = "e2e-shared-secret"
LISTENING = re.compile(r"listening on (http://\S+)")
WORKER_STARTED = "delivery worker started"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    """One `serve` child process; its log is kept for assertions and failure reports."""

    env: dict[str, str]
    command: str = "serve"
    process: asyncio.subprocess.Process | None = None
    url: str = ""
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        arguments = ["serve", "--port", "0"] if self.command == "serve" else [self.command]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entrypoints.cli", *arguments,
            env=self.env, cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(found))
        self.url = await asyncio.wait_for(found, 30)

    async def _read(self, found: asyncio.Future[str]) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.log.append(text)
            match = LISTENING.search(text)
            if match and not found.done():
                found.set_result(match.group(1))
            elif self.command == "worker" and WORKER_STARTED in text and not found.done():
                found.set_result("")
        if not found.done():
            found.set_exception(RuntimeError("service exited:\n" + "\n".join(self.log)))

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        if self._reader:
            await self._reader

    async def terminate(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 30)
        if self._reader:
            await self._reader
        return code


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
                if service.process is not None and service.process.returncode is None:
                    await service.kill9()


@pytest.fixture
async def v4_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(tmp_path, 4):
        yield stack


@pytest.fixture
async def v3_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for stack in open_stack(tmp_path, 3):
        yield stack
