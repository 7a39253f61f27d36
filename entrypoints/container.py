"""The composition root: the only place that decides which adapter serves which port."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.identity_memory import InMemoryIdentityMap
from adapters.pardot_memory import InMemoryPardot
from domain.settings import DestinationSettings
from domain.sync import SyncService


def _settings(values: dict[str, object]) -> DestinationSettings:
    return DestinationSettings.parse(values)


class Container(containers.DeclarativeContainer):
    config = providers.Configuration()

    settings = providers.Singleton(_settings, config.destination)
    repository = providers.Singleton(
        InMemoryPardot,
        version=settings.provided.api_version,
        custom_fields=config.custom_fields.as_(lambda value: value or ()),
    )
    identity_map = providers.Singleton(InMemoryIdentityMap)
    sync_service = providers.Factory(
        SyncService,
        repository=repository,
        settings=settings,
        identities=identity_map,
        destination_keys=config.destination_keys.as_(lambda value: value or ("Pardot",)),
    )
