"""The composition root: the only module that knows which adapter serves which port.

Every command asks this container for its objects, down to the delivery worker and the aiohttp
app; tests override providers (`container.override_providers(queue=providers.Object(...))`)
instead of assembling objects themselves. Long-lived clients (the httpx client, the SQLite
database) are Resources, opened by `opened()` or the app's lifecycle and closed with it.

The sync service needs the API version, which under `auto` only Pardot can tell, which needs
credentials. So it is resolved on the worker's first batch, inside its error handling: a
missing or refused credential marks the service unready instead of stopping it, and since a
Singleton keeps only a success, the next batch tries again once the operator fixed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
from dependency_injector import containers, providers

from adapters.memory.overlay_index import OverlayProspectIndex
from adapters.memory.overlay_store import OverlayApiCallCounts, OverlayProspectStore
from adapters.pardot.http_repository import PardotHttpRepository
from adapters.pardot.index_only import IndexOnlyPardot
from adapters.postgres.notifications import listening
from adapters.postgres.stores import PostgresStores
from adapters.salesforce.credentials import NO_CREDENTIALS, SalesforceCredentials
from adapters.salesforce.credentials import token_provider as salesforce_tokens
from adapters.salesforce.sign_in import WebServerSignIn, first_pardot_call
from adapters.salesforce.token_file import TokenStore
from adapters.shared.stores import ClosingSlots, Stores
from adapters.sqlite.queue import SQLiteEventQueue
from adapters.sqlite.stores import SQLiteStores, slots_beside
from domain.budget import DailyBudget
from domain.errors import ConfigurationError
from domain.import_files import ImportFileBudget
from domain.ports import (
    DeliveryHistory,
    EventQueue,
    PardotSlots,
    ProspectIndex,
    ProspectStore,
    TokenProvider,
)
from entrypoints import assembly
from entrypoints.config import ServiceConfig, TrackingConfig
from entrypoints.door_traffic import DoorFirstSlots, DoorTraffic
from entrypoints.forget_wiring import Forgetting
from entrypoints.http.serve_app import serve_app
from entrypoints.lease_hold import lease_checked
from entrypoints.metering import MeteredRepository, MeteredTokens
from entrypoints.metrics import Metrics
from entrypoints.operator.dry_run import DryRun
from entrypoints.operator.fields import account_fields
from entrypoints.operator.status import StatusSources
from entrypoints.readiness import Readiness
from entrypoints.slot_use import MeteredSlots, SlotUseRecorder, StoredSlotUse
from entrypoints.wakeup import Wakeup
from entrypoints.worker import DeliveryWorker, WorkerOptions

__all__ = ["AWAITED", "NO_CREDENTIALS", "Container", "opened", "token_provider"]

# Asked for with `await` by every caller. Async mode makes each call awaitable even when a test
# has overridden everything beneath with plain objects.
AWAITED = (
    "queue",
    "ingest_writer",
    "notifications",
    "prospect_store",
    "history",
    "prospect_index",
    "index_keeper",
    "sync_service",
    "worker",
    "app",
    "status_sources",
    "service_status_sources",
)


def token_provider(config: ServiceConfig) -> TokenProvider:
    """The token provider the configuration asks for, or a ConfigurationError naming what to set
    (adapters.salesforce.credentials tells which)."""
    credentials = SalesforceCredentials(
        login_url=config.salesforce_login_url,
        client_id=config.salesforce_client_id,
        client_secret=assembly.reveal(config.salesforce_client_secret),
        refresh_token=assembly.reveal(config.salesforce_refresh_token),
        static_access_token=assembly.reveal(config.static_access_token),
        jwt_username=config.jwt_username,
        jwt_private_key_file=config.jwt_private_key_file,
        token_file=config.token_file,
    )
    return salesforce_tokens(credentials)


async def _pardot_slots(
    config: ServiceConfig, stores: Callable[[], Any], business_unit: str, limit: int
) -> AsyncIterator[PardotSlots]:
    """`stores` is the store's provider, asked only for PostgreSQL: the SQLite slots are
    files beside the queue file, and need not wait for (nor fail with) the database."""
    slots: ClosingSlots
    if config.uses_postgres:
        opened: Stores = await assembly.awaiting(stores)()
        slots = opened.pardot_slots(business_unit, limit=limit)
    else:
        slots = slots_beside(config.queue_path, business_unit, limit=limit)
    try:
        yield slots
    finally:
        slots.close()


async def _http_client(call_seconds: float) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(call_seconds)) as client:
        yield client


async def _stores(config: ServiceConfig) -> AsyncIterator[Stores]:
    """The store, open while the container is: a SQLite file (one machine) or a PostgreSQL
    database (many nodes), chosen by DESTINATION_QUEUE_URL; a damaged file or an unreachable
    server stops start-up, naming it (StoreUnusable)."""
    opening: contextlib.AbstractAsyncContextManager[Stores]
    if config.uses_postgres:
        opening = PostgresStores.opened(
            config.queue_url,
            pool_size=config.queue_pool_size,
            wait_seconds=config.queue_wait_seconds,
        )
    else:
        opening = SQLiteStores.opened(config.queue_path)
    async with opening as stores:
        yield stores


@contextlib.asynccontextmanager
async def _ingest_writer(queue: EventQueue) -> AsyncIterator[None]:
    """While the service runs, a SQLite queue stores its puts in a writer process."""
    if not isinstance(queue, SQLiteEventQueue):
        yield
        return
    await queue.start_writer()
    try:
        yield
    finally:
        await queue.stop_writer()


@contextlib.asynccontextmanager
async def _notifications(
    config: ServiceConfig, stores: Callable[[], Any], wakeup: Wakeup
) -> AsyncIterator[None]:
    """While a worker runs on PostgreSQL, every node's puts wake it (LISTEN/NOTIFY); on SQLite
    only `serve`'s own door does (`assembly.waking`), other processes' puts wait for the poll."""
    if not (config.uses_postgres and config.wake_on_put):
        yield
        return
    opened: Stores = await assembly.awaiting(stores)()
    assert isinstance(opened, PostgresStores)
    async with listening(opened.database, wakeup.notify):
        yield


async def _dry_repository(
    config: ServiceConfig, history: DeliveryHistory, index: ProspectIndex, store: ProspectStore
) -> IndexOnlyPardot:
    """The dry run's Pardot: the index as last refreshed, the custom fields as last noted."""
    version = config.fixed_api_version
    if version is None:
        raise ConfigurationError("a dry run needs PARDOT_API_VERSION 3 or 4")
    noted = await account_fields(history, None, now=assembly.utc_now(), max_age=timedelta.max)
    return IndexOnlyPardot(
        index,
        store,
        version=version,
        custom_fields=None if noted is None else noted[1],
        lookup_field=config.lookup_field_id,
    )


class Container(containers.DeclarativeContainer):
    config = providers.Dependency(instance_of=ServiceConfig)
    clock = providers.Object(assembly.utc_now)
    metrics = providers.Singleton(Metrics)
    readiness = providers.Singleton(Readiness)

    # Storage: the queue and what we know about the account share one store (SQLite file or
    # PostgreSQL database, by DESTINATION_QUEUE_URL). Each port is the chosen backend's,
    # asked of it once (a Singleton around the call).
    stores = providers.Resource(_stores, config)
    database = stores.provided.database
    queue = providers.Singleton(stores.provided.queue.call(max_pending=config.provided.max_pending))
    # Entered by the service only (build_app): CLI commands store in their own process.
    ingest_writer = providers.Factory(_ingest_writer, queue)
    prospect_store = providers.Singleton(stores.provided.prospect_store.call())
    history = providers.Singleton(
        stores.provided.history.call(
            retention=providers.Factory(timedelta, days=config.provided.retention_days),
            clock=clock,
        )
    )
    prospect_index = providers.Singleton(stores.provided.prospect_index.call())
    api_calls = providers.Singleton(stores.provided.api_calls.call())
    budget = providers.Singleton(
        DailyBudget,
        api_calls,
        limit=config.provided.daily_api_limit,
        zone=config.provided.account_zone,
        clock=clock,
    )

    # Pardot, and the credentials to reach it.
    http_client = providers.Resource(_http_client, config.provided.call_timeout_seconds)
    tokens = providers.Singleton(token_provider, config)
    # Pardot's 5 requests in flight per business unit, shared by every process on the store.
    pardot_slots = providers.Resource(
        _pardot_slots,
        config,
        stores.provider,
        config.provided.business_unit_id,
        config.provided.max_concurrency,
    )
    # Busy slot time: this process's for /metrics, every process's in the store for status.
    slot_use = providers.Singleton(assembly.slot_use, metrics, config.provided.max_concurrency)
    # `serve`'s worker gives way to its door, batch by batch and call by call.
    door_traffic = providers.Singleton(DoorTraffic)
    metered_slots = providers.Singleton(
        MeteredSlots, providers.Singleton(DoorFirstSlots, pardot_slots, door_traffic), slot_use
    )
    slot_busy_log = providers.Singleton(stores.provided.slot_busy.call())
    slot_use_recorder = providers.Singleton(SlotUseRecorder, slot_use, slot_busy_log)
    stored_slot_use = providers.Singleton(
        StoredSlotUse, slot_busy_log, config.provided.max_concurrency
    )
    # Counts refreshes and keeps the token's state for `status` (never the token).
    metered_tokens = providers.Singleton(MeteredTokens, tokens, metrics, clock=clock)
    repository = providers.Singleton(
        MeteredRepository,
        providers.Singleton(
            PardotHttpRepository,
            http_client,
            metered_tokens,
            base_url=config.provided.pardot_base_url,
            business_unit_id=config.provided.business_unit_id,
            api_version=config.provided.fixed_api_version,
            slots=metered_slots,
            retry_wait_max=config.provided.retry_wait_max,
            account_zone=config.provided.account_zone,
            on_call=providers.Callable(lease_checked, budget.provided.count_call),
        ),
        metrics,
        readiness,
    )
    destination = providers.Singleton(assembly.destination_settings, config, repository)
    index_keeper = providers.Singleton(
        assembly.index_keeper,
        config,
        repository,
        prospect_index,
        prospect_store,
        budget,
        destination,
        metrics=metrics,
        bulk=repository,
    )
    # The imports in flight, in the store: found again after a restart (issue 23).
    import_ledger = providers.Singleton(stores.provided.import_ledger.call())
    import_files = providers.Singleton(
        ImportFileBudget,
        stores.provided.import_files.call(),
        limit=config.provided.import_files_per_day,
        zone=config.provided.account_zone,
        clock=clock,
    )
    import_lane = providers.Singleton(
        assembly.import_lane, config, repository, metrics, ledger=import_ledger,
        file_budget=import_files,
    )  # fmt: skip
    sync_service = providers.Singleton(
        assembly.sync_service,
        config,
        repository,
        destination,
        prospect_store,
        index_keeper,
        waiting=providers.Callable(assembly.backlog, queue),
        imports=import_lane,
    )

    # Forgetting a person (entrypoints/forget_wiring.py): `forget`, /admin/forget, and the
    # suppression list's checks at the door and in the worker.
    forgetting = providers.Container(
        Forgetting,
        stores=stores,
        prospect_store=prospect_store,
        history=history,
        prospect_index=prospect_index,
        repository=repository,
    )

    # Delivery. `serve`'s door wakes its worker when a put stored events.
    wakeup = providers.Singleton(Wakeup)
    # Entered wherever a worker runs (build_app, run_worker_alone).
    notifications = providers.Factory(_notifications, config, stores.provider, wakeup)
    worker_options = providers.Singleton(
        WorkerOptions,
        idle_seconds=config.provided.poll_seconds,
        lease_seconds=config.provided.lease_seconds,
        call_seconds=config.provided.call_timeout_seconds,
        batches_in_flight=config.provided.batches_in_flight,
        max_attempts=config.provided.max_attempts,
        backoff_initial=config.provided.retry_initial_seconds,
        backoff_max=config.provided.retry_max_seconds,
        configuration_retry=config.provided.configuration_retry_seconds,
        retention=providers.Factory(timedelta, days=config.provided.retention_days),
    )
    worker = providers.Factory(
        DeliveryWorker,
        queue,
        # The provider itself: the worker resolves the sync service batch by batch.
        sync_service.provider,
        readiness=readiness,
        metrics=metrics,
        options=worker_options,
        clock=clock,
        history=history,
        wakeup=wakeup,
        door=door_traffic,
        withdraw=forgetting.gate.provided.withdraw,
        imports=providers.Callable(assembly.awaiting, import_lane.provider),
    )

    # The door: Segment's endpoints, health, metrics and /pardot.js.
    tracking = providers.Singleton(
        TrackingConfig,
        config.provided.account_id,
        config.provided.campaign_id,
        tracker_url=config.provided.tracker_url,
    )
    # What `status` reads (it asks for a token to report its state) and what the service's
    # status page reads (readiness and the token as the service saw them; the account's fields
    # are refreshed in the background there, never while a page waits).
    status_sources = providers.Factory(
        StatusSources,
        queue,
        history,
        token_state=providers.Callable(assembly.token_state, metered_tokens.provider, probe=True),
        budget=budget,
        index=prospect_index,
        slot_use=stored_slot_use,
        repository=providers.Callable(assembly.awaiting, repository.provider),
        clock=clock,
    )
    service_status_sources = providers.Factory(
        StatusSources,
        queue,
        history,
        readiness=readiness,
        token_state=providers.Callable(assembly.token_state, metered_tokens.provider, probe=False),
        budget=budget,
        index=prospect_index,
        slot_use=stored_slot_use,
        repository=providers.Callable(assembly.awaiting, repository.provider),
        clock=clock,
        imports=providers.Callable(assembly.awaiting, import_lane.provider),
    )
    app = providers.Factory(
        serve_app,
        queue,
        tracking=tracking,
        status_sources=service_status_sources,
        admin_key=providers.Callable(assembly.reveal, config.provided.admin_key),
        write_keys=providers.Callable(assembly.reveal_all, config.provided.write_keys),
        shared_secret=providers.Callable(assembly.reveal, config.provided.shared_secret),
        webhook_batching=config.provided.webhook_batching,
        on_stored=providers.Callable(assembly.waking, config, wakeup),
        traffic=door_traffic,
        metrics=metrics,
        readiness=readiness,
        forgetting=forgetting.sources,
        suppression=forgetting.gate,
    )

    # The dry run: the same SyncService as `sync_service`, over a Pardot that answers from the
    # prospect index (never a socket) and over a store, index and budget that keep their
    # writes in memory, so `sync --dry-run` shares every rule with a real run and changes
    # nothing. Only `sync --dry-run` asks for these.
    dry_prospect_store = providers.Singleton(OverlayProspectStore, prospect_store)
    dry_prospect_index = providers.Singleton(OverlayProspectIndex, prospect_index)
    dry_budget = providers.Singleton(
        DailyBudget,
        providers.Singleton(OverlayApiCallCounts, api_calls),
        limit=config.provided.daily_api_limit,
        zone=config.provided.account_zone,
        clock=clock,
    )
    dry_repository = providers.Singleton(
        _dry_repository, config, history, dry_prospect_index, dry_prospect_store
    )
    dry_destination = providers.Singleton(assembly.destination_settings, config, dry_repository)
    # A dry run cannot scan: it decides from the index only once the index is complete.
    dry_index_keeper = providers.Singleton(
        assembly.when_complete,
        dry_prospect_index,
        providers.Singleton(
            assembly.index_keeper,
            config,
            dry_repository,
            dry_prospect_index,
            dry_prospect_store,
            dry_budget,
            dry_destination,
        ),
    )
    dry_sync_service = providers.Singleton(
        assembly.sync_service,
        config,
        dry_repository,
        dry_destination,
        dry_prospect_store,
        dry_index_keeper,
    )
    dry_run = providers.Factory(
        DryRun,
        dry_sync_service,
        dry_repository,
        dry_prospect_index,
        destination_keys=config.provided.destination_keys,
    )

    # `connect`, which runs before there is any configuration to read.
    token_store = providers.Factory(TokenStore)
    sign_in = providers.Factory(WebServerSignIn)
    pardot_test_call = providers.Coroutine(first_pardot_call)

    def __new__(cls, **overriding: Any) -> Container:
        container = super().__new__(cls, **overriding)
        for name in AWAITED:
            container.providers[name].enable_async_mode()
        return container


@contextlib.asynccontextmanager
async def opened(container: Container) -> AsyncIterator[Container]:
    """The container with its resources (database, HTTP client) open, and closed on the way out."""
    await container.init_resources()  # type: ignore[misc]
    try:
        yield container
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
