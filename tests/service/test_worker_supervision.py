"""The worker never dies quietly: guarded rounds, a supervisor, and a readiness that tells."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp.test_utils import TestServer
from dependency_injector import providers

from adapters.memory.prospect_store import InMemoryProspectStore
from adapters.memory.queue import InMemoryEventQueue
from adapters.pardot.in_memory import InMemoryPardot
from adapters.sqlite.queue import SQLiteEventQueue
from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.readiness import STALE_AFTER_SECONDS, Readiness
from entrypoints.service import WorkerFailed, supervise
from entrypoints.worker import FAILED_ROUNDS_BEFORE_RESTART, WorkerOptions
from tests.child_server import ROOT
from tests.service.test_service import AUTH, WRITE_KEY, eventually, identify, serving
from tests.settings import service_config


class FlakyQueue(InMemoryEventQueue):
    """A queue whose pause lookup (asked in the worker's idle wait too) fails on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    async def paused_until(self) -> datetime | None:
        if self.broken:
            raise OSError("disk I/O error")
        return await super().paused_until()


async def test_a_failing_idle_wait_is_survived_and_readiness_says_so_meanwhile(
    tmp_path: Path,
) -> None:
    queue = FlakyQueue()
    queue.broken = True
    container = Container(
        config=service_config(write_keys=WRITE_KEY, queue_url=f"sqlite:///{tmp_path / 'q.db'}")
    )
    container.override_providers(
        queue=providers.Object(queue),
        repository=providers.Object(InMemoryPardot(version=4)),
        prospect_store=providers.Object(InMemoryProspectStore()),
    )
    async with serving(container) as client:

        async def unready() -> bool:
            return (await client.get("/readyz")).status_code == 503

        await eventually(unready)
        reason = (await client.get("/readyz")).json()["reason"]
        assert "delivery" in reason and "OSError" in reason
        queue.broken = False
        assert (await client.post("/v1/identify", json=identify(1), auth=AUTH)).is_success

        async def delivered() -> bool:
            return (await queue.counts())["delivered"] == 1

        await eventually(delivered, seconds=20)
        await eventually(lambda: _ready(client))


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def test_the_supervisor_restarts_a_failed_worker_then_gives_up() -> None:
    readiness = Readiness()
    runs: list[float] = []

    async def dies(stop: asyncio.Event) -> None:
        runs.append(asyncio.get_running_loop().time())
        raise RuntimeError("boom")

    with pytest.raises(WorkerFailed):
        await supervise(dies, asyncio.Event(), readiness, restarts=3, wait=(0.01, 0.02))
    assert len(runs) == 4  # the first run and three restarts
    assert not readiness.ready and "failed" in readiness.reason


async def test_the_supervisor_restarts_a_worker_that_recovers() -> None:
    readiness = Readiness()
    stop = asyncio.Event()
    runs = 0

    async def dies_once(stop_: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        assert readiness.ready  # unready only until the restart
        stop_.set()

    await supervise(dies_once, stop, readiness, restarts=3, wait=(0.01, 0.02))
    assert runs == 2 and readiness.ready


async def readyz(queue: Any, readiness: Readiness) -> httpx.Response:
    app = create_app(queue, readiness=readiness)
    async with (
        TestServer(app, host="127.0.0.1", port=0) as server,
        httpx.AsyncClient(base_url=str(server.make_url(""))) as client,
    ):
        return await client.get("/readyz")


async def test_readyz_reports_a_worker_silent_for_over_a_minute() -> None:
    now = [1000.0]
    readiness = Readiness(clock=lambda: now[0])
    readiness.beat()
    now[0] += STALE_AFTER_SECONDS - 1
    assert (await readyz(InMemoryEventQueue(), readiness)).status_code == 200
    now[0] += 2
    answer = await readyz(InMemoryEventQueue(), readiness)
    assert answer.status_code == 503
    assert "worker has not reported for 61 s" in answer.json()["reason"]


async def test_readyz_reports_a_queue_database_that_cannot_be_opened(tmp_path: Path) -> None:
    queue = SQLiteEventQueue(tmp_path / "no-such-folder" / "queue.db")
    try:
        answer = await readyz(queue, Readiness())
    finally:
        await queue.close()
    assert answer.status_code == 503
    reason = answer.json()["reason"]
    assert "queue database" in reason and str(tmp_path) not in reason


async def test_readyz_names_no_file() -> None:
    readiness = Readiness()
    readiness.fail(
        "the token file /home/ops/.config/pardot-destination/tokens.json was written for "
        "another connected app; see https://help.example.org/a/b"
    )
    reason = (await readyz(InMemoryEventQueue(), readiness)).json()["reason"]
    assert "/home/ops" not in reason and "tokens.json" not in reason
    assert "https://help.example.org/a/b" in reason  # addresses stay


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"], ["status"]])
def test_a_damaged_queue_file_stops_start_up_with_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    damaged = tmp_path / "queue.db"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    env = {
        "PATH": "/usr/bin:/bin",
        "PARDOT_ACCOUNT_ID": "507251",
        "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA",
        "PARDOT_ACCESS_TOKEN": "unused",
        "DESTINATION_QUEUE_URL": f"sqlite:///{damaged}",
        "PARDOT_DESTINATION_CONFIG": str(tmp_path / "absent.toml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", *command],
        env=env,
        cwd=ROOT,  # this checkout's code, as the child servers run it
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert str(damaged) in lines[0] and "move it" in lines[0]


class StoreGone(InMemoryEventQueue):
    """A queue whose leases fail as PostgreSQL's do while the server is gone, `rounds` times."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.failing_rounds = rounds

    async def lease(self, limit: int, lease_seconds: float) -> Any:
        if self.failing_rounds > 0:
            self.failing_rounds -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await super().lease(limit, lease_seconds)


async def test_a_store_down_for_many_rounds_is_waited_out_not_restarted_for() -> None:
    """Far more failed rounds than a restart is for: the store's failure is waited out, the
    readiness says so meanwhile, and the worker delivers once the store answers again."""
    queue = StoreGone(rounds=2 * FAILED_ROUNDS_BEFORE_RESTART)
    await queue.put([identify(1)])
    container = Container(config=service_config(api_version="4"))
    container.override_providers(
        queue=providers.Object(queue),
        repository=providers.Object(InMemoryPardot(version=4)),
        prospect_store=providers.Object(InMemoryProspectStore()),
        worker_options=providers.Object(WorkerOptions(idle_seconds=0.001)),
    )
    readiness = container.readiness()
    worker = await container.worker.async_()
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    reasons: set[str] = set()
    while (await queue.counts())["delivered"] == 0:
        assert not running.done(), running.exception()
        reasons.add(readiness.reason or "")
        await asyncio.sleep(0.005)
    stop.set()
    await running
    assert any(r.startswith("store unreachable: ") for r in reasons), reasons
    assert queue.failing_rounds == 0
