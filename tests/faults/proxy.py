"""A TCP proxy of the tests' own between a node and PostgreSQL: the fault is cut for real.

`cut()` resets every connection through it and refuses new ones (each is accepted and reset
at once, as a server that went away or a failed-over address would answer); `reopen()`
forwards again. One proxy per node cuts one node off while the others keep their store.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit


class PostgresProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.open = True
        self.port = 0

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")
        user = f"{netloc[0]}@" if netloc[1] else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Every connection through the proxy is reset; new ones are reset as they come."""
        self.open = False
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def reopen(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            # Its connections' handlers end here, not cancelled by the loop's end (noisily).
            for handler in self._handlers:
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        if not self.open:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(writer)
            return
        if not self.open:
            # Cut while this connection was being made: it must not outlive the cut (a pool
            # reconnecting at that moment kept a working store through the whole outage).
            _reset(writer)
            _reset(up_writer)
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for each in pair:
                self._writers.discard(each)
                _reset(each)

    async def __aenter__(self) -> PostgresProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a vanished server's host answers, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    with contextlib.suppress(Exception):
        writer.transport.abort()


@contextlib.asynccontextmanager
async def proxies(count: int, url: str) -> AsyncIterator[list[PostgresProxy]]:
    """`count` proxies to the PostgreSQL server `url` names."""
    parts = urlsplit(url)
    started = [
        PostgresProxy(parts.hostname or "127.0.0.1", parts.port or 5432) for _ in range(count)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for proxy in started:
            await stack.enter_async_context(proxy)
        yield started
