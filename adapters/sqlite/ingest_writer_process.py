"""The ingest writer: stores the puts its parent sends, one transaction per read.

`python -m adapters.sqlite.ingest_writer_process FILE [--max-pending N]`, started by
`adapters.sqlite.ingest_writer`. Each stdin line is one put (a JSON array of queue rows); each gets
one stdout line, in order, once its transaction has committed: `["ok", new]`,
`["full", message]` or `["error", message]`. Whatever arrived while the last commit was
being flushed goes into the next one (group commit), with the same rules as puts stored in
the service's own process (`adapters.sqlite.queue_inserts.Inserts`).

Plain blocking code with no event loop and no threads: the process does nothing else.
It ignores SIGINT and SIGTERM, which a terminal or a process manager sends to the whole
group: the parent decides when it ends, by closing stdin once its last request is answered.
If the parent dies, stdin closes too, so the writer never outlives it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
from typing import Any

import orjson

from adapters.sqlite.database import MAX_BATCH, Job, begin_immediate, connect, run_group
from adapters.sqlite.migrations import schema_version
from adapters.sqlite.queue_inserts import Inserts
from adapters.sqlite.queue_schema import MIGRATIONS, SCHEMA_COMPONENT
from domain.ports import QueueFull

READ_BYTES = 1 << 20
STDIN, STDOUT = 0, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--max-pending", type=int, default=None)
    options = parser.parse_args()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    try:
        conn = connect(options.path)
        found = schema_version(conn, SCHEMA_COMPONENT)
    except sqlite3.Error as error:
        sys.exit(f"ingest writer: cannot use {options.path}: {error}")
    if found != len(MIGRATIONS):  # the parent migrates before it starts us
        sys.exit(f"ingest writer: schema version {found}, expected {len(MIGRATIONS)}")
    try:
        _send([_answer("ready", None)])
        serve(conn, Inserts(options.max_pending))
    except BrokenPipeError:
        pass  # the parent died: nobody is left to answer, and what committed stays
    finally:
        conn.close()


def serve(conn: sqlite3.Connection, inserts: Inserts) -> None:
    """Until stdin ends: read what has arrived, store it, answer it."""
    partial = b""
    while chunk := os.read(STDIN, READ_BYTES):
        *lines, partial = (partial + chunk).split(b"\n")
        for start in range(0, len(lines), MAX_BATCH):
            _send(store(conn, inserts, lines[start : start + MAX_BATCH]))


def store(conn: sqlite3.Connection, inserts: Inserts, lines: list[bytes]) -> list[bytes]:
    """One transaction for every put of `lines`; one answer per line, in order."""
    answers: list[bytes | None] = [None] * len(lines)
    jobs: list[tuple[int, Job]] = []
    for index, line in enumerate(lines):
        try:
            rows = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            answers[index] = _answer("error", f"unreadable put: {error}")
            continue
        jobs.append((index, Job(None, writes=True, combine=inserts, item=rows)))
    if jobs:
        try:
            begin_immediate(conn)
            outcomes = run_group(conn, [job for _, job in jobs])
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.rollback()
            outcomes = [(job, None, error) for _, job in jobs]
        for (index, _), (_, value, failure) in zip(jobs, outcomes, strict=True):
            answers[index] = _outcome(value, failure)
    return [answer for answer in answers if answer is not None]


def _outcome(value: Any, failure: BaseException | None) -> bytes:
    if failure is None:
        return _answer("ok", value)
    if isinstance(failure, QueueFull):
        return _answer("full", str(failure))
    return _answer("error", f"{type(failure).__name__}: {failure}")


def _answer(kind: str, value: Any) -> bytes:
    return orjson.dumps([kind, value]) + b"\n"


def _send(answers: list[bytes]) -> None:
    data = memoryview(b"".join(answers))
    while data:
        data = data[os.write(STDOUT, data) :]


if __name__ == "__main__":
    main()
