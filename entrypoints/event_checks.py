"""What no stored event may hold, even where JSON and the Segment spec allow it.

Each of these was once accepted with 200 and then broke delivery for every event leased with
it: a lone surrogate (legal in JSON, not encodable as UTF-8), nesting hundreds of levels
deep, NaN or Infinity (not JSON at all when written back), and a time that cannot be
represented once in UTC. Refusing them at the door costs the sender one event; accepting
them cost whole batches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

MAX_DEPTH = 32  # the event object is level 1; Segment's own payloads stay under 10
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INT_BITS = 1024  # beyond a double's range: no JavaScript client could have meant it

_SURROGATE = re.compile("[\ud800-\udfff]")
# Parsed the way the event model parses them, so "representable" means the same thing.
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def problem(event: dict[str, Any]) -> str | None:
    """Why this event cannot be stored, naming where; None when it can."""
    return _content_problem(event) or _time_problem(event)


def _content_problem(event: dict[str, Any]) -> str | None:
    # Iterative, so the walk itself cannot hit the recursion limit it is guarding against.
    stack: list[tuple[dict[str, Any] | list[Any], int, str]] = [(event, 1, "")]
    while stack:
        container, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return f"{path}: nested deeper than {MAX_DEPTH} levels"
        items: Iterable[tuple[Any, Any]] = (
            container.items() if isinstance(container, dict) else enumerate(container)
        )
        for key, value in items:
            if isinstance(key, str) and _has_surrogate(key):
                return f"{_at(path, key)}: a key holds a lone UTF-16 surrogate (not valid text)"
            if isinstance(value, str):
                if _has_surrogate(value):
                    return f"{_at(path, key)}: holds a lone UTF-16 surrogate (not valid text)"
            elif isinstance(value, float):
                if not math.isfinite(value):
                    return f"{_at(path, key)}: NaN and Infinity are not JSON numbers"
            elif isinstance(value, int) and not isinstance(value, bool):
                if value.bit_length() > MAX_INT_BITS:
                    return f"{_at(path, key)}: the number is out of range"
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1, _at(path, key)))
    return None


def _time_problem(event: dict[str, Any]) -> str | None:
    for name in TIME_FIELDS:
        value = event.get(name)
        if value is None:
            continue
        try:
            when = _DATETIME.validate_python(value)
        except ValidationError:
            continue  # not a time at all: the event model says so, with its own message
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # as the event model reads a zoneless time
        try:
            utc = when.astimezone(UTC)
        except OverflowError:
            return f"{name}: {value!s:.40} is past the year 9999 in UTC"
        if utc < EARLIEST:
            return f"{name}: {value!s:.40} is before 1970 in UTC"
    return None


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _at(path: str, key: object) -> str:
    # Keys are the sender's text: escaped so a reason is always printable and valid UTF-8.
    name = str(key).encode("ascii", "backslashreplace").decode()
    if len(path) > 200:  # a deep path says enough by its start
        return path
    return f"{path}.{name}" if path else name
