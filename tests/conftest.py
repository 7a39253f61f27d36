"""Settings for the whole suite."""

from __future__ import annotations

from hypothesis import settings

# Property tests judge behaviour, not speed: a slow CI machine must not fail them on time.
settings.register_profile("default", deadline=None, print_blob=True)
settings.load_profile("default")


def pytest_configure(config: object) -> None:
    # The service's logging, as `pardot-destination` sets it up: structlog's records reach
    # the standard library, so caplog sees them like any other.
    from entrypoints.logs import configure_logging

    configure_logging("info")
