"""How much group commit buys: 5,000 single-event puts from 200 concurrent tasks.

Run from the repository root: `python benchmarks/queue_put.py [--dir DIR]`. Use a directory
on the disk the queue will live on; a tmpfs flushes nothing and hides the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.sqlite.database import MAX_BATCH, SQLiteDatabase
from adapters.sqlite.queue import SQLiteEventQueue

PUTS = 5_000
TASKS = 200


async def measure(
    folder: Path, *, group_commit: bool, writer: bool = False
) -> tuple[float, int | None]:
    """Events per second, and how many transactions of this process carried them (None
    when the ingest writer process stored them)."""
    db = SQLiteDatabase(
        folder / f"group-{group_commit}-{writer}.db", max_batch=MAX_BATCH if group_commit else 1
    )
    queue = SQLiteEventQueue(db)
    await queue.counts()  # schema and WAL in place before the clock starts
    if writer:
        assert await queue.start_writer()
    before = db.transactions

    async def sender(task: int) -> None:
        for n in range(PUTS // TASKS):
            await queue.put([{"messageId": f"{task}-{n}", "userId": f"u{task}", "traits": {}}])

    start = time.perf_counter()
    await asyncio.gather(*(sender(task) for task in range(TASKS)))
    elapsed = time.perf_counter() - start
    transactions = db.transactions - before
    assert (await queue.counts())["pending"] == PUTS
    await queue.close()
    await db.close()
    return PUTS / elapsed, None if writer else transactions


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        baseline, baseline_txns = await measure(Path(folder), group_commit=False)
        grouped, grouped_txns = await measure(Path(folder), group_commit=True)
        child, _ = await measure(Path(folder), group_commit=True, writer=True)
    print(f"{PUTS} puts from {TASKS} tasks, synchronous=FULL, WAL, in {folder}")
    print(f"one transaction per put: {baseline:9,.0f} events/s ({baseline_txns} commits)")
    print(f"group commit:            {grouped:9,.0f} events/s ({grouped_txns} commits)")
    print(f"ingest writer process:   {child:9,.0f} events/s (group commit in the child)")
    print(f"ratio:                   {grouped / baseline:9.1f}x, writer {child / baseline:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
