"""Pardot down for hours: what each waiting event costs, in the store and in serve's memory.

A real `serve` (SQLite, its ingest writer) against the fake Pardot answering every call with
a 503; events are posted until 0, 50,000 and 200,000 wait. At each point: the queue file's
bytes (with its WAL) and the resident memory of serve and its writer. A flat cost per event
means the second stretch costs per event what the first did (the ratio near 1), and memory
does not grow with the backlog: the events wait on disk, not in the process.

Run: `.venv/bin/python -m benchmarks.backlog [--events 200000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.service.conftest import WRITE_KEY, ServiceProcess, open_stack

BATCH = 500
WRITER_PID = re.compile(r"ingest writer started, pid (\d+)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def store_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("queue.db*"))


def event(n: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": f"user-{n}",
        "timestamp": "2026-11-27T09:00:00Z",
        "traits": {"email": f"person{n}@example.com", "first_name": f"P{n}", "plan": "pro"},
    }


def memory(service: ServiceProcess) -> int:
    assert service.server is not None
    writers = [int(m.group(1)) for line in service.log if (m := WRITER_PID.search(line))]
    return rss_kib(service.server.process.pid) + (rss_kib(writers[-1]) if writers else 0)


async def measure(points: list[int]) -> list[tuple[int, int, int]]:
    rows: list[tuple[int, int, int]] = []
    with tempfile.TemporaryDirectory() as folder:
        async for stack in open_stack(Path(folder), 4):
            stack.fake.fail_next(100_000, status=503, err_code=None)  # Pardot down throughout
            service = await stack.service(DESTINATION_RETRY_INITIAL_SECONDS="30")
            sent = 0
            async with httpx.AsyncClient(timeout=60) as client:
                for point in points:
                    while sent < point:
                        batch = [event(n) for n in range(sent, min(sent + BATCH, point))]
                        answer = await client.post(
                            f"{service.url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, "")
                        )
                        assert answer.status_code == 200, answer.text
                        sent += len(batch)
                    await asyncio.sleep(2)  # the worker has leased and settled what it will
                    rows.append((point, store_bytes(Path(folder)), memory(service)))
                    print(
                        f"  {point:>8,} waiting: {rows[-1][1]:>12,} bytes, {rows[-1][2]:>8,} KiB",
                        flush=True,
                    )
            counts = await stack.wait_until(service.url, lambda c: True)
            assert counts.get("dead", 0) == 0 and counts.get("delivered", 0) == 0
            await service.terminate()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    points = [0, args.events // 4, args.events]
    print(f"Pardot down; events waiting at {points}")
    rows = await measure(points)
    (_, b0, m0), (n1, b1, m1), (n2, b2, m2) = rows
    first, second = (b1 - b0) / n1, (b2 - b1) / (n2 - n1)
    print(
        f"store: {first:.0f} bytes per event up to {n1:,}, {second:.0f} from there: "
        f"ratio {second / first:.2f}"
    )
    print(
        f"memory: {m0:,} KiB with nothing waiting, {m1:,} at {n1:,}, {m2:,} at {n2:,}: "
        f"{(m2 - m1) * 1024 / (n2 - n1):.1f} bytes per event past {n1:,} (the first stretch "
        "also warms the process up)"
    )


if __name__ == "__main__":
    asyncio.run(main())
