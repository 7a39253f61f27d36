"""Ingest throughput, measured with wrk: the real service's durable /v1/identify against a
bare aiohttp handler that only reads, parses and answers.

Why wrk: on a two-core machine a Python load generator is itself the bottleneck, which makes
any server look as fast as the bare one. wrk (C, one thread) leaves the servers the CPU.
Install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`.

Both servers run in their own process on loopback and take the same wrk settings, one after
the other, alternating for several rounds; every request carries a new messageId, so each is
a real durable write. The service is measured twice: with deliveries paused (ingest alone)
and with deliveries running against the fake Pardot in a third process (the worker then
shares the CPUs and the database file with ingest).

This machine's speed drifts by half within minutes (a shared virtual machine), so each
ratio is taken within one round, between runs seconds apart, and the median of those
ratios is reported beside the median rates.

    .venv/bin/python -m benchmarks.ingest [--seconds 10] [--rounds 3] [--connections 32 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from adapters.sqlite.queue import SQLiteEventQueue
from tests.child_server import ChildServer, start_server

WRITE_KEY = "bench-write-key"
FAKE_PORT_LINE = re.compile(r"on (http://\S+)")

# wrk's request hook: one identify per request, each with its own messageId and person.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%(auth)s"
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"type":"identify","messageId":"%(run)s-%%d","userId":"user-%%d",' ..
    '"timestamp":"2026-11-27T10:00:00Z","traits":{"email":"user%%d@example.com",' ..
    '"first_name":"Bench","plan":"pro"}}', n, n, n)
  return wrk.format(nil, "/v1/identify", nil, body)
end
"""


def bare_app() -> web.Application:
    """What any aiohttp handler costs: read, parse, answer. Nothing stored."""

    async def accept(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"success": True})

    app = web.Application(client_max_size=500 * 1024)
    app.router.add_post("/v1/identify", accept)
    return app


async def serve_bare() -> None:
    runner = web.AppRunner(bare_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on http://{host}:{port}", file=sys.stderr, flush=True)
    await asyncio.Event().wait()


async def start(kind: str, workdir: Path, pardot_url: str) -> ChildServer:
    env = {
        **os.environ,
        "PARDOT_API_VERSION": "4",
        "PARDOT_ACCOUNT_ID": "1",
        "PARDOT_BUSINESS_UNIT_ID": "0Uv000000000001AAA",
        "PARDOT_BASE_URL": pardot_url,
        "SALESFORCE_LOGIN_URL": pardot_url,
        "SALESFORCE_CLIENT_ID": "demo-client-id",
        "SALESFORCE_CLIENT_SECRET": "demo-client-secret",
        "SALESFORCE_REFRESH_TOKEN": "demo-refresh-token",
        "DESTINATION_WRITE_KEY": WRITE_KEY,
        "DESTINATION_QUEUE_URL": f"sqlite:///{workdir / 'bench.db'}",
        "PARDOT_DESTINATION_CONFIG": str(workdir / "none.toml"),
    }
    args = ["-m", "benchmarks.ingest", "--serve-bare"] if kind == "bare" else [
        "-m", "entrypoints.cli.main", "--log-level", "error", "serve", "--port", "0"]  # fmt: skip
    return await start_server(*args, env=env)


def wrk(url: str, connections: int, seconds: float, workdir: Path, run: str) -> float:
    """Requests per second that wrk saw answered (non-2xx answers make the run fail)."""
    auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    script = workdir / f"{run}.lua"
    script.write_text(WRK_SCRIPT % {"auth": auth, "run": run})
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in done.stdout:
        raise RuntimeError(f"refused requests:\n{done.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]


async def pause_deliveries(workdir: Path) -> None:
    async with SQLiteEventQueue(workdir / "bench.db") as queue:
        await queue.pause_until(datetime.now(UTC) + timedelta(days=1))


@dataclass(frozen=True)
class Case:
    kind: str  # "bare" or "service"
    deliveries: str  # "paused", "running" or "-"

    @property
    def label(self) -> str:
        return "bare aiohttp" if self.kind == "bare" else f"service, deliveries {self.deliveries}"


CASES = (Case("bare", "-"), Case("service", "paused"), Case("service", "running"))


async def measure(case: Case, connections: int, seconds: float, pardot_url: str, run: str) -> float:
    with tempfile.TemporaryDirectory(prefix="pardot-bench-") as name:
        workdir = Path(name)
        if case.deliveries == "paused":
            await pause_deliveries(workdir)
        server = await start(case.kind, workdir, pardot_url)
        try:
            wrk(server.url, connections, 1, workdir, f"{run}-warm")  # imports, first pages
            return await asyncio.to_thread(wrk, server.url, connections, seconds, workdir, run)
        finally:
            await server.stop()


async def main(seconds: float, rounds: int, connections: list[int]) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    fake = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints.cli.main", "fake-pardot", "--port", "0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert fake.stdout is not None
    pardot_url = FAKE_PORT_LINE.search((await fake.stdout.readline()).decode()).group(1)  # type: ignore[union-attr]
    try:
        results: dict[tuple[int, Case], list[float]] = {}
        for round_ in range(rounds):
            for count in connections:
                for case in CASES:
                    run = f"r{round_}-c{count}-{case.kind}-{case.deliveries}"
                    rate = await measure(case, count, seconds, pardot_url, run)
                    results.setdefault((count, case), []).append(rate)
    finally:
        fake.terminate()
        await fake.wait()
    print(f"wrk -t1, {seconds:g} s per run, median of {rounds} rounds, POST /v1/identify")
    print(f"{'connections':<12}{'server':<32}{'requests/s':>12}{'vs bare':>9}  ratio per round")
    for count in connections:
        bares = results[(count, CASES[0])]
        for case in CASES:
            rates = results[(count, case)]
            ratios = [rate / bare for rate, bare in zip(rates, bares, strict=True)]
            spread = " ".join(f"{r:.2f}" for r in ratios)
            print(
                f"{count:<12}{case.label:<32}{statistics.median(rates):12,.0f}"
                f"{statistics.median(ratios):9.2f}  {spread}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_bare:
        asyncio.run(serve_bare())
    else:
        asyncio.run(main(options.seconds, options.rounds, options.connections))
