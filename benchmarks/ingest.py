"""Ingest throughput: the real webhook with its durable SQLite queue against a bare handler.

Both servers run in their own process on loopback, one after the other, and take the same
load from this process (aiohttp client, keep-alive, fixed concurrency). The figure that
matters is the ratio, measured in the same run on the same machine.

    .venv/bin/python -m benchmarks.ingest [--requests 5000] [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.queue_sqlite import SQLiteEventQueue
from tests.child_server import ChildServer, start_server

WRITE_KEY = "bench-write-key"


def bare_app() -> web.Application:
    """What any aiohttp handler costs: read, parse, answer. Nothing stored."""

    async def accept(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"success": True})

    app = web.Application(client_max_size=500 * 1024)
    app.router.add_post("/v1/identify", accept)
    app.router.add_post("/v1/batch", accept)
    return app


async def serve_bare() -> None:
    runner = web.AppRunner(bare_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on http://{host}:{port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


async def start(kind: str, workdir: Path) -> ChildServer:
    env = {
        **os.environ,
        "PARDOT_API_VERSION": "3",
        "PARDOT_ACCOUNT_ID": "1",
        "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA",
        # Deliveries are paused (see pause_deliveries): nothing is sent to this address.
        "PARDOT_BASE_URL": "http://127.0.0.1:9",
        "DESTINATION_WRITE_KEY": WRITE_KEY,
        "DESTINATION_QUEUE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "PARDOT_DESTINATION_CONFIG": str(workdir / "none.toml"),
    }
    args = ["-m", "benchmarks.ingest", "--serve-bare"] if kind == "bare" else [
        "-m", "entrypoints.cli", "--log-level", "error", "serve", "--port", "0"]  # fmt: skip
    return await start_server(*args, env=env)


async def load(url: str, path: str, bodies: list[bytes], concurrency: int) -> float:
    """Send every body once; returns seconds taken. Any non-200 aborts the run."""
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        pending = iter(bodies)

        async def worker() -> None:
            for body in pending:
                headers = {"Content-Type": "application/json", "Authorization": auth}
                async with session.post(url + path, data=body, headers=headers) as answer:
                    if answer.status != 200:
                        raise RuntimeError(f"{path}: HTTP {answer.status} {await answer.text()}")
                    await answer.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def identify(n: int) -> dict[str, Any]:
    return {
        "type": "identify", "messageId": f"bench-{n}", "userId": f"user-{n}",
        "timestamp": "2026-11-27T10:00:00Z",
        "traits": {"email": f"user{n}@example.com", "first_name": "Bench", "plan": "pro"},
    }  # fmt: skip


async def pause_deliveries(workdir: Path) -> None:
    """Only ingest is measured: the worker would otherwise share the disk and the CPUs."""
    async with SQLiteEventQueue(workdir / "bench.db") as queue:
        await queue.pause_until(datetime.now(UTC) + timedelta(days=1))


async def measure(kind: str, requests: int, batch_size: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pardot-bench-") as workdir:
        await pause_deliveries(Path(workdir))
        server = await start(kind, Path(workdir))
        url = server.url
        try:
            warm_up = [json.dumps(identify(-n)).encode() for n in range(1, 201)]
            await load(url, "/v1/identify", warm_up, concurrency)
            singles = [json.dumps(identify(n)).encode() for n in range(requests)]
            single_seconds = await load(url, "/v1/identify", singles, concurrency)
            offset = requests
            batches = [
                json.dumps({"batch": [identify(offset + b * batch_size + i)
                                      for i in range(batch_size)]}).encode()
                for b in range(max(1, requests // 10))
            ]  # fmt: skip
            batch_seconds = await load(url, "/v1/batch", batches, concurrency)
        finally:
            await server.stop()
    return {
        "single_events_per_s": requests / single_seconds,
        "batch_events_per_s": len(batches) * batch_size / batch_seconds,
    }


async def main(requests: int, batch_size: int, concurrency: int, rounds: int) -> None:
    """Alternate the two servers for several rounds and compare medians: on a small machine
    one short run of either is at the mercy of whatever else the CPUs are doing."""
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "service": []}
    for _ in range(rounds):
        for kind in runs:
            runs[kind].append(await measure(kind, requests, batch_size, concurrency))
    print(f"{rounds} rounds, medians; deliveries paused, so only durable ingest is measured")
    print(f"{'':32}{'bare aiohttp':>16}{'durable service':>18}{'ratio':>9}")
    for key, label in (
        ("single_events_per_s", f"/v1/identify events/s (x{requests})"),
        ("batch_events_per_s", f"/v1/batch events/s ({batch_size}/req)"),
    ):
        bare = statistics.median(run[key] for run in runs["bare"])
        service = statistics.median(run[key] for run in runs["service"])
        print(f"{label:32}{bare:16,.0f}{service:18,.0f}{service / bare:9.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_bare:
        asyncio.run(serve_bare())
    else:
        asyncio.run(main(options.requests, options.batch_size, options.concurrency, options.rounds))
