"""Settings for the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings

from adapters.postgres.database import PostgresDatabase
from tests.postgres import fresh_schema

# Property tests judge behaviour, not speed: a slow CI machine must not fail them on time.
settings.register_profile("default", deadline=None, print_blob=True)
settings.load_profile("default")


def pytest_configure(config: object) -> None:
    # The service's logging, as `pardot-destination` sets it up: structlog's records reach
    # the standard library, so caplog sees them like any other.
    from entrypoints.logs import configure_logging

    configure_logging("info")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables land in a fresh schema, dropped after the test."""
    with fresh_schema() as url:
        yield url


@pytest.fixture
async def postgres_db(postgres_url: str) -> AsyncIterator[PostgresDatabase]:
    """An opened (migrated) PostgresDatabase in a fresh schema."""
    async with PostgresDatabase(postgres_url) as database:
        yield database


# Tests whose pass depends on timing (faults at set moments, leases, spans): run one after
# another on one xdist worker, so no two of them share the machine's cores at once.
TIMING = ("tests/faults/",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in item.nodeid for part in TIMING):
            item.add_marker(pytest.mark.xdist_group("timing"))
