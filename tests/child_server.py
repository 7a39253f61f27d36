"""A server in a child process, started the way a user starts it, ready once it says where.

Every server here (`pardot-destination serve`, the benchmark's bare aiohttp) prints
`listening on http://host:port` to stderr once it accepts connections; another line can be
awaited instead (the `worker` command serves no HTTP). Used by the tests and the benchmarks;
the demo keeps its own copy, since tests are not packaged.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(r"listening on (http://\S+)")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ChildServer:
    """Its stderr is read line by line into `log` until it exits, so a full pipe never blocks it."""

    process: asyncio.subprocess.Process
    url: str = ""
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def stop(self, *, kill: bool = False, seconds: float = 30.0) -> int:
        """SIGTERM (or SIGKILL) and wait; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), seconds)
        if self._reader is not None:
            await self._reader
        return code

    async def _read(self, ready: re.Pattern[str], found: asyncio.Future[str]) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.log.append(text)
            match = ready.search(text)
            if match and not found.done():
                found.set_result(match.group(1) if ready.groups else "")
        if not found.done():
            found.set_exception(RuntimeError("the server exited:\n" + "\n".join(self.log)))


async def start_server(
    *args: str,
    env: Mapping[str, str],
    cwd: Path = ROOT,
    ready: re.Pattern[str] = LISTENING,
    seconds: float = 30.0,
) -> ChildServer:
    """`python *args` in a child process, once a line matched `ready` (the URL in `.url`)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=dict(env), cwd=cwd, stderr=asyncio.subprocess.PIPE
    )
    server = ChildServer(process)
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server._reader = asyncio.create_task(server._read(ready, found))
    try:
        server.url = await asyncio.wait_for(found, seconds)
    except BaseException:
        await server.stop(kill=True)
        raise
    return server
