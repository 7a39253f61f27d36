"""What only the SQLite queue promises: durability, several processes, one file."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.prospect_store import SQLiteProspectStore
from adapters.sqlite.queue import SQLiteEventQueue
from entrypoints.config import sqlite_path_from_url
from tests.queue.conftest import Clock, identify

REPO = Path(__file__).resolve().parents[2]


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


PUT_FOREVER = """
    import asyncio, sys
    from adapters.sqlite.queue import SQLiteEventQueue

    async def writer(queue, task):
        for n in range(10**9):
            mid = f"t{task}-{n}"
            await queue.put([{"messageId": mid, "userId": f"u{task}"}])
            sys.stdout.write(f"stored {mid}\\n")  # one write: a kill cannot split the line
            sys.stdout.flush()

    async def main():
        queue = SQLiteEventQueue(sys.argv[1])
        await asyncio.gather(*(writer(queue, t) for t in range(20)))

    asyncio.run(main())
"""


async def test_every_acknowledged_event_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    child = spawn(PUT_FOREVER, str(path))
    assert child.stdout is not None
    acknowledged = [child.stdout.readline() for _ in range(300)]
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate()
    acknowledged += rest.splitlines(keepends=True)  # printed before the kill, still in the pipe
    stored = {line.split()[1] for line in acknowledged if line.endswith("\n")}
    assert len(stored) >= 300

    async with SQLiteEventQueue(path) as queue:
        found = {row["messageId"] for row in await queue.recent("pending", limit=10**6)}
    assert stored <= found


WORKER = """
    import asyncio, json, sys, time
    from adapters.sqlite.queue import SQLiteEventQueue
    from domain.ports import Settlement

    async def main():
        async with SQLiteEventQueue(sys.argv[1]) as queue:
            idle = 0
            while idle < 20:
                events = await queue.lease(5, 30)
                if not events:
                    idle += 1
                    await asyncio.sleep(0.01)
                    continue
                idle = 0
                start = time.monotonic()
                await asyncio.sleep(0.002)  # a held lease, so the other worker tries to overlap
                held = [start, time.monotonic()]
                print(json.dumps([[e.id, e.payload["userId"], *held] for e in events]), flush=True)
                await queue.settle({e.id: Settlement("delivered", sys.argv[2]) for e in events})

    asyncio.run(main())
"""


async def test_two_processes_share_the_work_without_overlap(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    async with SQLiteEventQueue(path) as queue:
        # Fifty in a row per person: the oldest due event is usually the leased person's next.
        await queue.put([identify(f"m{i}", user=f"u{i // 50}") for i in range(200)])

    workers = [spawn(WORKER, str(path), name) for name in ("w1", "w2")]
    outputs = [(await asyncio.to_thread(w.communicate))[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0]

    leases = [
        (worker, *row)
        for worker, output in enumerate(outputs)
        for line in output.splitlines()
        for row in json.loads(line)
    ]
    event_ids = [row[1] for row in leases]
    assert sorted(event_ids) == list(range(1, 201))  # each event leased exactly once
    assert {row[0] for row in leases} == {0, 1}, "both workers should have had a share"
    spans: dict[str, list[tuple[float, float]]] = {}
    for _, _, user, start, end in leases:
        spans.setdefault(user, []).append((start, end))
    for user, held in spans.items():
        held = sorted(set(held))
        for (_, end), (start, _) in itertools.pairwise(held):
            assert end <= start, f"{user} was worked on by two leases at once"

    async with SQLiteEventQueue(path) as queue:
        assert (await queue.counts())["delivered"] == 200
        assert all(row["attempts"] == 1 for row in await queue.recent("delivered", 500))


async def test_events_and_pause_survive_a_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "queue.db"
    async with SQLiteEventQueue(path, clock=clock) as queue:
        await queue.put([identify("m1")])
        await queue.pause_until(clock.now)
    async with SQLiteEventQueue(path, clock=clock) as queue:
        assert await queue.paused_until() == clock.now
        [event] = await queue.lease(1, 30)
        assert event.payload == identify("m1")
        assert await queue.put([identify("m1")]) == 0


async def test_commits_are_flushed_to_disk_before_they_return(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "queue.db")
    modes = await db.read(
        lambda conn: [
            conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("journal_mode", "synchronous")
        ]
    )
    assert modes == ["wal", 2]  # 2 is FULL: kill -9 cannot tell it from NORMAL, a power cut can
    await db.close()


async def test_concurrent_puts_share_commits(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "queue.db")
    queue = SQLiteEventQueue(db)
    await queue.put([])
    await queue.counts()  # the schema is in place before counting
    before = db.transactions
    added = await asyncio.gather(*(queue.put([identify(f"m{i}")]) for i in range(200)))
    assert sum(added) == 200
    assert db.transactions - before < 50
    await db.close()


async def test_the_queue_and_prospect_store_can_share_one_connection(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "shared.db")
    queue, identities = SQLiteEventQueue(db), SQLiteProspectStore(db)
    await asyncio.gather(queue.put([identify("m1")]), identities.link({"user:u1": "42"}))
    await queue.close()
    await identities.close()  # neither closes what it was lent
    assert await identities.links(["user:u1"]) == {"user:u1": "42"}
    await db.close()
    with pytest.raises(RuntimeError, match="closed"):
        await queue.counts()


async def test_a_file_that_cannot_be_opened_fails_every_call(tmp_path: Path) -> None:
    queue = SQLiteEventQueue(tmp_path / "missing-dir" / "queue.db")
    with pytest.raises(Exception, match="unable to open"):
        await queue.__aenter__()
    with pytest.raises(Exception, match="unable to open"):
        await queue.put([identify("m1")])
    await queue.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///pardot-destination.db", Path("pardot-destination.db")),
        ("sqlite:///data/queue.db", Path("data/queue.db")),
        ("sqlite:////var/lib/pardot/queue.db", Path("/var/lib/pardot/queue.db")),
    ],
)
def test_sqlite_urls_name_a_file(url: str, path: Path) -> None:
    assert sqlite_path_from_url(url) == path


@pytest.mark.parametrize(
    "url",
    ["postgresql://localhost/queue", "sqlite://", "sqlite:///", "queue.db", "sqlite:relative.db"],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///relative/path\.db"):
        sqlite_path_from_url(url)
