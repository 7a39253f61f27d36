"""Issue 11's efficiency benchmark on a shared store, with 1 node and with several, side by side.

Run from the repository root:
`python -m benchmarks.nodes [--members 20000] [--lookup] [--store postgres|sqlite]
[--postgres URL]`.

The fake Pardot of `benchmarks.index` runs in a child process (100 ms a call, 5 in flight,
25,000 calls a day). Each node is a process of its own with the real delivery path (the
store's queue, prospect store, index, call counts and Pardot slots; the worker; the sync
service; the HTTP adapter), as `serve` assembles them (the scan and refresh locks of
`entrypoints.assembly`). `--store postgres` (default): 3 nodes on one fresh schema of the
PostgreSQL server (`PARDOT_TEST_POSTGRES_URL`, or the server the tests use). `--store sqlite`:
2 processes on one SQLite file (one machine). The index is built once, before the nodes start,
as the first node of a deployment would.

Scenarios: 2,000 known people change a field (steady stream), and the first sync of a large
audience (`--members`, four fifths already in Pardot) on a fresh account. What to look for:
Pardot calls per event stay the same with several nodes (they share one index, one refresh
and one store: issue 20 asks for at most 5% above one node's), no duplicate prospect, and the
time stays bound by Pardot's 5 calls in flight, not by the nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.pardot.http_repository import PardotHttpRepository
from adapters.postgres.stores import PostgresStores
from adapters.salesforce.token_providers import StaticTokenProvider
from adapters.sqlite.stores import SQLiteStores
from benchmarks.index import DAILY, IN_FLIGHT, LATENCY, LOOKUP, Fake, identify, start_fake
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from domain.budget import DailyBudget
from domain.index import IndexKeeper
from domain.settings import DestinationSettings
from domain.sync import SyncService
from entrypoints.assembly import REFRESH_LOCK, SCAN_LOCK
from entrypoints.logs import configure_logging
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness
from entrypoints.worker import DeliveryWorker, WorkerOptions

DEFAULT_URL = os.environ.get(
    "PARDOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
OPEN = ("pending", "retry", "leased")
NODES = {"postgres": 3, "sqlite": 2}  # processes sharing the store in the second run


Stores = PostgresStores | SQLiteStores


def opened(store: str, url: str) -> contextlib.AbstractAsyncContextManager[Stores]:
    if store == "sqlite":
        return SQLiteStores.opened(url)
    return PostgresStores.opened(url, pool_size=10)


class Node:
    """One node's objects, as the container builds them for the store."""

    def __init__(self, stores: Stores, fake_url: str, token: str, lookup: bool):
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60.0))
        self.queue = stores.queue(max_pending=None)
        self.budget = DailyBudget(stores.api_calls(), limit=DAILY)
        self.slots = stores.pardot_slots(DEFAULT_BUSINESS_UNIT_ID, limit=IN_FLIGHT)
        self.repository = PardotHttpRepository(
            self.client,
            StaticTokenProvider(token),
            base_url=fake_url,
            business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
            api_version=4,
            slots=self.slots,
            on_call=self.budget.count_call,
        )
        store = stores.prospect_store()
        self.keeper = IndexKeeper(
            self.repository,
            stores.prospect_index(),
            lookup_field=LOOKUP if lookup else None,
            budget=self.budget,
            # The locks `serve` uses (entrypoints.assembly): one scan and one refresh at a time
            # for every node on the store.
            scan_lock=lambda: store.create_lock(SCAN_LOCK),
            refresh_lock=lambda: store.create_lock(REFRESH_LOCK),
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

    async def close(self) -> None:
        await self.client.aclose()
        self.slots.close()

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


def _node_process(store: str, url: str, fake_url: str, token: str, lookup: bool) -> None:
    configure_logging("warning")

    async def deliver() -> None:
        async with opened(store, url) as stores:
            node = Node(stores, fake_url, token, lookup)
            try:
                await node.deliver_until_empty()
            finally:
                await node.close()

    asyncio.run(deliver())


@dataclass
class Result:
    calls: int
    seconds: float
    duplicates: int
    by_operation: dict[str, int]


async def scenario(
    fake: Fake,
    store: str,
    url: str,
    token: str,
    lookup: bool,
    nodes: int,
    events: list[dict[str, Any]],
) -> Result:
    """Build the index, queue `events`, then let `nodes` processes deliver them."""
    async with opened(store, url) as stores:
        first = Node(stores, fake.url, token, lookup)
        await first.keeper.rebuild()
        for start in range(0, len(events), 2_500):
            await first.queue.put(events[start : start + 2_500])
        await first.close()
    before = await fake.stats()
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    workers = [
        context.Process(target=_node_process, args=(store, url, fake.url, token, lookup))
        for _ in range(nodes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join)
        assert worker.exitcode == 0, f"a node failed (exit {worker.exitcode})"
    seconds = time.perf_counter() - started
    stats = await fake.stats()
    operations = {
        name: count - before["by_operation"].get(name, 0)
        for name, count in stats["by_operation"].items()
        if count != before["by_operation"].get(name, 0)
    }
    return Result(stats["calls"] - before["calls"], seconds, stats["duplicates"], operations)


def fresh_schema_url(base: str) -> tuple[str, str]:
    schema = f"pardot_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
    separator = "&" if "?" in base else "?"
    return schema, f"{base}{separator}options=-csearch_path%3D{schema}"


def drop_schema(base: str, schema: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]


@contextlib.contextmanager
def fresh_store(store: str, base: str) -> Iterator[str]:
    """A URL (or file) no other run uses, removed afterwards."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield str(Path(folder) / "store.db")
        return
    schema, url = fresh_schema_url(base)
    try:
        yield url
    finally:
        drop_schema(base, schema)


async def run(
    members: int, lookup: bool, store: str, base: str
) -> list[tuple[str, int, dict[int, Result]]]:
    rows: list[tuple[str, int, dict[int, Result]]] = []
    for name, count in [("steady 2,000 known", 2_000), (f"first sync {members:,}", members)]:
        results: dict[int, Result] = {}
        for nodes in (1, NODES[store]):
            fake = start_fake(4)
            try:
                with fresh_store(store, base) as url:
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
                    results[nodes] = await scenario(fake, store, url, token, lookup, nodes, events)
                print(f"{name}, {nodes} node(s): {results[nodes]}", flush=True)
            finally:
                fake.process.kill()
        rows.append((name, count, results))
    return rows


def table(rows: list[tuple[str, int, dict[int, Result]]], many: int) -> str:
    """Each scenario with one node and with `many`, the ratio against one node's calls."""
    head = (
        f"{'scenario':<22} {'events':>7} | {'1 node calls':>12} {'/event':>7} {'time':>7} "
        f"{'dup':>4} | {f'{many} nodes calls':>13} {'/event':>7} {'time':>7} {'dup':>4} | "
        f"{'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, events, r in rows:
        one, several = r[1], r[many]
        lines.append(
            f"{name:<22} {events:>7,} | {one.calls:>12,} {one.calls / events:>7.3f} "
            f"{one.seconds:>6.1f}s {one.duplicates:>4} | {several.calls:>13,} "
            f"{several.calls / events:>7.3f} {several.seconds:>6.1f}s {several.duplicates:>4} | "
            f"{several.calls / one.calls:>6.3f}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--lookup", action="store_true", help="v4 with a lookup field")
    parser.add_argument("--store", choices=sorted(NODES), default="postgres")
    parser.add_argument("--postgres", default=DEFAULT_URL, help="server and database to use")
    args = parser.parse_args()
    configure_logging("warning")
    rows = await run(args.members, args.lookup, args.store, args.postgres)
    print()
    where = "PostgreSQL store" if args.store == "postgres" else "one SQLite file"
    print(
        f"v4{' lookup' if args.lookup else ''}; fake Pardot: {LATENCY * 1000:.0f} ms per call, "
        f"{IN_FLIGHT} in flight, {DAILY:,} calls/day; {where}, nodes as processes"
    )
    print(table(rows, NODES[args.store]))


if __name__ == "__main__":
    asyncio.run(main())
