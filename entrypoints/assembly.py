"""The pieces the composition root builds with more than a constructor call.

In: the configuration and other providers' objects. Out: the destination settings once Pardot
named the API version (`destination_settings`), the index keeper with its scan lock and its
refreshes counted for /metrics (`index_keeper`, and `when_complete` for a dry run that cannot
scan), the sync service of a run (`sync_service`), the backlog a scan would serve
(`backlog`), a provider as an async callable (`awaiting`), the token's state for `status`
(`token_state`), this process's Pardot slot meter shown in /metrics (`slot_use`), secrets
revealed where they are handed on (`reveal`) and the clock. No
adapter is named here: only `entrypoints.container` chooses adapters.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from domain.budget import DailyBudget
from domain.bulk_cost import ExportPace
from domain.errors import ConfigurationError, InvalidSettings
from domain.import_files import ImportFileBudget
from domain.index import IndexKeeper
from domain.index.export import ExportOptions
from domain.ports import (
    BulkPardot,
    EventQueue,
    ImportLedger,
    PardotRepository,
    ProspectIndex,
    ProspectStore,
)
from domain.settings import DestinationSettings
from domain.sync import SyncService
from domain.sync.import_lane import ImportLane, ImportPolling
from domain.sync.imports import MIN_IMPORT_ROWS
from entrypoints.config import ServiceConfig
from entrypoints.metering import MeteredTokens
from entrypoints.metrics import Metrics
from entrypoints.slot_use import SlotUse
from entrypoints.wakeup import Wakeup

log = logging.getLogger(__name__)

TOKEN_PROBE_SECONDS = 15.0
SCAN_LOCK = "(prospect index scan)"  # a create-lock key no email can be: one scan at a time
REFRESH_LOCK = "(prospect index refresh)"  # one refresh in flight for every process


async def destination_settings(
    config: ServiceConfig, repository: PardotRepository
) -> DestinationSettings:
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


def index_keeper(
    config: ServiceConfig,
    repository: PardotRepository,
    index: ProspectIndex,
    store: ProspectStore,
    budget: DailyBudget,
    destination: DestinationSettings,
    *,
    metrics: Metrics | None = None,
    bulk: BulkPardot | None = None,
) -> IndexKeeper:
    """`metrics` given: /metrics counts this keeper's refreshes (the real run's, not a dry
    run's). `bulk` given, and DESTINATION_BULK=auto: exports fill the index where they cost
    fewer calls than the scan."""
    exports = None
    if bulk is not None and config.bulk == "auto":
        exports = ExportOptions(
            account_zone=config.account_zone,
            export_zone=config.export_zone,
            pace=ExportPace(
                rows_per_second=config.export_rows_per_second,
                queue_delay=config.export_queue_seconds,
            ),
            first_wait=config.import_poll_seconds,
            min_prospects=config.export_min_prospects,
        )
    keeper = IndexKeeper(
        repository,
        index,
        lookup_field=destination.lookup_field,
        budget=budget,
        refresh_seconds=config.index_refresh_seconds,
        parallel=config.max_concurrency,
        scan_lock=lambda: store.create_lock(SCAN_LOCK),
        refresh_lock=lambda: store.create_lock(REFRESH_LOCK),
        lag_seconds=config.index_lag_seconds,
        bulk=bulk if exports is not None else None,
        exports=exports,
    )
    if metrics is not None:
        metrics.index.count_refreshes_of(keeper)
    return keeper


async def when_complete(index: ProspectIndex, keeper: IndexKeeper) -> IndexKeeper | None:
    """`keeper` while `index` holds the whole account, else None (decide without the index)."""
    return keeper if (await index.state()).complete else None


def sync_service(
    config: ServiceConfig,
    repository: PardotRepository,
    destination: DestinationSettings,
    store: ProspectStore,
    index: IndexKeeper | None,
    *,
    waiting: Callable[[], Awaitable[int]] | None = None,
    imports: ImportLane | None = None,
) -> SyncService:
    """The sync service the configuration asks for: the real run's (with `imports`, the bulk
    lane) and the dry run's."""
    if imports is not None:
        imports.version = destination.api_version  # known once Pardot named it
    return SyncService(
        repository,
        destination,
        store,
        destination_keys=config.destination_keys,
        create_campaign_id=config.create_campaign_id,
        lookup_setting="PARDOT_LOOKUP_FIELD_ID",
        index=index,
        change_detection=config.change_detection,
        waiting=waiting,
        imports=imports,
    )


def import_lane(
    config: ServiceConfig,
    bulk: BulkPardot,
    metrics: Metrics,
    ledger: ImportLedger | None = None,
    file_budget: ImportFileBudget | None = None,
) -> ImportLane | None:
    """Pardot's Import API for large backlogs, unless DESTINATION_BULK=off; its version is set
    by `sync_service`, once Pardot named it. `file_budget`: the account's import files a day."""
    if config.bulk == "off":
        return None
    lane = ImportLane(
        bulk,
        version=4,
        min_rows=config.bulk_min_rows or MIN_IMPORT_ROWS,
        polling=ImportPolling(first=config.import_poll_seconds),
        timeout=config.import_timeout_seconds,
        ledger=ledger,
        file_budget=file_budget,
    )
    metrics.watch_imports(lane)
    return lane


def slot_use(metrics: Metrics, limit: int) -> SlotUse:
    """The meter of this process's Pardot slots, read by /metrics at each scrape."""
    use = SlotUse(limit)
    metrics.watch_slot_use(use.ratio)
    return use


def backlog(queue: EventQueue) -> Callable[[], Awaitable[int]]:
    """Events waiting for delivery: the backlog a scan of the account would serve."""

    async def waiting() -> int:
        counts = await queue.counts()
        return sum(counts.get(state, 0) for state in ("pending", "retry", "leased"))

    return waiting


def waking(config: ServiceConfig, wakeup: Wakeup) -> Callable[[], None]:
    """What the door calls once events are stored: wake the worker of this process, unless the
    settings keep it to its poll (DESTINATION_WAKE_ON_PUT=false, the benchmark's baseline)."""
    return wakeup.notify if config.wake_on_put else _nothing


def _nothing() -> None:
    """The worker is left to its poll."""


def awaiting(provider: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A provider as an async callable: the object is built (or refused) when first asked."""

    async def get() -> Any:
        value = provider()
        return await value if inspect.isawaitable(value) else value

    return get


def token_state(
    tokens: Callable[[], MeteredTokens], *, probe: bool
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """The token's state for `status`: the service reports what it saw; the command asks for
    a token (Salesforce, not a Pardot call) since it has seen none."""

    async def state() -> dict[str, Any]:
        try:
            metered: MeteredTokens = await awaiting(tokens)()
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


def reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def reveal_all(secrets: tuple[SecretStr, ...]) -> tuple[str, ...]:
    return tuple(secret.get_secret_value() for secret in secrets)


def utc_now() -> datetime:
    return datetime.now(UTC)
