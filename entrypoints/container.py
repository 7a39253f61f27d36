"""The composition root: the only place that decides which adapter serves which port.

Long-lived clients (the httpx client, the SQLite database) are Resources, opened and closed
by the application's lifecycle. Tests override providers instead of monkeypatching.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
from dependency_injector import containers, providers

from adapters.pardot_http import PardotHttpRepository
from adapters.prospect_store_sqlite import SQLiteProspectStore
from adapters.queue_sqlite import SQLiteEventQueue
from adapters.salesforce_oauth import token_provider_from
from adapters.sqlite_db import SQLiteDatabase
from domain.errors import ConfigurationError, InvalidSettings
from domain.ports import PardotRepository, ProspectStore, TokenProvider
from domain.sync import SyncService
from entrypoints.config import ServiceConfig
from entrypoints.metrics import Metrics
from entrypoints.readiness import Readiness

log = logging.getLogger(__name__)


async def _http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as client:
        yield client


async def _database(config: ServiceConfig) -> AsyncIterator[SQLiteDatabase]:
    database = SQLiteDatabase(config.queue_path)
    try:
        yield database
    finally:
        await database.close()


def _tokens(config: ServiceConfig) -> TokenProvider:
    return token_provider_from(
        login_url=config.salesforce_login_url,
        client_id=config.salesforce_client_id,
        client_secret=config.salesforce_client_secret,
        refresh_token=config.salesforce_refresh_token,
        token_file=config.token_file,
        jwt_username=config.jwt_username,
        jwt_private_key_file=config.jwt_private_key_file,
        static_token=config.static_access_token,
    )


class SyncServiceSource:
    """Builds the SyncService once the API version is known (detected on first use)."""

    def __init__(
        self, repository: PardotRepository, store: ProspectStore, config: ServiceConfig
    ) -> None:
        self._repository = repository
        self._store = store
        self._config = config
        self._service: SyncService | None = None

    async def __call__(self) -> SyncService:
        if self._service is None:
            version = await self._repository.detect_version()
            try:
                settings = self._config.destination(version)
            except InvalidSettings as exc:
                # Only known once Pardot named the version (a lookup field on a v3 account).
                raise ConfigurationError(f"API version {version} detected: {exc}") from None
            for warning in self._config.startup_warnings(settings):
                log.warning("%s", warning)
            self._service = SyncService(
                self._repository,
                settings,
                self._store,
                destination_keys=self._config.destination_keys,
                create_campaign_id=self._config.create_campaign_id,
                lookup_setting="PARDOT_LOOKUP_FIELD_ID",
            )
        return self._service


T = TypeVar("T")


async def resolve(provider: Callable[[], Any]) -> Any:
    """A provider's instance: providers that depend on async Resources hand out awaitables."""
    instance = provider()
    return await instance if inspect.isawaitable(instance) else instance


class Container(containers.DeclarativeContainer):
    config = providers.Dependency(instance_of=ServiceConfig)

    metrics = providers.Singleton(Metrics)
    readiness = providers.Singleton(Readiness)
    http_client = providers.Resource(_http_client)
    database = providers.Resource(_database, config)
    queue = providers.Singleton(SQLiteEventQueue, database, max_pending=config.provided.max_pending)
    prospect_store = providers.Singleton(SQLiteProspectStore, database)
    tokens = providers.Singleton(_tokens, config)
    repository = providers.Singleton(
        PardotHttpRepository,
        http_client,
        tokens,
        base_url=config.provided.pardot_base_url,
        business_unit_id=config.provided.business_unit_id,
        api_version=config.provided.fixed_api_version,
        max_concurrency=config.provided.max_concurrency,
        retry_wait_max=config.provided.retry_wait_max,
    )
    sync_service = providers.Singleton(SyncServiceSource, repository, prospect_store, config)
