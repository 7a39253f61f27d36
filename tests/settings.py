"""A ServiceConfig for tests, built from keyword arguments rather than a `.env` file."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from typing import Any

from entrypoints.config import ServiceConfig
from tests.strategies import BUSINESS_UNIT


def service_config(**settings: Any) -> ServiceConfig:
    """The two required settings plus `settings`, by field name; no `.env` file is read."""
    values: dict[str, Any] = {"account_id": "507251", "business_unit_id": BUSINESS_UNIT}
    # Whatever a test does not override (the index, the budget, the history) lives in a file
    # of its own, never in a `pardot-destination.db` left in the working directory.
    folder = tempfile.mkdtemp(prefix="pardot-destination-test-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    values["queue_url"] = f"sqlite:///{folder}/queue.db"
    values.update(settings)
    return ServiceConfig(_env_file=None, **values)  # type: ignore[call-arg]
