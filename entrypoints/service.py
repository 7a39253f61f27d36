"""Running the service: the aiohttp app with its delivery worker, or the worker alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from domain.sync import SyncService
from entrypoints.container import Container, SyncServiceSource, resolve
from entrypoints.tracking import TrackingConfig, add_tracking_routes
from entrypoints.webhook import create_app
from entrypoints.worker import DeliveryWorker, WorkerOptions

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 20.0  # time for the batch in hand before its leases are left to expire


def worker_options(container: Container) -> WorkerOptions:
    config = container.config()
    return WorkerOptions(
        lease_seconds=config.lease_seconds,
        max_attempts=config.max_attempts,
        backoff_initial=config.retry_initial_seconds,
        configuration_retry=config.configuration_retry_seconds,
        retention=timedelta(days=config.retention_days),
    )


async def make_worker(container: Container, options: WorkerOptions | None = None) -> DeliveryWorker:
    # The sync service is resolved on first use, inside the worker's error handling, so a
    # missing credential marks the service unready instead of crashing it.
    async def sync_service() -> SyncService:
        source: SyncServiceSource = await resolve(container.sync_service)
        return await source()

    return DeliveryWorker(
        await resolve(container.queue),
        sync_service,
        readiness=container.readiness(),
        metrics=container.metrics(),
        options=options or worker_options(container),
    )


async def build_app(
    container: Container, *, with_worker: bool = True, options: WorkerOptions | None = None
) -> web.Application:
    """The whole service as one aiohttp application; resources close in its cleanup."""
    await container.init_resources()  # type: ignore[misc]
    config = container.config()
    app = create_app(
        await resolve(container.queue),
        write_keys=tuple(key.get_secret_value() for key in config.write_keys),
        shared_secret=(
            config.shared_secret.get_secret_value() if config.shared_secret is not None else ""
        ),
        webhook_batching=config.webhook_batching,
        metrics=container.metrics(),
        readiness=container.readiness(),
    )
    add_tracking_routes(
        app, TrackingConfig(config.account_id, config.campaign_id, tracker_url=config.tracker_url)
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        worker = await make_worker(container, options) if with_worker else None
        task = asyncio.create_task(worker.run(stop)) if worker is not None else None
        yield
        stop.set()
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, SHUTDOWN_GRACE_SECONDS)
        await container.shutdown_resources()  # type: ignore[misc]

    app.cleanup_ctx.append(lifecycle)
    return app


async def run_worker_alone(container: Container, options: WorkerOptions | None = None) -> None:
    """`pardot-destination worker`: deliver until SIGTERM or SIGINT."""
    await container.init_resources()  # type: ignore[misc]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info("delivery worker started")
        await (await make_worker(container, options)).run(stop)
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
        log.info("delivery worker stopped")
