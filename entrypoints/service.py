"""Running the service: the aiohttp app with its delivery worker, or the worker alone.

Every object comes from the container; what is left here is the lifecycle: the worker starts
beside the app under a supervisor that restarts it, finishes its batch at shutdown, and the
resources close last.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from entrypoints.container import Container, opened
from entrypoints.http.app import runner as app_runner
from entrypoints.readiness import Readiness

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0  # time for the batch in hand before its leases are handed back
RESTARTS_BEFORE_GIVING_UP = 5  # then the process exits non-zero for its manager to restart
RESTART_WAIT = (1.0, 30.0)  # first and longest wait before a restart; doubles in between
STABLE_SECONDS = 300.0  # a worker that ran this long has its failure count forgiven


class WorkerFailed(Exception):
    """The delivery worker kept failing after every restart."""


async def supervise(
    run: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    readiness: Readiness,
    *,
    restarts: int = RESTARTS_BEFORE_GIVING_UP,
    wait: tuple[float, float] = RESTART_WAIT,
) -> None:
    """Run the worker until `stop`; restart it with backoff when it fails.

    Unready from a failure until the restart. After `restarts` failures in a row raises
    WorkerFailed, so the process can exit non-zero and its manager start a fresh one.
    """
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run(stop)
            return
        except Exception as error:
            if time.monotonic() - started > STABLE_SECONDS:
                failures = 0
            failures += 1
            log.error(
                "the delivery worker failed",
                error=type(error).__name__,
                failures=failures,
                restarts=restarts,
            )
            log.debug("the delivery worker failed", exc_info=error)
            if failures > restarts:
                readiness.worker_failing("the delivery worker failed repeatedly: exiting")
                raise WorkerFailed(f"the delivery worker failed {failures} times") from error
            pause = min(wait[1], wait[0] * 2 ** (failures - 1))
            readiness.worker_failing(
                f"the delivery worker failed ({type(error).__name__}); restarting in {pause:g} s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            readiness.worker_failing("")
            log.info("restarting the delivery worker", failures=failures)


async def build_app(
    container: Container, *, on_worker_failed: Callable[[], None] | None = None
) -> web.Application:
    """The whole service as one aiohttp application; resources close in its cleanup.

    `on_worker_failed` is called when the supervised worker gave up (`serve` then stops and
    exits non-zero).
    """
    # Opened before the app is built: the app holds the queue, and aiohttp warns about
    # changing an app once it has started.
    await container.init_resources()  # type: ignore[misc]
    app: web.Application = await container.app.async_()
    readiness = container.readiness()

    notifications = await container.notifications.async_()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        async with notifications:  # other nodes' puts wake the worker too (PostgreSQL)
            task = asyncio.create_task(supervise(_fresh_worker(container), stop, readiness))
            if on_worker_failed is not None:
                task.add_done_callback(
                    lambda done: (
                        on_worker_failed()
                        if not done.cancelled() and done.exception() is not None
                        else None
                    )
                )
            yield
            stop.set()
            with contextlib.suppress(TimeoutError, WorkerFailed):
                await asyncio.wait_for(task, SHUTDOWN_GRACE_SECONDS)
        await container.shutdown_resources()  # type: ignore[misc]

    ingest_writer = await container.ingest_writer.async_()

    async def writer(app: web.Application) -> AsyncIterator[None]:
        async with ingest_writer:
            yield

    # Cleanup runs in reverse: the writer ends before `lifecycle` closes the store.
    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(writer)
    return app


async def listen(app: web.Application, host: str, port: int) -> web.AppRunner:
    """`app` serving on `host:port` (port 0 picks a free one); `cleanup()` the runner to stop.

    Signals are left to the caller, which stops the worker before the server.
    """
    runner = app_runner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_worker_alone(container: Container) -> None:
    """`pardot-destination worker`: deliver until SIGTERM or SIGINT.

    Raises WorkerFailed when the worker failed after every restart.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with opened(container), await container.notifications.async_():
        log.info("delivery worker started")
        try:
            await supervise(_fresh_worker(container), stop, container.readiness())
        finally:
            log.info("delivery worker stopped")


def _fresh_worker(container: Container) -> Callable[[asyncio.Event], Awaitable[None]]:
    """Each (re)start runs a new worker from the container: no state survives a failure."""

    async def deliver(stop: asyncio.Event) -> None:
        # The slots' busy time goes to the store while this process delivers, for `status`.
        recorder = await container.slot_use_recorder.async_()
        async with recorder.running():
            await (await container.worker.async_()).run(stop)

    return deliver
