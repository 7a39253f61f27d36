"""The composition of forgetting (issue 25), beside the container rather than inside it.

`Forgetting` is a container the main one embeds (`Container.forgetting`), handing it the
store and the other ports it already builds: the store's PersonalData (which is its
SuppressionList too), the suppression gate the door and the worker share, and the sources of
the forget use case that `forget` and /admin/forget run. No adapter is named here: the store
builds its own (`Stores.personal_data`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dependency_injector import containers, providers

from domain.ports import DeliveryHistory, PardotRepository, ProspectIndex, ProspectStore
from entrypoints import assembly
from entrypoints.operator.fields import RepositoryProvider
from entrypoints.operator.forget import ForgetSources
from entrypoints.suppression import SuppressionGate


def ready_repository(repository: Callable[[], Any]) -> RepositoryProvider:
    """Pardot for a forget, asked for only with `--in-pardot`: its version known (a delete's
    URL names it) and one call answered (the account's custom fields: the cheapest call that
    always succeeds), so a missing credential or an unreachable Pardot is raised before
    anything is removed."""

    async def ready() -> PardotRepository:
        pardot: PardotRepository = await assembly.awaiting(repository)()
        await pardot.detect_version()
        await pardot.custom_fields()
        return pardot

    return ready


class Forgetting(containers.DeclarativeContainer):
    stores: providers.Dependency[Any] = providers.Dependency()
    prospect_store: providers.Dependency[ProspectStore] = providers.Dependency()
    history: providers.Dependency[DeliveryHistory] = providers.Dependency()
    prospect_index: providers.Dependency[ProspectIndex] = providers.Dependency()
    repository: providers.Dependency[PardotRepository] = providers.Dependency()

    personal_data = providers.Singleton(stores.provided.personal_data.call())
    # One per process: the door's copy of the list lives here, and a forget run through the
    # door (/admin/forget) tells it to read the list again at once.
    gate = providers.Singleton(SuppressionGate, personal_data, personal_data)
    sources = providers.Factory(
        ForgetSources,
        personal_data,
        personal_data,
        prospect_store,
        history,
        prospect_index,
        pardot=providers.Callable(ready_repository, repository.provider),
    )
