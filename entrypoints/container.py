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

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiohttp import web
from dependency_injector import containers, providers
from pydantic import SecretStr

from adapters.memory.overlay_index import OverlayProspectIndex
from adapters.memory.overlay_store import OverlayApiCallCounts, OverlayProspectStore
from adapters.pardot.http_repository import PardotHttpRepository
from adapters.pardot.index_only import IndexOnlyPardot
from adapters.postgres.database import PostgresDatabase
from adapters.postgres.history import PostgresDeliveryHistory
from adapters.postgres.pardot_budget import PostgresApiCallCounts
from adapters.postgres.pardot_slots import PostgresSlots
from adapters.postgres.prospect_index import PostgresProspectIndex
from adapters.postgres.prospect_store import PostgresProspectStore
from adapters.postgres.queue import PostgresEventQueue
from adapters.salesforce.sign_in import WebServerSignIn, first_pardot_call
from adapters.salesforce.token_file import TokenStore
from adapters.salesforce.token_providers import (
    CONNECT_COMMAND,
    JwtBearerProvider,
    RefreshTokenProvider,
    StaticTokenProvider,
)
from adapters.sqlite.database import SQLiteDatabase
from adapters.sqlite.history import SQLiteDeliveryHistory
from adapters.sqlite.pardot_budget import SQLiteApiCallCounts
from adapters.sqlite.pardot_slots import SQLiteStoreSlots
from adapters.sqlite.prospect_index import SQLiteProspectIndex
from adapters.sqlite.prospect_store import SQLiteProspectStore
from adapters.sqlite.queue import SQLiteEventQueue
from domain.budget import DailyBudget
from domain.errors import ConfigurationError, InvalidSettings
from domain.index import IndexKeeper
from domain.ports import (
    ApiCallCounts,
    DeliveryHistory,
    EventQueue,
    PardotRepository,
    PardotSlots,
    ProspectIndex,
    ProspectStore,
    TokenProvider,
)
from domain.settings import DestinationSettings
from domain.sync import SyncService
from entrypoints.config import ServiceConfig, TrackingConfig
from entrypoints.http.app import create_app
from entrypoints.http.status_page import add_status_routes
from entrypoints.http.tracking import add_tracking_routes
from entrypoints.metering import MeteredRepository, MeteredTokens
from entrypoints.metrics import Metrics
from entrypoints.operator.dry_run import DryRun
from entrypoints.operator.fields import account_fields
from entrypoints.operator.status import StatusSources
from entrypoints.readiness import Readiness
from entrypoints.worker import DeliveryWorker, WorkerOptions

log = logging.getLogger(__name__)

NO_CREDENTIALS = (
    f"no Salesforce credentials: run `{CONNECT_COMMAND}` or set SALESFORCE_REFRESH_TOKEN"
)
TOKEN_PROBE_SECONDS = 15.0
# Asked for with `await` by every caller. Async mode makes each call awaitable even when a test
# has overridden everything beneath with plain objects.
AWAITED = (
    "queue",
    "ingest_writer",
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
SCAN_LOCK = "(prospect index scan)"  # a create-lock key no email can be: one scan at a time


def token_provider(config: ServiceConfig) -> TokenProvider:
    """The token provider the configuration asks for, or a ConfigurationError naming what to set.

    In order: a static token; the JWT bearer flow when a username or key file is set; a
    refresh token given explicitly; the refresh token `connect` stored in the token file.
    Rotated refresh tokens are written to the token file, and a rejected refresh token is
    replaced by the stored one when that is newer.
    """
    static = _reveal(config.static_access_token).strip()
    if static:
        return StaticTokenProvider(static)
    login = config.salesforce_login_url.rstrip("/")
    client_id = config.salesforce_client_id
    if config.jwt_username or config.jwt_private_key_file:
        if not (config.jwt_username and config.jwt_private_key_file):
            missing = (
                "SALESFORCE_JWT_USERNAME" if not config.jwt_username else "the private key file"
            )
            raise ConfigurationError(f"the JWT bearer flow needs {missing} as well")
        if not client_id:
            raise ConfigurationError(
                "the JWT bearer flow needs SALESFORCE_CLIENT_ID (the connected app's consumer key)"
            )
        return JwtBearerProvider(
            login_url=login,
            consumer_key=client_id,
            username=config.jwt_username,
            private_key_file=config.jwt_private_key_file,
        )

    store = TokenStore(config.token_file)
    token, instance_url = _reveal(config.salesforce_refresh_token).strip(), ""
    if not token:
        stored = store.load()
        if stored is None:
            raise ConfigurationError(NO_CREDENTIALS)
        if client_id and client_id != stored.client_id:
            raise ConfigurationError(
                f"the token file {store.path} was written for another connected app than "
                f"SALESFORCE_CLIENT_ID: run `{CONNECT_COMMAND}` again or fix SALESFORCE_CLIENT_ID"
            )
        if stored.login_url.rstrip("/") != login:
            log.info("using the login URL stored with the refresh token: %s", stored.login_url)
        token, client_id, login = stored.refresh_token, stored.client_id, stored.login_url
        instance_url = stored.instance_url
    if not client_id:
        raise ConfigurationError(
            "SALESFORCE_CLIENT_ID is not set (the connected app's consumer key)"
        )
    secret = _reveal(config.salesforce_client_secret).strip()
    if not secret:
        raise ConfigurationError(
            "SALESFORCE_CLIENT_SECRET is not set (the connected app's consumer secret, needed "
            "to use the refresh token)"
        )
    return RefreshTokenProvider.kept_in(
        store,
        login_url=login,
        client_id=client_id,
        client_secret=secret,
        refresh_token=token,
        instance_url=instance_url,
    )


async def _destination(config: ServiceConfig, repository: PardotRepository) -> DestinationSettings:
    """The six settings, once Pardot named the API version (asked once, under `auto`)."""
    version = await repository.detect_version()
    try:
        settings = config.destination(version)
    except InvalidSettings as exc:
        # Only known once Pardot named the version.
        raise ConfigurationError(f"API version {version} detected: {exc}") from None
    for warning in config.startup_warnings(settings):
        log.warning("%s", warning)
    return settings


async def _pardot_slots(
    config: ServiceConfig, database: Callable[[], Any], business_unit: str, limit: int
) -> AsyncIterator[PardotSlots]:
    """`database` is the store's provider, asked only for PostgreSQL: the SQLite slots are
    files beside the queue file, and need not wait for (nor fail with) the database."""
    if config.uses_postgres:
        store = await _awaiting(database)()
        yield PostgresSlots(store, business_unit, limit=limit)  # released with the database
        return
    slots = SQLiteStoreSlots(config.queue_path, business_unit, limit=limit)
    try:
        yield slots
    finally:
        slots.close()


def _index_keeper(
    config: ServiceConfig,
    repository: PardotRepository,
    index: ProspectIndex,
    store: ProspectStore,
    budget: DailyBudget,
    destination: DestinationSettings,
) -> IndexKeeper:
    return IndexKeeper(
        repository,
        index,
        lookup_field=destination.lookup_field,
        budget=budget,
        refresh_seconds=config.index_refresh_seconds,
        parallel=config.max_concurrency,
        scan_lock=lambda: store.create_lock(SCAN_LOCK),
    )


def _waiting(queue: EventQueue) -> Callable[[], Awaitable[int]]:
    """Events waiting for delivery: the backlog a scan of the account would serve."""

    async def waiting() -> int:
        counts = await queue.counts()
        return sum(counts.get(state, 0) for state in ("pending", "retry", "leased"))

    return waiting


async def _http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        yield client


# The store: a SQLite file (one machine) or a PostgreSQL database (many nodes), chosen by
# DESTINATION_QUEUE_URL; every store port below is served by the matching adapter.
Store = SQLiteDatabase | PostgresDatabase


async def _database(config: ServiceConfig) -> AsyncIterator[Store]:
    database: Store
    if config.uses_postgres:
        # Creates or migrates the schema; an unreachable server stops start-up (StoreUnusable).
        database = await PostgresDatabase(config.queue_url, pool_size=config.queue_pool_size).open()
    else:
        database = SQLiteDatabase(config.queue_path)
    try:
        await database.check()  # a damaged file stops start-up, naming it (StoreUnusable)
        yield database
    finally:
        await database.close()


def _queue(database: Store, *, max_pending: int) -> EventQueue:
    if isinstance(database, PostgresDatabase):
        return PostgresEventQueue(database, max_pending=max_pending)
    return SQLiteEventQueue(database, max_pending=max_pending)


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


def _prospect_store(database: Store) -> ProspectStore:
    if isinstance(database, PostgresDatabase):
        return PostgresProspectStore(database)
    return SQLiteProspectStore(database)


def _prospect_index(database: Store) -> ProspectIndex:
    if isinstance(database, PostgresDatabase):
        return PostgresProspectIndex(database)
    return SQLiteProspectIndex(database)


def _api_calls(database: Store) -> ApiCallCounts:
    if isinstance(database, PostgresDatabase):
        return PostgresApiCallCounts(database)
    return SQLiteApiCallCounts(database)


def _history(
    database: Store, *, retention: timedelta, clock: Callable[[], datetime]
) -> DeliveryHistory:
    if isinstance(database, PostgresDatabase):
        return PostgresDeliveryHistory(database, retention=retention, clock=clock)
    return SQLiteDeliveryHistory(database, retention=retention, clock=clock)


def _with_tracking(app: web.Application, tracking: TrackingConfig) -> web.Application:
    add_tracking_routes(app, tracking)
    return app


def _with_status(app: web.Application, sources: StatusSources, admin_key: str) -> web.Application:
    add_status_routes(app, sources, admin_key=admin_key)
    return app


def _awaiting(provider: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A provider as an async callable: the object is built (or refused) when first asked."""

    async def get() -> Any:
        value = provider()
        return await value if inspect.isawaitable(value) else value

    return get


def _token_state(
    tokens: Callable[[], MeteredTokens], *, probe: bool
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The token's state for `status`: the service reports what it saw; the command asks for
    a token (Salesforce, not a Pardot call) since it has seen none."""

    async def state() -> dict[str, Any]:
        try:
            metered: MeteredTokens = await _awaiting(tokens)()
        except ConfigurationError as error:
            return {"state": "not configured", "detail": str(error)}
        if probe:
            try:
                await asyncio.wait_for(metered.token(), TOKEN_PROBE_SECONDS)
            except Exception:  # its state says what went wrong
                if metered.status.state != "refused":
                    metered.status.state, metered.status.detail = "refused", "no answer in time"
        return metered.status.as_dict()

    return state


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def _reveal_all(secrets: tuple[SecretStr, ...]) -> tuple[str, ...]:
    return tuple(secret.get_secret_value() for secret in secrets)


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _dry_repository(
    config: ServiceConfig, history: DeliveryHistory, index: ProspectIndex, store: ProspectStore
) -> IndexOnlyPardot:
    """The dry run's Pardot: the index as last refreshed, the custom fields as last noted."""
    version = config.fixed_api_version
    if version is None:
        raise ConfigurationError("a dry run needs PARDOT_API_VERSION 3 or 4")
    noted = await account_fields(history, None, now=_utc_now(), max_age=timedelta.max)
    return IndexOnlyPardot(
        index,
        store,
        version=version,
        custom_fields=None if noted is None else noted[1],
        lookup_field=config.lookup_field_id,
    )


async def _dry_index_keeper(
    config: ServiceConfig,
    repository: PardotRepository,
    index: ProspectIndex,
    store: ProspectStore,
    budget: DailyBudget,
    destination: DestinationSettings,
) -> IndexKeeper | None:
    """A dry run cannot scan: it decides from the index only once the index is complete."""
    if not (await index.state()).complete:
        return None
    return _index_keeper(config, repository, index, store, budget, destination)


class Container(containers.DeclarativeContainer):
    config = providers.Dependency(instance_of=ServiceConfig)
    clock = providers.Object(_utc_now)
    metrics = providers.Singleton(Metrics)
    readiness = providers.Singleton(Readiness)

    # Storage: the queue and what we know about the account share one store (SQLite file or
    # PostgreSQL database, by DESTINATION_QUEUE_URL).
    database = providers.Resource(_database, config)
    queue = providers.Singleton(_queue, database, max_pending=config.provided.max_pending)
    # Entered by the service only (build_app): CLI commands store in their own process.
    ingest_writer = providers.Factory(_ingest_writer, queue)
    prospect_store = providers.Singleton(_prospect_store, database)
    history = providers.Singleton(
        _history,
        database,
        retention=providers.Factory(timedelta, days=config.provided.retention_days),
        clock=clock,
    )
    prospect_index = providers.Singleton(_prospect_index, database)
    api_calls = providers.Singleton(_api_calls, database)
    budget = providers.Singleton(
        DailyBudget,
        api_calls,
        limit=config.provided.daily_api_limit,
        zone=config.provided.account_zone,
        clock=clock,
    )

    # Pardot, and the credentials to reach it.
    http_client = providers.Resource(_http_client)
    tokens = providers.Singleton(token_provider, config)
    # Pardot's 5 requests in flight per business unit, shared by every process on the store.
    pardot_slots = providers.Resource(
        _pardot_slots,
        config,
        database.provider,
        config.provided.business_unit_id,
        config.provided.max_concurrency,
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
            slots=pardot_slots,
            retry_wait_max=config.provided.retry_wait_max,
            account_zone=config.provided.account_zone,
            on_call=budget.provided.count_call,
        ),
        metrics,
    )
    destination = providers.Singleton(_destination, config, repository)
    index_keeper = providers.Singleton(
        _index_keeper, config, repository, prospect_index, prospect_store, budget, destination
    )
    sync_service = providers.Singleton(
        SyncService,
        repository,
        destination,
        prospect_store,
        destination_keys=config.provided.destination_keys,
        create_campaign_id=config.provided.create_campaign_id,
        lookup_setting="PARDOT_LOOKUP_FIELD_ID",
        index=index_keeper,
        change_detection=config.provided.change_detection,
        waiting=providers.Callable(_waiting, queue),
    )

    # Delivery.
    worker_options = providers.Singleton(
        WorkerOptions,
        lease_seconds=config.provided.lease_seconds,
        max_attempts=config.provided.max_attempts,
        backoff_initial=config.provided.retry_initial_seconds,
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
        token_state=providers.Callable(_token_state, metered_tokens.provider, probe=True),
        budget=budget,
        index=prospect_index,
        repository=providers.Callable(_awaiting, repository.provider),
        clock=clock,
    )
    service_status_sources = providers.Factory(
        StatusSources,
        queue,
        history,
        readiness=readiness,
        token_state=providers.Callable(_token_state, metered_tokens.provider, probe=False),
        budget=budget,
        index=prospect_index,
        repository=providers.Callable(_awaiting, repository.provider),
        clock=clock,
    )
    app = providers.Factory(
        _with_status,
        providers.Factory(
            _with_tracking,
            providers.Factory(
                create_app,
                queue,
                write_keys=providers.Callable(_reveal_all, config.provided.write_keys),
                shared_secret=providers.Callable(_reveal, config.provided.shared_secret),
                webhook_batching=config.provided.webhook_batching,
                metrics=metrics,
                readiness=readiness,
            ),
            tracking,
        ),
        service_status_sources,
        admin_key=providers.Callable(_reveal, config.provided.admin_key),
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
    dry_destination = providers.Singleton(_destination, config, dry_repository)
    dry_index_keeper = providers.Singleton(
        _dry_index_keeper,
        config,
        dry_repository,
        dry_prospect_index,
        dry_prospect_store,
        dry_budget,
        dry_destination,
    )
    dry_sync_service = providers.Singleton(
        SyncService,
        dry_repository,
        dry_destination,
        dry_prospect_store,
        destination_keys=config.provided.destination_keys,
        create_campaign_id=config.provided.create_campaign_id,
        lookup_setting="PARDOT_LOOKUP_FIELD_ID",
        index=dry_index_keeper,
        change_detection=config.provided.change_detection,
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
