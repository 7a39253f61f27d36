"""Issue 11's benchmark: Pardot calls per event and wall time, ours against a Segment-style one.

Run from the repository root: `python -m benchmarks.index [--members 100000] [--only v4-lookup]`.
`--prospects N` makes the account larger than the known members (issue 23's 1,000,000-prospect
account: `--prospects 1000000 --members 500000`); `--bulk-only` skips the batch-only run and
`--computed-floor` works the floor out instead of running it (its scan of a large account on
the fake takes hours).
`--exports` lets our side fill its index by Pardot's exports where they pay (the fake's exports
at `--export-rate` rows a second after `--export-delay` seconds in its queue; issue 23).
`--export-custom-fields` lets the fake's exports carry custom fields, which Pardot's docs do
not say its exports do: the figure for an account where they do (v4 with a lookup field).

The fake Pardot runs in a child process (its own core) answering every call after 100 ms with
at most 5 in flight and a 25,000 calls/day budget. Our side is the real delivery path: the
SQLite queue, the worker, the sync service with its prospect index, the HTTP adapter. The
baseline does what Segment's destination does: v3 one upsert per event, v4 a read by email
then a write; it is measured on a sample of 300 events and scaled (running it on 100,000
events would take hours, which is the point).

The first sync is also run by issue 22's floor (benchmarks.floor: scan in id ranges, then
50 prospects a call) on the same fake, wiped and seeded again after ours; our time and calls
are printed as ratios of the floor's, with the share of slot time our calls kept busy.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.memory.pardot_slots import InMemorySlots
from adapters.pardot.http_repository import PardotHttpRepository
from adapters.salesforce.token_providers import StaticTokenProvider
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.pardot_budget import SQLiteApiCallCounts
from adapters.sqlite.prospect_index import SQLiteProspectIndex
from adapters.sqlite.prospect_store import SQLiteProspectStore
from adapters.sqlite.queue import SQLiteEventQueue
from benchmarks.floor import FloorRun, computed_floor, floor_first_sync
from contracts.fake_pardot import FakePardot, create_app
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID
from domain.budget import DailyBudget
from domain.bulk_cost import ExportPace
from domain.index import IndexKeeper
from domain.index.export import ExportOptions
from domain.settings import DestinationSettings
from domain.sync import SyncService
from domain.sync.import_lane import ImportLane
from entrypoints.logs import configure_logging
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness
from entrypoints.slot_use import MeteredSlots, SlotUse
from entrypoints.worker import DeliveryWorker, WorkerOptions

LATENCY = 0.1
IN_FLIGHT = 5
DAILY = 25_000
SAMPLE = 300
LOOKUP = "org_id"
SHOW_TIMELINE = False  # --timeline
PROFILE = ""  # --profile FILE: cProfile of our first sync's event loop thread
BULK = False  # --bulk: the first sync again with the import lane on
# The fake's Import API as issue 23 sets it for this benchmark.
IMPORT_ROWS_PER_SECOND, IMPORT_QUEUE_DELAY = 5_000.0, 30.0
EXPORTS = False  # --exports: our index filled by exports where they pay
EXPORT_RATE = 5_000.0  # --export-rate: the fake's export rows per second
EXPORT_DELAY = 30.0  # --export-delay: seconds an export waits in the fake's queue
EXPORT_CUSTOM_FIELDS = False  # --export-custom-fields: the fake's exports carry them
EXPORT_USER_ZONE = "America/Los_Angeles"  # the fake's API user, whose zone export dates are in
PROSPECTS: int | None = None  # --prospects: the account's size (default: the known members)
BULK_ONLY = False  # --bulk-only: no batch-only first sync beside the bulk one
COMPUTED_FLOOR = False  # --computed-floor: the floor worked out, not run on the fake


# -- the fake, in a child process --------------------------------------------------------


def _serve_fake(
    version: int,
    port_out: Any,
    ready: Any,
    export_rate: float,
    export_delay: float,
    export_custom_fields: bool,
) -> None:
    from aiohttp import web

    fake = FakePardot(
        version=version,
        custom_fields={LOOKUP, "plan", "audience"},
        latency=LATENCY,
        max_concurrent=IN_FLIGHT,
        daily_budget=DAILY,
        import_rows_per_second=IMPORT_ROWS_PER_SECOND,
        import_queue_delay=IMPORT_QUEUE_DELAY,
        export_rows_per_second=export_rate,
        export_queue_delay=export_delay,
        export_custom_fields=export_custom_fields,
        export_user_time_zone=EXPORT_USER_ZONE,
    )
    fake.journal = []  # when each call came and was answered: the run's timeline

    async def journal(_: web.Request) -> web.Response:
        calls = [(e.operation, e.received, e.answered) for e in fake.journal or ()]
        return web.json_response(calls)

    async def stats(_: web.Request) -> web.Response:
        live = [r for r in fake.records.values() if not r.archived]
        emails = Counter(r.email.lower() for r in live)
        return web.json_response(
            {
                "calls": fake.total_calls,
                "by_operation": dict(fake.calls),
                "prospects": len(live),
                "duplicates": sum(n - 1 for n in emails.values() if n > 1),
                "audience": sum(1 for r in live if r.custom.get("audience") == "true"),
                # The fake's own CPU: where its queries, not the 100 ms, set a pace.
                "cpu": time.process_time(),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )

    async def seed(request: web.Request) -> web.Response:
        body = await request.json()
        for n in range(body["start"], body["stop"]):
            # Members are m{n}; prospects outside the audience x{n} (`--prospects`).
            values = {"email": f"{body.get('prefix', 'm')}{n}@example.com", "plan": "basic"}
            if body.get("lookup"):
                values[LOOKUP] = f"o{n}"
            fake.seed_prospect(**values)
        return web.json_response({"prospects": len(fake.records)})

    async def token(_: web.Request) -> web.Response:
        return web.json_response({"token": fake.issue_access_token()})

    async def reset(_: web.Request) -> web.Response:
        fake.calls.clear()
        fake.reset_daily_budget()
        return web.json_response({})

    async def wipe(_: web.Request) -> web.Response:
        """An empty account again, so a second client starts from the same seed."""
        fake.records.clear()
        fake.calls.clear()
        fake.journal = []
        fake.reset_daily_budget()
        return web.json_response({})

    async def main() -> None:
        app = create_app(fake)
        app.router.add_get("/_bench/stats", stats)
        app.router.add_get("/_bench/journal", journal)
        app.router.add_post("/_bench/seed", seed)
        app.router.add_post("/_bench/token", token)
        app.router.add_post("/_bench/reset", reset)
        app.router.add_post("/_bench/wipe", wipe)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port_out.value = runner.addresses[0][1]
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Fake:
    process: multiprocessing.Process
    url: str

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=600) as client:
            answer = await client.post(f"{self.url}{path}", json=body or {})
            return dict(answer.json())

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=600) as client:
            return dict((await client.get(f"{self.url}/_bench/stats")).json())

    async def journal(self) -> list[tuple[str, float, float | None]]:
        async with httpx.AsyncClient(timeout=600) as client:
            calls = (await client.get(f"{self.url}/_bench/journal")).json()
            return [tuple(e) for e in calls]


def timeline(calls: list[tuple[str, float, float | None]], start: float, end: float) -> str:
    """Per second of the run: the slots held on average and the calls begun, by operation."""
    lines = []
    for second in range(int(end - start) + 1):
        low, high = start + second, start + second + 1
        held = sum(
            max(0.0, min(high, answered or high) - max(low, received))
            for _, received, answered in calls
        )
        begun = Counter(op for op, received, _ in calls if low <= received < high)
        ops = " ".join(f"{op} {n}" for op, n in sorted(begun.items()))
        lines.append(f"  {second:4d}s  slots {held:4.1f}  {ops}")
    return "\n".join(lines)


def start_fake(version: int) -> Fake:
    context = multiprocessing.get_context("spawn")
    port, ready = context.Value("i", 0), context.Event()
    process = context.Process(
        target=_serve_fake,
        args=(version, port, ready, EXPORT_RATE, EXPORT_DELAY, EXPORT_CUSTOM_FIELDS),
        daemon=True,
    )
    process.start()
    ready.wait(30)
    return Fake(process, f"http://127.0.0.1:{port.value}")


# -- events ------------------------------------------------------------------------------


def identify(n: int, second: int, lookup: bool, **traits: Any) -> dict[str, Any]:
    traits = {"email": f"m{n}@example.com", **traits}
    if lookup:
        traits[LOOKUP] = f"o{n}"
    return {
        "type": "identify",
        "messageId": f"e{second}-{n}",
        "userId": f"user-{n}",
        "timestamp": f"2026-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z",
        "traits": traits,
    }


# -- our service -------------------------------------------------------------------------


class Ours:
    batches_in_flight = WorkerOptions.batches_in_flight

    def __init__(
        self, fake: Fake, version: int, lookup: bool, folder: Path, token: str, bulk: bool = False
    ) -> None:
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0), limits=httpx.Limits(max_connections=IN_FLIGHT)
        )
        self.db = SQLiteDatabase(folder / "queue.db")
        self.queue = SQLiteEventQueue(self.db)
        counts = SQLiteApiCallCounts(self.db)
        self.budget = DailyBudget(counts, limit=DAILY)
        self.slot_use = SlotUse(IN_FLIGHT)
        self.repository = PardotHttpRepository(
            self.client,
            StaticTokenProvider(token),
            base_url=fake.url,
            business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
            api_version=version,
            slots=MeteredSlots(InMemorySlots(IN_FLIGHT), self.slot_use),
            on_call=self.budget.count_call,
        )
        store = SQLiteProspectStore(self.db)
        exports = ExportOptions(
            account_zone=UTC,  # the fake's clock
            export_zone=ZoneInfo(EXPORT_USER_ZONE),
            pace=ExportPace(rows_per_second=EXPORT_RATE, queue_delay=EXPORT_DELAY),
        )
        self.keeper = IndexKeeper(
            self.repository,
            SQLiteProspectIndex(self.db),
            lookup_field=LOOKUP if lookup and version == 4 else None,
            budget=self.budget,
            scan_lock=lambda: store.create_lock("(prospect index scan)"),
            bulk=self.repository if EXPORTS else None,
            exports=exports if EXPORTS else None,
        )
        settings = DestinationSettings(
            api_version=version,
            account_id="1",
            business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
            prospect_lookup_field_id=LOOKUP if lookup and version == 4 else None,
        )

        async def waiting() -> int:
            counts = await self.queue.counts()
            return sum(counts.get(s, 0) for s in ("pending", "retry", "leased"))

        # As `serve` builds it with DESTINATION_BULK=auto (the cost-based threshold).
        self.imports = ImportLane(self.repository, version) if bulk else None
        self.service = SyncService(
            self.repository,
            settings,
            store,
            index=self.keeper,
            waiting=waiting,
            imports=self.imports,
        )

    async def deliver(self, payloads: list[dict[str, Any]]) -> Counter[str]:
        for start in range(0, len(payloads), 2_500):
            await self.queue.put(payloads[start : start + 2_500])

        async def service() -> SyncService:
            return self.service

        async def imports() -> ImportLane | None:
            return self.imports

        worker = DeliveryWorker(
            self.queue,
            service,
            readiness=Readiness(),
            metrics=Metrics(),
            options=WorkerOptions(
                backoff_initial=0.2, backoff_max=1.0, batches_in_flight=self.batches_in_flight
            ),
            imports=imports,
        )
        # The worker's own loop, as `serve` and `worker` run it (batches in flight at once).
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        while not running.done():
            counts = await self.queue.counts()
            if not any(counts.get(s, 0) for s in ("pending", "retry", "leased")):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await running
        return Counter({k: v for k, v in (await self.queue.counts()).items() if v})

    async def close(self) -> None:
        await self.client.aclose()
        await self.db.close()


# -- the Segment-style baseline ------------------------------------------------------------


async def baseline(fake: Fake, version: int, token: str, events: list[dict[str, Any]]) -> float:
    """Seconds per event for Segment's way: v3 upsert by email; v4 read by email, then
    update the latest by id or create. Five in flight."""
    async with httpx.AsyncClient(timeout=60) as client:
        headers = {
            "Authorization": f"Bearer {token}",
            "Pardot-Business-Unit-Id": DEFAULT_BUSINESS_UNIT_ID,
        }
        base = f"{fake.url}/api/prospect/version/{version}/do"
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def call(path: str, form: dict[str, str]) -> dict[str, Any]:
            async with slots:
                answer = await client.post(
                    f"{base}/{path}", data={**form, "format": "json"}, headers=headers
                )
                return dict(answer.json())

        async def one(event: dict[str, Any]) -> None:
            traits = {
                k: str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in event["traits"].items()
            }
            email = traits.pop("email")
            if version == 3:
                await call(f"upsert/email/{email}", traits)
                return
            found = await call(f"read/email/{email}", {})
            rows = found.get("prospect")
            rows = rows if isinstance(rows, list) else [rows] if rows else []
            if rows:
                await call(f"update/id/{rows[-1]['id']}", traits)
            else:
                await call(f"create/email/{email}", traits)

        started = time.perf_counter()
        await asyncio.gather(*(one(e) for e in events))
        return (time.perf_counter() - started) / len(events)


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Row:
    config: str
    scenario: str
    events: int
    calls: int
    seconds: float
    base_calls: int
    base_seconds: float
    note: str = ""
    floor: FloorRun | None = None
    busy: float | None = None  # busy slot-seconds / (5 x our seconds)


async def run_config(
    version: int, lookup: bool, members: int, folder: Path, *, first_sync_only: bool = False
) -> list[Row]:
    rows: list[Row] = []
    # The Segment-style baseline's seconds per event (measured with the steady stream).
    per_event = 0.0
    if not first_sync_only:
        rows, per_event = await steady_and_audience(version, lookup, folder)
    if not (BULK and BULK_ONLY):
        rows += await first_sync(version, lookup, members, folder, per_event)
    if BULK:
        rows += await first_sync(version, lookup, members, folder, per_event, bulk=True)
    return rows


async def steady_and_audience(version: int, lookup: bool, folder: Path) -> tuple[list[Row], float]:
    name = f"v{version}" + (" lookup" if lookup else "")
    per_event_calls = 1 if version == 3 else 2
    rows: list[Row] = []
    fake = start_fake(version)
    try:
        token = (await fake.post("/_bench/token"))["token"]

        # 1. Steady stream: 2,000 known people change a field (index built first).
        await fake.post("/_bench/seed", {"start": 0, "stop": 2_000, "lookup": lookup})
        folder_1 = folder / f"{name}-steady".replace(" ", "-")
        folder_1.mkdir(exist_ok=True)
        ours = Ours(fake, version, lookup, folder_1, token)
        before = (await fake.stats())["calls"]
        started = time.perf_counter()
        scan = await ours.keeper.rebuild()
        scan_calls = (await fake.stats())["calls"] - before
        await ours.service.prepare()
        before = (await fake.stats())["calls"]
        started = time.perf_counter()
        await ours.deliver([identify(n, 10, lookup, plan="pro") for n in range(2_000)])
        seconds = time.perf_counter() - started
        calls = (await fake.stats())["calls"] - before
        sample = [identify(n, 20, lookup, plan="team") for n in range(SAMPLE)]
        per_event = await baseline(fake, version, token, sample)
        rows.append(
            Row(name, "steady 2,000 known", 2_000, calls, seconds, 2_000 * per_event_calls,
                per_event * 2_000, f"index scan beforehand: {scan_calls} calls, {scan.pulled} rows")
        )  # fmt: skip
        await ours.close()

        # 2. The same 1,000-member audience twice (800 already in Pardot, 200 new).
        folder_2 = folder / f"{name}-audience".replace(" ", "-")
        folder_2.mkdir(exist_ok=True)
        ours = Ours(fake, version, lookup, folder_2, token)
        audience = [identify(n, 30, lookup, audience=True) for n in range(1_200, 2_200)]
        await ours.deliver(audience)
        again = [dict(e, messageId=f"again-{e['messageId']}") for e in audience]
        before = (await fake.stats())["calls"]
        started = time.perf_counter()
        await ours.deliver(again)
        seconds = time.perf_counter() - started
        calls = (await fake.stats())["calls"] - before
        rows.append(
            Row(name, "1,000 audience, 2nd pass", 1_000, calls, seconds, 1_000 * per_event_calls,
                per_event * 1_000)
        )  # fmt: skip
        await ours.close()
    finally:
        fake.process.kill()
    return rows, per_event


async def first_sync(
    version: int, lookup: bool, members: int, folder: Path, per_event: float, bulk: bool = False
) -> list[Row]:
    """3. First sync of a large audience, most members already in Pardot: a fresh account.
    `bulk`: with the import lane (imports for the updates of known prospects)."""
    name = f"v{version}" + (" lookup" if lookup else "") + (" bulk" if bulk else "")
    per_event_calls = 1 if version == 3 else 2
    rows: list[Row] = []
    fake = start_fake(version)
    try:
        token = (await fake.post("/_bench/token"))["token"]
        known = members * 4 // 5
        await seed(fake, known, lookup)
        others = max(0, (PROSPECTS or known) - known)
        await seed(fake, others, lookup, prefix="x")
        folder_3 = folder / f"{name}-first-sync".replace(" ", "-")
        folder_3.mkdir(exist_ok=True)
        ours = Ours(fake, version, lookup, folder_3, token, bulk=bulk)
        events = [identify(n, 40, lookup, audience=True) for n in range(members)]
        stats = await fake.stats()
        before, fake_cpu = stats["calls"], stats["cpu"]
        stats_before_ops = stats["by_operation"]
        busy_before = ours.slot_use.busy_seconds()
        started, cpu, began = time.perf_counter(), time.process_time(), time.monotonic()
        profile = cProfile.Profile() if PROFILE else None
        if profile is not None:
            profile.enable()
        states = await ours.deliver(events)
        if profile is not None:
            profile.disable()
            profile.dump_stats(PROFILE)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if SHOW_TIMELINE:
            calls_seen = await fake.journal()
            print(f"our first sync, {name}:\n" + timeline(calls_seen, began, time.monotonic()))
        busy = (ours.slot_use.busy_seconds() - busy_before) / (IN_FLIGHT * seconds)
        stats = await fake.stats()
        calls = stats["calls"] - before
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        note = (
            f"{known + others:,} prospects before, {stats['calls']:,} calls of the day's "
            f"{DAILY:,} used, peak RSS ours {rss:,.0f} MB fake {stats['rss_mb']:,.0f} MB, "
            f"{stats['duplicates']} duplicates, {stats['audience']}/{members} carry the trait, "
            f"queue {dict(states)}, CPU ours {cpu:.1f}s fake {stats['cpu'] - fake_cpu:.1f}s, "
            f"calls {dict(Counter(stats['by_operation']) - Counter(stats_before_ops))}"
        )
        await ours.close()

        if COMPUTED_FLOOR:
            floor = computed_floor(
                known + others, known, members - known, latency=LATENCY, in_flight=IN_FLIGHT
            )
            note += f"; floor computed (not run): calls {dict(floor.calls)}"
            rows.append(
                Row(name, f"first sync {members:,} ({known:,} known)", members, calls, seconds,
                    members * per_event_calls, per_event * members, note, floor, busy)
            )  # fmt: skip
            return rows
        # The floor, on the same fake: the account as it was before ours ran.
        await fake.post("/_bench/wipe")
        await seed(fake, known, lookup)
        await seed(fake, others, lookup, prefix="x")
        floor_fake_cpu = (await fake.stats())["cpu"]
        floor = await floor_first_sync(
            fake.url, version, token, DEFAULT_BUSINESS_UNIT_ID, events,
            lookup=LOOKUP if lookup and version == 4 else None, in_flight=IN_FLIGHT,
        )  # fmt: skip
        check = await fake.stats()
        if check["calls"] != floor.total_calls:
            raise RuntimeError(f"the floor counted {floor.total_calls} calls, the fake {check}")
        floor_busy = floor.busy_seconds / (IN_FLIGHT * floor.seconds)
        note += (
            f"; floor: scan {floor.scan_seconds:.1f}s, slots busy {floor_busy:.2f}, "
            f"{check['duplicates']} duplicates, {check['audience']}/{members} carry "
            f"the trait, {check['prospects']:,} prospects, {floor.refused_rows} rows refused, "
            f"fake CPU {check['cpu'] - floor_fake_cpu:.1f}s, "
            f"calls {dict(floor.calls)}"
        )
        rows.append(
            Row(name, f"first sync {members:,} ({known:,} known)", members, calls, seconds,
                members * per_event_calls, per_event * members, note, floor, busy)
        )  # fmt: skip
    finally:
        fake.process.kill()
    return rows


async def seed(fake: Fake, known: int, lookup: bool, prefix: str = "m") -> None:
    for start in range(0, known, 20_000):
        stop = min(known, start + 20_000)
        await fake.post(
            "/_bench/seed", {"start": start, "stop": stop, "lookup": lookup, "prefix": prefix}
        )


def table(rows: list[Row]) -> str:
    lines = [
        f"{'config':<10} {'scenario':<32} {'ours calls':>10} {'/event':>7} {'ours time':>10} "
        f"{'slots busy':>10} {'floor calls':>11} {'floor time':>10} {'x calls':>7} "
        f"{'x time':>7} {'base calls':>10} {'/event':>7} {'base time':>10} "
        f"{'base days@25k':>13}  note"
    ]
    for r in rows:
        busy = "" if r.busy is None else f"{r.busy:.2f}"
        floor_calls = floor_time = times_calls = times_time = ""
        if r.floor is not None:
            floor_calls, floor_time = f"{r.floor.total_calls:,}", f"{r.floor.seconds:.1f}s"
            times_calls = f"{r.calls / r.floor.total_calls:.2f}"
            times_time = f"{r.seconds / r.floor.seconds:.2f}"
        lines.append(
            f"{r.config:<10} {r.scenario:<32} {r.calls:>10,} {r.calls / r.events:>7.3f} "
            f"{r.seconds:>9.1f}s {busy:>10} {floor_calls:>11} {floor_time:>10} "
            f"{times_calls:>7} {times_time:>7} {r.base_calls:>10,} "
            f"{r.base_calls / r.events:>7.2f} {r.base_seconds:>9.0f}s "
            f"{r.base_calls / DAILY:>13.1f}  {r.note}"
        )
    return "\n".join(lines)


async def main() -> None:
    global SHOW_TIMELINE, PROFILE, EXPORTS, EXPORT_RATE, EXPORT_DELAY, BULK, EXPORT_CUSTOM_FIELDS
    global PROSPECTS, BULK_ONLY, COMPUTED_FLOOR
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument(
        "--prospects", type=int, default=None,
        help="the account's prospects (default: the 80%% of members already in it); the rest "
        "are not members",
    )  # fmt: skip
    parser.add_argument(
        "--bulk-only", action="store_true", help="with --bulk: skip the batch-only first sync"
    )
    parser.add_argument(
        "--computed-floor", action="store_true",
        help="work the floor out (calls at 100 ms, 5 in flight) instead of running it",
    )  # fmt: skip
    parser.add_argument("--only", choices=["v3", "v4", "v4-lookup"], default=None)
    parser.add_argument(
        "--batches-in-flight", type=int, default=Ours.batches_in_flight,
        help="the worker's DESTINATION_BATCHES_IN_FLIGHT (1: one batch after another)",
    )  # fmt: skip
    parser.add_argument(
        "--first-sync-only", action="store_true", help="skip the steady and audience scenarios"
    )
    parser.add_argument("--timeline", action="store_true", help="our first sync second by second")
    parser.add_argument("--profile", default="", help="write a cProfile of our first sync here")
    parser.add_argument(
        "--bulk", action="store_true",
        help="run the first sync again with the import lane (the fake imports 5,000 rows/s "
        "after a 30 s queue)",
    )  # fmt: skip
    parser.add_argument(
        "--exports", action="store_true", help="fill our index by exports where they pay"
    )
    parser.add_argument("--export-rate", type=float, default=EXPORT_RATE, help="rows a second")
    parser.add_argument("--export-delay", type=float, default=EXPORT_DELAY, help="queue seconds")
    parser.add_argument(
        "--export-custom-fields", action="store_true",
        help="the fake's exports carry custom fields (Pardot's docs do not say they do)",
    )  # fmt: skip
    args = parser.parse_args()
    SHOW_TIMELINE, PROFILE, BULK = args.timeline, args.profile, args.bulk
    PROSPECTS, BULK_ONLY, COMPUTED_FLOOR = args.prospects, args.bulk_only, args.computed_floor
    EXPORTS, EXPORT_RATE, EXPORT_DELAY = args.exports, args.export_rate, args.export_delay
    EXPORT_CUSTOM_FIELDS = args.export_custom_fields
    Ours.batches_in_flight = args.batches_in_flight
    # As `serve` runs: warnings only, so printing one line per event does not cost the run.
    configure_logging("warning")
    configs = [(3, False), (4, False), (4, True)]
    names = {(3, False): "v3", (4, False): "v4", (4, True): "v4-lookup"}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for version, lookup in configs:
            if args.only and names[(version, lookup)] != args.only:
                continue
            rows += await run_config(
                version, lookup, args.members, Path(tmp), first_sync_only=args.first_sync_only
            )
            print(table(rows), flush=True)
    print()
    print(
        f"fake Pardot: {LATENCY * 1000:.0f} ms per call, {IN_FLIGHT} in flight, {DAILY:,} calls/day"
        + (
            f"; our index by exports where they pay ({EXPORT_RATE:,.0f} rows/s, "
            f"{EXPORT_DELAY:g} s queue"
            + (", custom fields carried" if EXPORT_CUSTOM_FIELDS else "")
            + ")"
            if EXPORTS
            else ""
        )
    )
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
