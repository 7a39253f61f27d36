"""One SQLite connection on one thread, shared by the queue and the identity map.

Every call becomes a job for that thread, so the event loop never waits on the disk. The
thread runs whatever jobs have piled up in one transaction with one fsync (group commit):
while a commit is being flushed, new requests queue up and share the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from domain.errors import StoreUnusable

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]
# Does for several calls at once what each asked: one result, or the exception to raise in
# that caller, per item and in order (see SQLiteDatabase.write_combined).
Combine = Callable[[sqlite3.Connection, list[Any]], list[Any]]

BUSY_TIMEOUT_SECONDS = 30.0  # how long another process may hold the write lock
MAX_BATCH = 1000  # jobs per transaction, so one burst cannot hold the lock for long
LOCK_RETRY_SECONDS = (0.0002, 0.002)  # first and longest wait between tries for the lock


def to_micros(when: datetime) -> int:
    """Integer microseconds since the epoch: exact, and comparable inside SQL."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # naive times are taken as UTC, never as local time
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)


@dataclass
class Job:
    work: Work | None  # None for a combined call: `combine` of its `item`
    writes: bool
    # An asyncio future, resolved on its own loop: the database thread hands a whole
    # transaction's results over in one `call_soon_threadsafe`, not one wake-up per caller.
    future: asyncio.Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    combine: Combine | None = None
    item: Any = None


Outcome = tuple[Job, Any, BaseException | None]
_STOP = object()


class SQLiteDatabase:
    """The connection's owner. Adapters given a path open their own; pass one to share it.

    `max_batch=1` turns group commit off (one transaction per call), for benchmarks.
    """

    def __init__(self, path: str | Path, *, max_batch: int = MAX_BATCH) -> None:
        self.path = Path(path)
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[Job | object] = queue.SimpleQueue()
        self._broken: BaseException | None = None
        self._closed = False
        self.transactions = 0  # numbers the current transaction, for caches valid within one
        self._thread = threading.Thread(target=self._serve, name=f"sqlite:{path}", daemon=True)
        self._thread.start()

    def prepare(self, statements: Sequence[str] | Work) -> None:
        """Queue schema statements (or a migration function) ahead of any later call.

        A failure breaks the database: every later call raises it.
        """

        def create(conn: sqlite3.Connection) -> None:
            if callable(statements):
                statements(conn)
                return
            for statement in statements:
                conn.execute(statement)

        self._submit(Job(create, writes=True))

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in the next write transaction; returns once that transaction is durable."""
        return await self._call(work, writes=True)

    async def write_combined(self, combine: Combine, item: Any) -> Any:
        """Like `write`, but calls with the same `combine` that meet in one transaction run
        as one `combine(conn, items)`: one statement for many callers instead of one each.

        If `combine` raises, each item runs again alone, so one bad item fails only its
        own caller.
        """
        return await self._call(None, writes=True, combine=combine, item=item)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(work, writes=False)

    async def check(self) -> None:
        """Raise StoreUnusable, naming the file and what to do, unless it opens and reads."""
        try:
            await self.read(_read_whole)
        except sqlite3.DatabaseError as error:
            raise StoreUnusable(unusable_message(self.path, error)) from error

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    async def _call(
        self,
        work: Callable[[sqlite3.Connection], T] | None,
        *,
        writes: bool,
        combine: Combine | None = None,
        item: Any = None,
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(Job(work, writes, future, loop, combine, item))
        return await future

    def _submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path} is closed")
        self._jobs.put(job)

    def _serve(self) -> None:
        try:
            conn = connect(self.path)
        except BaseException as error:  # reported to every caller instead of dying silently
            self._broken = error
            conn = None
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._run(conn, batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _next_batch(self) -> tuple[list[Job], bool]:
        batch: list[Job] = []
        item = self._jobs.get()
        while item is not _STOP:
            assert isinstance(item, Job)
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _run(self, conn: sqlite3.Connection | None, batch: list[Job]) -> None:
        # A caller cancelled before its turn gets no side effects; once running, it cannot be.
        batch = [j for j in batch if j.future is None or not j.future.cancelled()]
        if not batch:
            return
        if conn is None or self._broken is not None:
            _fail(batch, self._broken or RuntimeError("no connection"))
            return
        results: list[Outcome] = []
        try:
            # IMMEDIATE takes the write lock up front, so two processes never deadlock upgrading.
            if any(j.writes for j in batch):
                begin_immediate(conn)
            else:
                conn.execute("BEGIN")
            self.transactions += 1
            for group in _runs(batch):
                if self._broken is not None:  # a schema step failed earlier in this batch
                    results.extend((job, None, self._broken) for job in group)
                else:
                    outcomes = run_group(conn, group)
                    if group[0].future is None and outcomes[0][2] is not None:
                        self._broken = outcomes[0][2]  # a schema step failed
                    results.extend(outcomes)
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.rollback()
            if any(job.future is None for job in batch):
                self._broken = error
            _fail(batch, error)
            return
        _hand_over([(job, value, failure) for job, value, failure in results])


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection as every writer of a queue file needs it: WAL, full fsync, our own
    transactions (isolation_level=None: BEGIN IMMEDIATE is ours, not the module's)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    # Two processes opening a new file at once: switching it to WAL answers "locked" at
    # once instead of waiting for the busy timeout, so wait here.
    _while_locked(conn, "PRAGMA journal_mode=WAL", pauses=(0.01, 0.01))
    # FULL fsyncs the WAL on every commit: an acknowledged event survives a power cut.
    conn.execute("PRAGMA synchronous=FULL")
    # Freed cells and pages are overwritten with zeros: an updated, purged or forgotten event
    # leaves no copy in the file's free space. Debian's and Ubuntu's SQLite do this by default
    # (compiled with SQLITE_SECURE_DELETE); saying it keeps other builds from doing less.
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def begin_immediate(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, trying again every fraction of a millisecond while another process
    writes, for up to BUSY_TIMEOUT_SECONDS.

    SQLite's own busy handler sleeps 1, 2, 5, 10 and on up to 100 ms between tries. With
    `serve` and its ingest writer both writing all the time, a writer slept through most of
    the other's short transactions: ingest with deliveries running fell to 0.2 of bare.
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        _while_locked(conn, "BEGIN IMMEDIATE", pauses=LOCK_RETRY_SECONDS)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT_SECONDS * 1000)}")


def _while_locked(conn: sqlite3.Connection, sql: str, *, pauses: tuple[float, float]) -> None:
    """`sql`, tried again while SQLite answers "locked", for up to BUSY_TIMEOUT_SECONDS;
    `pauses` are the first and the longest wait between tries (doubling in between)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause, longest = pauses
    while True:
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, longest)


def _read_whole(conn: sqlite3.Connection) -> None:
    """Read every page once (`PRAGMA quick_check`): a damaged page in the middle of the file
    otherwise surfaced only when the first commit touched it, as a traceback. About a
    second per GB, once per start."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    (found,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if found != "ok":
        first = " ".join(str(found).split())  # SQLite's report spans lines: keep one
        raise sqlite3.DatabaseError(f"database disk image is malformed: {first[:200]}")


def unusable_message(path: Path, error: sqlite3.DatabaseError) -> str:
    """One line: which file, what SQLite said, and what the operator can do about it."""
    if isinstance(error, sqlite3.OperationalError):
        advice = (
            "check that its folder exists and that this user may read and write both; "
            "or set DESTINATION_QUEUE_URL to another file"
        )
    else:
        advice = (
            "the file is damaged or is not a queue: stop every process using it, move it and "
            "its -wal and -shm files aside (`sqlite3 FILE .recover` may save its events) or "
            "restore a backup, then start again (an empty queue is created)"
        )
    return f"the queue file {path} cannot be used ({error}): {advice}"


def _isolated(conn: sqlite3.Connection, job: Job) -> tuple[Any, BaseException | None]:
    """Run one job in a savepoint, so its failure undoes only its own changes."""
    work = job.work
    if work is None:
        assert job.combine is not None
        work = _combined_alone(job.combine, job.item)
    conn.execute("SAVEPOINT job")
    try:
        value = work(conn)
    except Exception as error:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return None, error
    conn.execute("RELEASE job")
    return value, None


def _runs(batch: list[Job]) -> list[list[Job]]:
    """The batch in order, with each run of neighbours sharing one `combine` as one group."""
    groups: list[list[Job]] = []
    for job in batch:
        last = groups[-1][-1] if groups else None
        if job.combine is not None and last is not None and last.combine == job.combine:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def run_group(conn: sqlite3.Connection, group: list[Job]) -> list[Outcome]:
    """One group of `_runs`, inside the caller's transaction: each job's value or failure."""
    if len(group) > 1:
        return _together(conn, group)
    (job,) = group
    return [(job, *_isolated(conn, job))]


def _together(conn: sqlite3.Connection, group: list[Job]) -> list[Outcome]:
    """One `combine` call for the group in a savepoint; each job alone if that call fails."""
    combine = group[0].combine
    assert combine is not None
    conn.execute("SAVEPOINT jobs")
    try:
        values = combine(conn, [job.item for job in group])
    except Exception:
        conn.execute("ROLLBACK TO jobs")
        conn.execute("RELEASE jobs")
        return [(job, *_isolated(conn, job)) for job in group]
    conn.execute("RELEASE jobs")
    return [
        (job, None, value) if isinstance(value, BaseException) else (job, value, None)
        for job, value in zip(group, values, strict=True)
    ]


def _combined_alone(combine: Combine, item: Any) -> Work:
    """The job's work when it runs alone: `combine` of its one item, raising its failure."""

    def work(conn: sqlite3.Connection) -> Any:
        (value,) = combine(conn, [item])
        if isinstance(value, BaseException):
            raise value
        return value

    return work


def _fail(batch: list[Job], error: BaseException) -> None:
    _hand_over([(job, None, error) for job in batch])


def _hand_over(outcomes: list[Outcome]) -> None:
    """Resolve the callers' futures: one hop per event loop for the whole transaction."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        loop = outcome[0].loop
        if loop is not None:
            by_loop.setdefault(loop, []).append(outcome)
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, mine)


def _resolve(outcomes: list[Outcome]) -> None:
    for job, value, failure in outcomes:
        future = job.future
        if future is None or future.done():  # a caller that gave up
            continue
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(value)
