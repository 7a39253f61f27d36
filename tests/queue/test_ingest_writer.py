"""The ingest writer process: puts stored by a child, answered only once durable, and
nothing lost or stored twice when the child or its parent dies.

The queue contract runs against it too (`sqlite-writer` in conftest); these are the parts
only a second process has.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapters.sqlite import ingest_writer
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.queue import SQLiteEventQueue
from domain.ports import QueueFull
from tests.queue.conftest import identify
from tests.queue.test_queue_combined_puts import inserts, traced
from tests.queue.test_queue_scopes_and_schema import ground_truth


def writer_of(queue: SQLiteEventQueue) -> ingest_writer.IngestWriter | None:
    """The writer the queue would send a put to now."""
    return queue._writer.writer if queue._writer is not None else None


def pid_of(queue: SQLiteEventQueue) -> int:
    writer = writer_of(queue)
    assert writer is not None and writer.pid is not None
    return writer.pid


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


async def test_puts_are_stored_by_the_writer_and_answered_once_durable(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "q.db")
    queue = SQLiteEventQueue(db, max_pending=1000)
    statements: list[str] = []
    await traced(db, statements)
    assert await queue.start_writer()
    added = await asyncio.gather(
        *(queue.put([identify(f"m{i}-{j}", user=f"u{i}") for j in range(3)]) for i in range(20)),
        queue.put([identify("m0-0", user="u0")]),  # a duplicate within the same moment
    )
    assert sorted(added) == [0] + [3] * 20
    # Answered means committed: another connection sees every row at once.
    assert ground_truth(db.path)["pending"] == 60
    assert (await queue.counts())["pending"] == 60
    assert inserts(statements) == []  # none of it went through this process's connection
    await queue.close()
    await db.close()


async def test_a_full_backlog_is_refused_by_the_writer_too(tmp_path: Path) -> None:
    async with SQLiteEventQueue(tmp_path / "q.db", max_pending=2) as queue:
        assert await queue.start_writer()
        assert await queue.put([identify("a"), identify("b", user="u2")]) == 2
        with pytest.raises(QueueFull, match="limit 2"):
            await queue.put([identify("c")])
        assert ground_truth(queue._db.path)["pending"] == 2


async def test_a_put_the_writer_cannot_carry_fails_alone_in_this_process(tmp_path: Path) -> None:
    async with SQLiteEventQueue(tmp_path / "plain.db") as plain:
        with pytest.raises(Exception) as without_writer:
            await plain.put([identify("\ud800")])
    async with SQLiteEventQueue(tmp_path / "q.db") as queue:
        assert await queue.start_writer()
        bad, good = await asyncio.gather(
            queue.put([identify("\ud800")]),  # a lone surrogate: not UTF-8, so not a line
            queue.put([identify("fine")]),
            return_exceptions=True,
        )
        assert repr(bad) == repr(without_writer.value)  # the same failure as with no writer
        assert good == 1
        assert writer_of(queue) is not None  # still storing
        assert await queue.put([identify("later")]) == 1


async def test_a_killed_writer_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    async with SQLiteEventQueue(path) as queue:
        assert await queue.start_writer()
        assert await queue.put([identify("before")]) == 1
        # Another process holds the write lock, so the writer waits with our puts in hand.
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        waiting = [asyncio.ensure_future(queue.put([identify(f"w{i}")])) for i in range(10)]
        await asyncio.sleep(0.3)
        assert not any(put.done() for put in waiting)
        os.kill(pid_of(queue), signal.SIGKILL)
        await asyncio.sleep(0.3)
        blocker.rollback()
        blocker.close()
        # Stored again in this process: each caller learns its put is in, none fails.
        assert await asyncio.gather(*waiting) == [1] * 10
        assert await queue.put([identify("after")]) == 1
        assert await queue.put([identify("w3")]) == 0  # known: the retries dedupe as usual
        assert ground_truth(path)["pending"] == 12


async def test_a_dead_writer_is_replaced_and_puts_go_to_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_writer, "RESTART_SECONDS", 0.2)
    db = SQLiteDatabase(tmp_path / "q.db")
    queue = SQLiteEventQueue(db)
    assert await queue.start_writer()
    first = pid_of(queue)
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.3)
    assert await queue.put([identify("meanwhile")]) == 1  # stored here; a restart is due
    statements: list[str] = []
    await traced(db, statements)
    for _ in range(100):
        if writer_of(queue) is not None:
            break
        await asyncio.sleep(0.05)
    assert pid_of(queue) != first
    assert await queue.put([identify("by the new one")]) == 1
    assert inserts(statements) == []  # stored by the new writer, not here
    assert ground_truth(db.path)["pending"] == 2
    await queue.close()
    await db.close()


async def test_puts_sent_just_before_close_are_answered_and_the_writer_ends(
    tmp_path: Path,
) -> None:
    async with SQLiteEventQueue(tmp_path / "q.db") as queue:
        assert await queue.start_writer()
        pid = pid_of(queue)
        puts = [asyncio.ensure_future(queue.put([identify(f"m{i}")])) for i in range(50)]
        await asyncio.sleep(0)  # sent, not yet answered
        await queue.stop_writer()
        assert await asyncio.gather(*puts) == [1] * 50
        assert await asyncio.to_thread(gone, pid)
        assert await queue.put([identify("here")]) == 1  # stored in this process now
        assert ground_truth(queue._db.path)["pending"] == 51


async def test_the_writer_ignores_the_signals_its_process_group_gets(tmp_path: Path) -> None:
    async with SQLiteEventQueue(tmp_path / "q.db") as queue:
        assert await queue.start_writer()
        pid = pid_of(queue)
        os.kill(pid, signal.SIGTERM)  # a process manager stopping the group; the parent
        os.kill(pid, signal.SIGINT)  # decides when the writer ends (after its last answer)
        await asyncio.sleep(0.2)
        assert await queue.put([identify("still")]) == 1
        assert writer_of(queue) is not None


async def test_no_writer_means_puts_stay_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_writer.sys, "executable", str(tmp_path / "no-python"))
    async with SQLiteEventQueue(tmp_path / "q.db") as queue:
        assert not await queue.start_writer()
        assert await queue.put([identify("m1")]) == 1


def test_the_writer_never_outlives_its_parent(tmp_path: Path) -> None:
    parent = textwrap.dedent(
        f"""
        import asyncio
        from adapters.sqlite.queue import SQLiteEventQueue

        async def main():
            queue = SQLiteEventQueue({str(tmp_path / "q.db")!r})
            assert await queue.start_writer()
            await queue.put([{{"type": "identify", "messageId": "m1", "userId": "u"}}])
            print("writer", queue._writer.writer.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        while not line.startswith("writer "):  # the log's own lines come first
            line = process.stdout.readline()
        child = int(line.split()[1])
        process.kill()  # kill -9: no cleanup of any kind in the parent
        process.wait()
        assert gone(child)  # its stdin closed: the writer ended on its own
    finally:
        process.kill()
        process.wait()
    assert ground_truth(tmp_path / "q.db")["pending"] == 1


async def test_a_start_cancelled_half_way_leaves_no_writer_running(tmp_path: Path) -> None:
    async with SQLiteEventQueue(tmp_path / "q.db") as queue:
        await queue.counts()
        others = set(_children())  # what earlier tests left running is not this test's
        starting = asyncio.create_task(ingest_writer.IngestWriter.start(queue._db.path, None))
        children: set[int] = set()
        for _ in range(1000):  # until it is spawned; it is ready only ~0.1 s after that
            await asyncio.sleep(0.002)
            if children := set(_children()) - others:
                break
        assert not starting.done()
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        assert children, "the writer was not spawned yet: the test proves nothing"
        for pid in children:
            assert await asyncio.to_thread(gone, pid)


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.append(int(entry))
    return found
