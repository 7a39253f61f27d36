"""Running the service: the aiohttp app with its delivery worker, or the worker alone.

Every object comes from the container; what is left here is the lifecycle: the worker starts
beside the app, finishes its batch at shutdown, and the resources close last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from entrypoints.container import Container, opened

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0  # time for the batch in hand before its leases are handed back


async def build_app(container: Container) -> web.Application:
    """The whole service as one aiohttp application; resources close in its cleanup."""
    # Opened before the app is built: the app holds the queue, and aiohttp warns about
    # changing an app once it has started.
    await container.init_resources()  # type: ignore[misc]
    app: web.Application = await container.app.async_()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task((await container.worker.async_()).run(stop))
        yield
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, SHUTDOWN_GRACE_SECONDS)
        await container.shutdown_resources()  # type: ignore[misc]

    app.cleanup_ctx.append(lifecycle)
    return app


async def run_worker_alone(container: Container) -> None:
    """`pardot-destination worker`: deliver until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with opened(container):
        log.info("delivery worker started")
        try:
            await (await container.worker.async_()).run(stop)
        finally:
            log.info("delivery worker stopped")
