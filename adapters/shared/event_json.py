"""An accepted event as both SQL queues store it: in goes the payload, out its JSON text.

orjson is several times faster, and storing is ingest's biggest cost after HTTP itself; what
orjson refuses (an integer past 64 bits, a lone surrogate) goes through the standard library,
whose ASCII escapes keep even those storable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson


def event_json(payload: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(payload).decode()
    except TypeError:
        return json.dumps(dict(payload), separators=(",", ":"))
