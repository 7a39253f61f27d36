"""Idle latency: from the door's 200 to the moment the fake Pardot received the write for it.

Run from the repository root: `python -m benchmarks.latency [--count 50] [--latency 0.1 0]`.

The fake Pardot runs in a child process and journals every call with its arrival time
(`FakePardot.journal`, on `time.monotonic()`, one clock for every process of a Linux
machine). `serve` runs in another child against it, on SQLite with its ingest writer, after
`index rebuild`. Identifies are sent one by one, spaced `--spacing` seconds apart, so the
service is idle when each arrives: v3 (a known prospect), v4 known and v4 new (alternating).
Known people are delivered once before the measured identifies (returning visitors).
Each identify carries a marker in a trait; its write is the first create or update call whose
body carries that marker. The same run measures the worker waking on a put and, with
DESTINATION_WAKE_ON_PUT=false, polling only (the baseline: `--modes poll wake`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from tests.child_server import ChildServer, start_server

WRITE_KEY = "bench-write-key"
WRITES = {"create", "update", "upsert", "batchCreate", "batchUpdate", "batchUpsert"}


# -- the fake, in a child process --------------------------------------------------------


def _serve_fake(version: int, latency: float, known: int, port_out: Any, ready: Any) -> None:
    from dataclasses import asdict

    from aiohttp import web

    from contracts.fake_pardot import FakePardot, create_app

    fake = FakePardot(version=version, latency=latency, journal=[])
    for n in range(known):
        fake.seed_prospect(email=f"known{n}@example.com", first_name="Seeded")

    async def journal(request: web.Request) -> web.Response:
        assert fake.journal is not None
        since = int(request.query.get("since", "0"))
        return web.json_response([asdict(e) for e in fake.journal[since:]])

    async def main() -> None:
        app = create_app(fake)
        app.router.add_get("/_bench/journal", journal)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port_out.value = runner.addresses[0][1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Fake:
    process: multiprocessing.process.BaseProcess
    url: str

    async def journal(self, since: int = 0) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.get(f"{self.url}/_bench/journal", params={"since": since})
            return list(answer.json())


def start_fake(version: int, latency: float, known: int) -> Fake:
    context = multiprocessing.get_context("spawn")
    port, ready = context.Value("i", 0), context.Event()
    process = context.Process(
        target=_serve_fake, args=(version, latency, known, port, ready), daemon=True
    )
    process.start()
    ready.wait(30)
    return Fake(process, f"http://127.0.0.1:{port.value}")


# -- the service, in a child process -------------------------------------------------------


def service_env(version: int, fake_url: str, folder: Path, mode: str) -> dict[str, str]:
    return {
        **os.environ,
        "PARDOT_API_VERSION": str(version),
        "PARDOT_ACCOUNT_ID": "1",
        "PARDOT_BUSINESS_UNIT_ID": DEFAULT_BUSINESS_UNIT_ID,
        "PARDOT_BASE_URL": fake_url,
        "SALESFORCE_LOGIN_URL": fake_url,
        "SALESFORCE_CLIENT_ID": "demo-client-id",
        "SALESFORCE_CLIENT_SECRET": "demo-client-secret",
        "SALESFORCE_REFRESH_TOKEN": "demo-refresh-token",
        "DESTINATION_WRITE_KEY": WRITE_KEY,
        "DESTINATION_QUEUE_URL": f"sqlite:///{folder / 'latency.db'}",
        "DESTINATION_WAKE_ON_PUT": "true" if mode == "wake" else "false",
        "PARDOT_DESTINATION_CONFIG": str(folder / "none.toml"),
    }


def rebuild_index(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "--log-level", "error", "index", "rebuild"],
        env=env,
        check=True,
        capture_output=True,
    )


async def start_serve(env: dict[str, str]) -> ChildServer:
    args = ["-m", "entrypoints.cli.main", "--log-level", "error", "serve", "--port", "0"]
    return await start_server(*args, env=env)


# -- one run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str  # "v3 known", "v4 known", "v4 new"
    version: int
    known: bool


@dataclass
class Sample:
    latency: float  # seconds from the 200 to the write's arrival at the fake
    calls_before: list[str] = field(default_factory=list)  # the calls in between


def identify(kind: Kind, n: int, run: str) -> tuple[dict[str, Any], str]:
    marker = f"{run}-{kind.name.replace(' ', '')}-{n}"
    email = f"known{n}@example.com" if kind.known else f"new-{marker}@example.com"
    payload = {
        "type": "identify",
        "messageId": marker,
        "userId": f"user-known-{n}" if kind.known else f"user-{marker}",
        "traits": {"email": email, "first_name": marker},
    }
    return payload, marker


def write_for(marker: str, calls: list[dict[str, Any]]) -> int | None:
    """The position of the first write call whose body carries `marker`."""
    for position, call in enumerate(calls):
        if call["operation"] in WRITES and marker in json.dumps(call["params"]):
            return position
    return None


async def run_kinds(
    kinds: list[Kind], fake: Fake, server: ChildServer, count: int, spacing: float, run: str
) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {k.name: [] for k in kinds}
    auth = (WRITE_KEY, "")
    async with httpx.AsyncClient(base_url=server.url, auth=auth, timeout=30) as client:
        # Known people were delivered once before (as a returning visitor is): linked to
        # their prospect, and the service past its first calls (token, fields, version).
        for kind in kinds:
            if kind.known:
                for n in range(count):
                    payload, _ = identify(kind, n, f"{run}-warm")
                    (await client.post("/v1/identify", json=payload)).raise_for_status()
        await asyncio.sleep(5)
        seen = len(await fake.journal())
        for n, kind in _alternating(kinds, count):
            payload, marker = identify(kind, n, run)
            answer = await client.post("/v1/identify", json=payload)
            answered = time.monotonic()
            answer.raise_for_status()
            deadline = answered + max(spacing, 10.0)
            while True:
                calls = await fake.journal(seen)
                position = write_for(marker, calls)
                if position is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            if position is None:
                raise RuntimeError(f"no write reached the fake for {kind.name} #{n}")
            write = calls[position]
            between = [c["operation"] for c in calls[:position] if c["received"] >= answered]
            samples[kind.name].append(Sample(write["received"] - answered, between))
            seen += len(calls)
            await asyncio.sleep(max(0.0, answered + spacing - time.monotonic()))
    return samples


def _alternating(kinds: list[Kind], count: int) -> Iterator[tuple[int, Kind]]:
    for n in range(count):
        for kind in kinds:
            yield n, kind


async def round_trip(fake: Fake, version: int) -> float:
    """The median time of a direct read call to the fake, as any client sees it."""
    async with httpx.AsyncClient(timeout=30) as client:
        token = (
            await client.post(
                f"{fake.url}/services/oauth2/token",
                data={
                    "grant_type": "refresh_token",
                    "client_id": "demo-client-id",
                    "client_secret": "demo-client-secret",
                    "refresh_token": "demo-refresh-token",
                },
            )
        ).json()["access_token"]
        headers = {
            "Authorization": f"Bearer {token}",
            "Pardot-Business-Unit-Id": DEFAULT_BUSINESS_UNIT_ID,
        }
        url = f"{fake.url}/api/prospect/version/{version}/do/read/email/known0@example.com"
        times = []
        for _ in range(7):
            started = time.monotonic()
            await client.post(url, data={"format": "json"}, headers=headers)
            times.append(time.monotonic() - started)
        return statistics.median(times)


async def measure(
    version: int, latency: float, mode: str, count: int, spacing: float, folder: Path
) -> tuple[dict[str, list[Sample]], float]:
    kinds = [Kind(f"v{version} known", version, True)]
    if version == 4:
        kinds.append(Kind("v4 new", 4, False))
    fake = start_fake(version, latency, count)
    run = f"{mode}{int(latency * 1000)}"
    workdir = folder / f"v{version}-{run}"
    workdir.mkdir()
    try:
        env = service_env(version, fake.url, workdir, mode)
        await asyncio.to_thread(rebuild_index, env)
        trip = await round_trip(fake, version)
        server = await start_serve(env)
        try:
            return await run_kinds(kinds, fake, server, count, spacing, run), trip
        finally:
            await server.stop()
    finally:
        fake.process.kill()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def usual_calls(samples: list[Sample]) -> str:
    """The calls most identifies of a kind made before their write."""
    seen: dict[str, int] = {}
    for sample in samples:
        key = " ".join(sample.calls_before) or "-"
        seen[key] = seen.get(key, 0) + 1
    key, times = max(seen.items(), key=lambda item: item[1])
    return f"{key} ({times}/{len(samples)})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="identifies of each kind")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between identifies")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.1, 0.0])
    parser.add_argument("--versions", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--modes", nargs="+", choices=["poll", "wake"], default=["poll", "wake"])
    args = parser.parse_args()
    header = (
        f"{'fake':>6} {'kind':<9} {'worker':<6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}"
        f" {'round trip ms':>13}  calls before the write (usual)"
    )
    lines = [header]
    with tempfile.TemporaryDirectory(prefix="pardot-latency-") as tmp:
        for latency in args.latency:
            for version in args.versions:
                for mode in args.modes:
                    found, trip = await measure(
                        version, latency, mode, args.count, args.spacing, Path(tmp)
                    )
                    for kind, samples in found.items():
                        ms = [s.latency * 1000 for s in samples]
                        lines.append(
                            f"{latency * 1000:>4.0f}ms {kind:<9} {mode:<6}"
                            f" {statistics.median(ms):>7.0f} {percentile(ms, 0.95):>7.0f}"
                            f" {max(ms):>7.0f} {trip * 1000:>13.0f}  {usual_calls(samples)}"
                        )
                        print(lines[-1], flush=True)
    print()
    print(
        f"{args.count} identifies of each kind, {args.spacing:g} s apart; from the door's 200 to"
        " the write's arrival at the fake"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
