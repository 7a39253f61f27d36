"""Pardot's 5-in-flight limit shared by every process on one SQLite store: file locks.

Pardot allows 5 concurrent requests per business unit and answers the sixth with error 66,
whichever process sent it; `serve` and `worker` processes on one queue file must share the
five. Each slot is a lock file beside the store (`<queue file>.pardot-slots/<unit>.<n>`),
held with `flock` while a request is in flight.

File locks rather than a slot table in the database: the kernel releases a lock the instant
its process dies (a `kill -9` frees its slots at once, where a table row would wait for its
heartbeat to lapse), and taking or releasing one costs no write transaction and no fsync on
the queue's file. Like SQLite itself, this assumes the processes share one machine (a local
file system); many machines share a PostgreSQL store and its advisory locks instead.

A lock freed by a death is not a call ended: Pardot goes on with a request whose sender died
(and counts it against the five) until it answers. So the file says whether its slot is in
use, and since when (written, never fsynced: it only has to outlive the process). Whoever
takes a slot still marked in use knows its holder died mid-call and leaves it unused until
`AFTER_DEATH_SECONDS` after that call began. Counted from the call's start, not from the
taking: a restarted process takes the slot only once the dead one's leases ran out (10 s),
and waiting 5 s more then would only delay deliveries past the 15 s a restart may take.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

DEFAULT_SLOTS = 5  # Pardot answers 66 to the sixth concurrent request
POLL_SECONDS = (0.005, 0.05)  # first and longest wait between tries while all are taken
AFTER_DEATH_SECONDS = 5.0  # how long a call whose sender died may still run at Pardot
IN_USE, FREE = b"1", b"0"  # the first byte; IN_USE is followed by when the call began
_SINCE = struct.Struct(">d")  # seconds since the epoch: every process reads the same clock


class SQLiteStoreSlots:
    """A PardotSlots for every process whose queue is the SQLite file at `store_path`."""

    def __init__(
        self,
        store_path: str | Path,
        business_unit: str,
        *,
        limit: int = DEFAULT_SLOTS,
        after_death: float = AFTER_DEATH_SECONDS,
    ) -> None:
        if limit < 1:
            raise ValueError("at least one slot is needed")
        self._after_death = after_death
        self.directory = Path(f"{store_path}.pardot-slots")
        # The unit id is 18 letters and digits, but a file name should not trust that.
        self._unit = hashlib.sha256(business_unit.encode()).hexdigest()[:16]
        self._limit = limit
        self._fds: dict[int, int] = {}
        self._mine_free = list(range(limit))  # slots this process is not using
        # At most `limit` tasks of this process try the files; the rest wait here, cheaply.
        self._local = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._local:
            index = await self._take()
            fd = self._fds[index]
            try:
                await asyncio.sleep(self._left_to_a_dead_call(fd))
                os.pwrite(fd, IN_USE + _SINCE.pack(time.time()), 0)
                try:
                    yield
                finally:
                    os.pwrite(fd, FREE, 0)  # only ours: a wait cut short keeps the dead mark
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._mine_free.append(index)

    def _left_to_a_dead_call(self, fd: int) -> float:
        """0, or how much longer the call of a holder that died mid-call may still run."""
        mark = os.pread(fd, 1 + _SINCE.size, 0)
        if mark[:1] != IN_USE:
            return 0.0
        if len(mark) < 1 + _SINCE.size:
            return self._after_death
        began: float = _SINCE.unpack(mark[1:])[0]
        # A start in the future (a clock set back) counts as just now.
        return max(0.0, self._after_death - max(0.0, time.time() - began))

    async def _take(self) -> int:
        wait, longest = POLL_SECONDS
        while (index := self._try_each()) is None:
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)
        return index

    def _try_each(self) -> int | None:
        for index in list(self._mine_free):
            try:
                fcntl.flock(self._fd(index), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process holds it
            self._mine_free.remove(index)
            return index
        return None

    def _fd(self, index: int) -> int:
        if index not in self._fds:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            path = self.directory / f"{self._unit}.{index}"
            self._fds[index] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fds[index]

    def close(self) -> None:
        """Release the files (and with them any lock still held)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
