"""Ingest throughput, measured with wrk: the real service's durable /v1/identify against a
bare aiohttp handler that only reads, parses and answers.

Why wrk: on a two-core machine a Python load generator is itself the bottleneck, which makes
any server look as fast as the bare one. wrk (C, one thread) leaves the servers the CPU.
Install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk`.

Both servers run in their own process on loopback and take the same wrk settings, one after
the other, alternating for several rounds; every request carries a new messageId, so each is
a real durable write. The service is measured with deliveries paused (ingest alone) and
with deliveries running against the fake Pardot (answering at once) in a third process, v3
and v4: the queue then holds a backlog of `--backlog` events before the burst, so the worker
works flat out beside the door, sharing the interpreter, the CPUs and the database file.
Beside those runs it prints the delivery rate during the burst and after it (the door comes
first: `serve`'s worker gives way while requests crowd, entrypoints/door_traffic.py).

This machine's speed drifts by half within minutes (a shared virtual machine), so each
ratio is taken within one round, between runs seconds apart, and the median of those
ratios is reported beside the median rates.

    .venv/bin/python -m benchmarks.ingest [--seconds 10] [--rounds 3] [--connections 32 64]
        [--backlog 20000]
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


async def start(kind: str, workdir: Path, pardot_url: str, version: int) -> ChildServer:
    env = {
        **os.environ,
        "PARDOT_API_VERSION": str(version),
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


async def fill_backlog(workdir: Path, events: int) -> None:
    """Events waiting before the burst, so the worker delivers all through it."""
    async with SQLiteEventQueue(workdir / "bench.db") as queue:
        for start in range(0, events, 2_500):
            await queue.put(
                [
                    {
                        "type": "identify",
                        "messageId": f"backlog-{n}",
                        "userId": f"backlog-{n}",
                        "timestamp": "2026-11-27T09:00:00Z",
                        "traits": {"email": f"backlog{n}@example.com", "plan": "pro"},
                    }
                    for n in range(start, min(events, start + 2_500))
                ]
            )


async def delivered(workdir: Path) -> tuple[int, int]:
    """Events delivered so far, and events still waiting."""
    async with SQLiteEventQueue(workdir / "bench.db") as queue:
        counts = await queue.counts()
    waiting = sum(counts.get(state, 0) for state in ("pending", "retry", "leased"))
    return counts.get("delivered", 0), waiting


@dataclass(frozen=True)
class Case:
    kind: str  # "bare" or "service"
    deliveries: str  # "paused", "running" or "-"
    version: int = 4

    @property
    def label(self) -> str:
        if self.kind == "bare":
            return "bare aiohttp"
        if self.deliveries == "paused":
            return "service, deliveries paused"
        return f"service, delivering v{self.version}"


CASES = (
    Case("bare", "-"),
    Case("service", "paused"),
    Case("service", "running", 4),
    Case("service", "running", 3),
)


@dataclass(frozen=True)
class Measured:
    rate: float  # requests per second wrk saw answered
    during: float | None = None  # events delivered per second during the burst
    after: float | None = None  # and in the seconds after it


AFTER_SECONDS = 10.0  # how long the delivery rate after the burst is watched


async def measure(
    case: Case, connections: int, seconds: float, fakes: dict[int, str], run: str, backlog: int
) -> Measured:
    with tempfile.TemporaryDirectory(prefix="pardot-bench-") as name:
        workdir = Path(name)
        if case.deliveries == "paused":
            await pause_deliveries(workdir)
        elif case.deliveries == "running":
            await fill_backlog(workdir, backlog)
        server = await start(case.kind, workdir, fakes[case.version], case.version)
        try:
            wrk(server.url, connections, 1, workdir, f"{run}-warm")  # imports, first pages
            if case.deliveries != "running":
                rate = await asyncio.to_thread(wrk, server.url, connections, seconds, workdir, run)
                return Measured(rate)
            before, _ = await delivered(workdir)
            rate = await asyncio.to_thread(wrk, server.url, connections, seconds, workdir, run)
            during, _ = await delivered(workdir)
            await asyncio.sleep(AFTER_SECONDS)
            after, _ = await delivered(workdir)
            return Measured(rate, (during - before) / seconds, (after - during) / AFTER_SECONDS)
        finally:
            await server.stop()


async def start_fake(version: int) -> tuple[asyncio.subprocess.Process, str]:
    fake = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints.cli.main", "fake-pardot", "--port", "0",
        "--api-version", str(version), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert fake.stdout is not None
    url = FAKE_PORT_LINE.search((await fake.stdout.readline()).decode()).group(1)  # type: ignore[union-attr]
    return fake, url


async def main(seconds: float, rounds: int, connections: list[int], backlog: int) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    started = [await start_fake(version) for version in (3, 4)]
    fakes = {3: started[0][1], 4: started[1][1]}
    try:
        results: dict[tuple[int, Case], list[Measured]] = {}
        for round_ in range(rounds):
            for count in connections:
                for case in CASES:
                    run = f"r{round_}-c{count}-{case.kind}-{case.deliveries}-{case.version}"
                    found = await measure(case, count, seconds, fakes, run, backlog)
                    results.setdefault((count, case), []).append(found)
    finally:
        for process, _ in started:
            process.terminate()
            await process.wait()
    print(
        f"wrk -t1, {seconds:g} s per run, median of {rounds} rounds, POST /v1/identify; "
        f"deliveries running: {backlog:,} events waiting before the burst, fake Pardot at 0 ms"
    )
    print(
        f"{'connections':<12}{'server':<30}{'requests/s':>11}{'vs bare':>8}  "
        f"{'ratio per round':<16}{'delivered/s during, after the burst':>36}"
    )
    for count in connections:
        bares = [m.rate for m in results[(count, CASES[0])]]
        for case in CASES:
            found = results[(count, case)]
            ratios = [m.rate / bare for m, bare in zip(found, bares, strict=True)]
            spread = " ".join(f"{r:.2f}" for r in ratios)
            rates = ""
            if case.deliveries == "running":
                during = statistics.median(m.during or 0.0 for m in found)
                after = statistics.median(m.after or 0.0 for m in found)
                rates = f"{during:,.0f}, {after:,.0f}"
            print(
                f"{count:<12}{case.label:<30}{statistics.median(m.rate for m in found):11,.0f}"
                f"{statistics.median(ratios):8.2f}  {spread:<16}{rates:>36}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_bare:
        asyncio.run(serve_bare())
    else:
        asyncio.run(main(options.seconds, options.rounds, options.connections, options.backlog))
