"""Issue 11's efficiency benchmark on a PostgreSQL store, with 1 node and with 3, side by side.

Run from the repository root:
`python -m benchmarks.nodes [--members 20000] [--lookup] [--postgres URL]`.

The fake Pardot of `benchmarks.index` runs in a child process (100 ms a call, 5 in flight,
25,000 calls a day). Each node is a process of its own with the real delivery path (the
PostgreSQL queue, prospect store, index and call counts; the worker; the sync service; the
HTTP adapter with the shared Pardot slots), all on one fresh schema of the PostgreSQL server
(`PARDOT_TEST_POSTGRES_URL`, or the server the tests use). The index is built once, before
the nodes start, as the first node of a deployment would.

Scenarios: 2,000 known people change a field (steady stream), and the first sync of a large
audience (`--members`, four fifths already in Pardot) on a fresh account. What to look for:
Pardot calls per event stay the same with 3 nodes (they share one index and one store), no
duplicate prospect, and the time stays bound by Pardot's 5 calls in flight, not by the nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.pardot.http_repository import PardotHttpRepository
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.pardot_budget import PostgresApiCallCounts
from adapters.postgres.pardot_slots import PostgresSlots
from adapters.postgres.prospect_index import PostgresProspectIndex
from adapters.postgres.prospect_store import PostgresProspectStore
from adapters.postgres.queue import PostgresEventQueue
from adapters.salesforce.token_providers import StaticTokenProvider
from benchmarks.index import DAILY, IN_FLIGHT, LATENCY, LOOKUP, Fake, identify, start_fake
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from domain.budget import DailyBudget
from domain.index import IndexKeeper
from domain.settings import DestinationSettings
from domain.sync import SyncService
from entrypoints.logs import configure_logging
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness
from entrypoints.worker import DeliveryWorker, WorkerOptions

DEFAULT_URL = os.environ.get(
    "PARDOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
OPEN = ("pending", "retry", "leased")


class Node:
    """One node's objects, as the container builds them for a PostgreSQL store."""

    def __init__(self, database: PostgresDatabase, fake_url: str, token: str, lookup: bool):
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60.0))
        self.queue = PostgresEventQueue(database)
        self.budget = DailyBudget(PostgresApiCallCounts(database), limit=DAILY)
        self.repository = PardotHttpRepository(
            self.client,
            StaticTokenProvider(token),
            base_url=fake_url,
            business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
            api_version=4,
            slots=PostgresSlots(database, DEFAULT_BUSINESS_UNIT_ID, limit=IN_FLIGHT),
            on_call=self.budget.count_call,
        )
        store = PostgresProspectStore(database)
        self.keeper = IndexKeeper(
            self.repository,
            PostgresProspectIndex(database),
            lookup_field=LOOKUP if lookup else None,
            budget=self.budget,
            scan_lock=lambda: store.create_lock("(prospect index scan)"),
        )
        settings = DestinationSettings(
            api_version=4,
            account_id="1",
            business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
            prospect_lookup_field_id=LOOKUP if lookup else None,
        )

        async def waiting() -> int:
            counts = await self.queue.counts()
            return sum(counts.get(s, 0) for s in OPEN)

        self.service = SyncService(
            self.repository, settings, store, index=self.keeper, waiting=waiting
        )

    async def deliver_until_empty(self) -> None:
        async def service() -> SyncService:
            return self.service

        await self.service.prepare()
        worker = DeliveryWorker(
            self.queue,
            service,
            readiness=Readiness(),
            metrics=Metrics(),
            options=WorkerOptions(backoff_initial=0.2, backoff_max=1.0),
        )
        while True:
            if await worker.run_once():
                continue
            counts = await self.queue.counts()
            if not any(counts.get(s, 0) for s in OPEN):
                return
            await asyncio.sleep(0.1)  # another node holds what is left


def _node_process(url: str, fake_url: str, token: str, lookup: bool) -> None:
    configure_logging("warning")

    async def run() -> None:
        async with PostgresDatabase(url) as database:
            node = Node(database, fake_url, token, lookup)
            try:
                await node.deliver_until_empty()
            finally:
                await node.client.aclose()

    asyncio.run(run())


@dataclass
class Result:
    calls: int
    seconds: float
    duplicates: int


async def scenario(
    fake: Fake, url: str, token: str, lookup: bool, nodes: int, events: list[dict[str, Any]]
) -> Result:
    """Build the index, queue `events`, then let `nodes` processes deliver them."""
    async with PostgresDatabase(url) as database:
        first = Node(database, fake.url, token, lookup)
        await first.keeper.rebuild()
        for start in range(0, len(events), 2_500):
            await first.queue.put(events[start : start + 2_500])
        await first.client.aclose()
    before = (await fake.stats())["calls"]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    workers = [
        context.Process(target=_node_process, args=(url, fake.url, token, lookup))
        for _ in range(nodes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join)
        assert worker.exitcode == 0, f"a node failed (exit {worker.exitcode})"
    seconds = time.perf_counter() - started
    stats = await fake.stats()
    return Result(stats["calls"] - before, seconds, stats["duplicates"])


def fresh_schema_url(base: str) -> tuple[str, str]:
    schema = f"pardot_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    separator = "&" if "?" in base else "?"
    return schema, f"{base}{separator}options=-csearch_path%3D{schema}"


def drop_schema(base: str, schema: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]


async def run(members: int, lookup: bool, base: str) -> list[tuple[str, int, dict[int, Result]]]:
    rows: list[tuple[str, int, dict[int, Result]]] = []
    for name, count in [("steady 2,000 known", 2_000), (f"first sync {members:,}", members)]:
        results: dict[int, Result] = {}
        for nodes in (1, 3):
            fake = start_fake(4)
            schema, url = fresh_schema_url(base)
            try:
                token = (await fake.post("/_bench/token"))["token"]
                known = 2_000 if count == 2_000 else members * 4 // 5
                for start in range(0, known, 20_000):
                    await fake.post(
                        "/_bench/seed",
                        {"start": start, "stop": min(known, start + 20_000), "lookup": lookup},
                    )
                if count == 2_000:
                    events = [identify(n, 10, lookup, plan="pro") for n in range(count)]
                else:
                    events = [identify(n, 40, lookup, audience=True) for n in range(count)]
                results[nodes] = await scenario(fake, url, token, lookup, nodes, events)
                print(f"{name}, {nodes} node(s): {results[nodes]}", flush=True)
            finally:
                fake.process.kill()
                drop_schema(base, schema)
        rows.append((name, count, results))
    return rows


def table(rows: list[tuple[str, int, dict[int, Result]]]) -> str:
    head = (
        f"{'scenario':<22} {'events':>7} | {'1 node calls':>12} {'/event':>7} {'time':>7} "
        f"{'dup':>4} | {'3 nodes calls':>13} {'/event':>7} {'time':>7} {'dup':>4}"
    )
    lines = [head, "-" * len(head)]
    for name, events, r in rows:
        one, three = r[1], r[3]
        lines.append(
            f"{name:<22} {events:>7,} | {one.calls:>12,} {one.calls / events:>7.3f} "
            f"{one.seconds:>6.1f}s {one.duplicates:>4} | {three.calls:>13,} "
            f"{three.calls / events:>7.3f} {three.seconds:>6.1f}s {three.duplicates:>4}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--lookup", action="store_true", help="v4 with a lookup field")
    parser.add_argument("--postgres", default=DEFAULT_URL, help="server and database to use")
    args = parser.parse_args()
    configure_logging("warning")
    rows = await run(args.members, args.lookup, args.postgres)
    print()
    print(
        f"v4{' lookup' if args.lookup else ''}; fake Pardot: {LATENCY * 1000:.0f} ms per call, "
        f"{IN_FLIGHT} in flight, {DAILY:,} calls/day; PostgreSQL store, nodes as processes"
    )
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
