"""What no stored event may hold, even where JSON and the Segment spec allow it.

Each of these was once accepted with 200 and then broke delivery for every event leased with
it, or failed the whole request: a lone surrogate (legal in JSON, not encodable as UTF-8), a
NUL or a userId of kilobytes (legal in JSON, refused by PostgreSQL), nesting hundreds of
levels deep, NaN or Infinity (not JSON at all when written back), and a time that cannot be
represented once in UTC. Refusing them at the door, whichever store is behind it, costs the
sender one event; accepting them cost whole batches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

MAX_DEPTH = 32  # the event object is level 1; Segment's own payloads stay under 10
# The sender's times; receivedAt is ours (ingest sets it whatever the sender claimed).
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INT_BITS = 1024  # beyond a double's range: no JavaScript client could have meant it

_SURROGATE = re.compile("[\ud800-\udfff]")
# PostgreSQL's text and jsonb cannot hold U+0000; refused on every backend, so an event is
# accepted or refused the same whichever store is behind the door.
_NUL = "holds U+0000 (\\u0000), which no store keeps as text"
# The ids the queue indexes an event by (the person whose events go in order): PostgreSQL
# refuses an index entry past about 2.7 KB, which failed the whole request; Segment's ids
# are a few dozen characters.
ID_FIELDS = ("userId", "anonymousId")
MAX_ID_BYTES = 1024
# Parsed the way the event model parses them, so "representable" means the same thing.
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def problem(event: dict[str, Any], *, plain: bool = False) -> str | None:
    """Why this event cannot be stored, naming where; None when it can.

    `plain`: the body it came in is known to hold none of the content problems (see
    `ingest.decode_json`), so only its times are checked.
    """
    return (
        (None if plain else _content_problem(event)) or _id_problem(event) or _time_problem(event)
    )


def _id_problem(event: dict[str, Any]) -> str | None:
    for name in ID_FIELDS:
        value = event.get(name)
        # Four bytes a character at most: shorter text needs no encoding to be measured.
        if type(value) is str and len(value) * 4 > MAX_ID_BYTES:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_ID_BYTES:
                return f"{name}: {size} bytes, over the {MAX_ID_BYTES} a store can index"
    return None


def _content_problem(event: dict[str, Any]) -> str | None:
    # Iterative, so the walk itself cannot hit the recursion limit it is guarding against;
    # paths are tuples, spelled out only for the one refusal.
    stack: list[tuple[dict[str, Any] | list[Any], tuple[Any, ...]]] = [(event, ())]
    while stack:
        container, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            return f"{_spell(path)}: nested deeper than {MAX_DEPTH} levels"
        items: Iterable[tuple[Any, Any]] = (
            container.items() if isinstance(container, dict) else enumerate(container)
        )
        for key, value in items:
            kind = type(value)
            if kind is str:
                if not value.isascii() and _SURROGATE.search(value):
                    return f"{_spell((*path, key))}: holds a lone UTF-16 surrogate (not text)"
                if "\x00" in value:
                    return f"{_spell((*path, key))}: {_NUL}"
            elif kind is dict or kind is list:
                stack.append((value, (*path, key)))
            elif kind is float:
                if not math.isfinite(value):
                    return f"{_spell((*path, key))}: NaN and Infinity are not JSON numbers"
            elif kind is int and value.bit_length() > MAX_INT_BITS:
                return f"{_spell((*path, key))}: the number is out of range"
            if type(key) is str and not key.isascii() and _SURROGATE.search(key):
                return f"{_spell((*path, key))}: a key holds a lone UTF-16 surrogate (not text)"
            if type(key) is str and "\x00" in key:
                return f"{_spell((*path, key))}: a key {_NUL}"
    return None


def _time_problem(event: dict[str, Any]) -> str | None:
    for name in TIME_FIELDS:
        value = event.get(name)
        if value is None:
            continue
        try:
            # The standard library reads the usual ISO forms several times faster; the rest
            # (nine fractional digits, epoch numbers) go the event model's way.
            when = datetime.fromisoformat(value) if type(value) is str else None
        except ValueError:
            when = None
        try:
            when = when or _DATETIME.validate_python(value)
        except ValidationError:
            continue  # not a time at all: the event model says so, with its own message
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # as the event model reads a zoneless time
        try:
            utc = when.astimezone(UTC)
        except OverflowError:  # beyond datetime's own range, one side or the other
            side = "before 1970" if when.year < EARLIEST.year else "past the year 9999"
            return f"{name}: {value!s:.40} is {side} in UTC"
        if utc < EARLIEST:
            return f"{name}: {value!s:.40} is before 1970 in UTC"
    return None


def _spell(path: tuple[Any, ...]) -> str:
    # Keys are the sender's text: escaped so a reason is always printable and valid UTF-8.
    shown = ".".join(str(key) for key in path[:12]) + (".…" if len(path) > 12 else "")
    shown = shown.replace("\x00", "\\u0000")
    return shown.encode("ascii", "backslashreplace").decode() or "event"
