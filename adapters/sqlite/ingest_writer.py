"""The service's handle on its ingest writer: a child process that stores SQLite puts.

Why a process: a put is acknowledged only once its transaction is on disk, and when the
database thread shared the interpreter with the event loop, the two took turns on the GIL.
The thread waited for the loop to let go before and after every SQLite call, so a commit
started only once the loop had nothing else to do, and under load every connection waited
on the same commit (ingest ran at about 0.4 of a bare aiohttp handler under `wrk -c32`). The
writer has an interpreter of its own: it commits while the loop reads the next requests.

The child is `python -m adapters.sqlite.ingest_writer_process` (the rules of a put are
`adapters.sqlite.queue_inserts.Inserts`, the same in both). It reads one line per put on
stdin, stores whatever has arrived in one transaction, and answers each line in order on
stdout once it is durable. An answer lost because either side died means the sender saw no
acknowledgement and retries; the messageId makes that retry a duplicate, not a second event.

If the child cannot start, the queue stores every put in this process, as before. If it dies,
the puts it had not answered are stored again in this process (the messageId makes that
harmless for one the child had committed), and so is every put until a new child, started
`RESTART_SECONDS` later (`KeptWriter`), says it is ready.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from domain.ports import QueueFull

log = logging.getLogger(__name__)

START_SECONDS = 30.0  # the child opens the file under the same busy timeout as we do
STOP_SECONDS = 10.0  # after stdin closes, time to finish the transaction in hand
RESTART_SECONDS = 5.0  # after a writer died: a writer that dies at once costs one try in 5 s


class IngestWriteFailed(Exception):
    """The writer could not store a put, or went away before saying it had."""


class WriterGone(IngestWriteFailed):
    """The writer exited before answering: the put may or may not be stored."""


class _Replies(asyncio.SubprocessProtocol):
    def __init__(self, writer: IngestWriter) -> None:
        self._writer = writer
        self._partial = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._writer.answered(orjson.loads(line))

    def process_exited(self) -> None:
        self._writer.alive = False  # no new lines; answers already in the pipe still count

    def connection_lost(self, exc: Exception | None) -> None:
        self._writer.exited()  # the process is gone and its stdout read to the end


class IngestWriter:
    """Sends puts to the child and hands each caller its answer, in the order sent."""

    def __init__(self) -> None:
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._ready: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] | None = None
        self._sent: collections.deque[asyncio.Future[int]] = collections.deque()
        self._unsent: list[tuple[asyncio.Future[int], bytes]] = []
        self.alive = False
        self._closing = False

    @classmethod
    async def start(cls, path: Path, max_pending: int | None) -> IngestWriter | None:
        """The running writer of `path`, or None (logged) when it cannot be started."""
        writer = cls()
        loop = asyncio.get_running_loop()
        writer._ready = loop.create_future()
        writer._gone = loop.create_future()
        limit = [] if max_pending is None else ["--max-pending", str(max_pending)]
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _Replies(writer),
                sys.executable, "-m", "adapters.sqlite.ingest_writer_process", str(path), *limit,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            )  # fmt: skip
            writer._transport = transport
            writer._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]
            await asyncio.wait_for(asyncio.shield(writer._ready), START_SECONDS)
        except (OSError, TimeoutError, IngestWriteFailed) as error:
            log.error("the ingest writer did not start (%s): storing in this process", error)
            writer._ready.cancel()  # an exit after this is no news to anyone
            await writer.close()
            return None
        except asyncio.CancelledError:  # shutting down while it started: leave no child
            await writer.close()
            raise
        writer.alive = not writer._gone.done()  # it may have died since saying it was ready
        log.info("ingest writer started, pid %s", transport.get_pid())
        return writer

    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None else None

    @staticmethod
    def encode(rows: Sequence[Sequence[Any]]) -> bytes | None:
        """A put's line, or None when orjson refuses a value (a lone surrogate): such a put
        is stored in this process, whose rules refuse or store it exactly as before."""
        try:
            return orjson.dumps(rows) + b"\n"
        except TypeError:
            return None

    async def put(self, line: bytes) -> int:
        """How many of the line's rows were new, once they are durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if not self._unsent:
            loop.call_soon(self._flush)  # one write for every put of this loop pass
        self._unsent.append((future, line))
        return await future

    def _flush(self) -> None:
        # A caller cancelled before its line went out stores nothing, as in this process.
        unsent = [(future, line) for future, line in self._unsent if not future.cancelled()]
        self._unsent.clear()
        if not self.alive or self._stdin is None:
            _fail((future for future, _ in unsent), "the ingest writer has stopped", WriterGone)
            return
        self._sent.extend(future for future, _ in unsent)
        self._stdin.write(b"".join(line for _, line in unsent))

    def answered(self, answer: list[Any]) -> None:
        kind, value = answer
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        future = self._sent.popleft()
        if future.done():  # its caller gave up after the line went out
            return
        if kind == "ok":
            future.set_result(value)
        elif kind == "full":
            future.set_exception(QueueFull(value))
        else:
            future.set_exception(IngestWriteFailed(value))

    def exited(self) -> None:
        self.alive = False
        code = self._transport.get_returncode() if self._transport is not None else None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(IngestWriteFailed(f"the writer exited with code {code}"))
        elif not self._closing:
            log.error("the ingest writer exited (code %s): storing in this process", code)
        _fail(self._sent, f"the ingest writer exited (code {code}) before answering", WriterGone)
        self._sent.clear()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    async def close(self) -> None:
        """Let the child finish what it was sent, then end it."""
        transport = self._transport
        if transport is None:
            return
        if self._unsent:
            self._flush()
        self.alive = False
        self._closing = True
        if self._stdin is not None:
            self._stdin.close()  # end of input: the child answers the rest and exits
        if self._gone is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._gone), STOP_SECONDS)
            except TimeoutError:
                transport.kill()
                await self._gone
        transport.close()
        self._transport = None


class KeptWriter:
    """An IngestWriter that is started again `RESTART_SECONDS` after it died, until closed."""

    def __init__(self, path: Path, max_pending: int | None) -> None:
        self._path = path
        self._max_pending = max_pending
        self._writer: IngestWriter | None = None
        self._restart: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> bool:
        """False when the first writer could not start: then none is tried again."""
        self._writer = await IngestWriter.start(self._path, self._max_pending)
        return self._writer is not None

    @property
    def writer(self) -> IngestWriter | None:
        """The writer to send a put to now, or None (store it in this process)."""
        writer = self._writer
        if writer is None or writer.alive:
            return writer
        if self._restart is None and not self._closed:
            self._restart = asyncio.ensure_future(self._again(writer))
        return None

    async def _again(self, dead: IngestWriter) -> None:
        try:
            await dead.close()
            await asyncio.sleep(RESTART_SECONDS)
            # A failed start keeps the dead one: the next put schedules another try.
            self._writer = await IngestWriter.start(self._path, self._max_pending) or dead
        finally:
            self._restart = None

    async def close(self) -> None:
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()


def _fail(futures: Any, message: str, kind: type[IngestWriteFailed]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(kind(message))
