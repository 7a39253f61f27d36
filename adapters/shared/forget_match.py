"""What every store's forget shares: which stored events are a person's, and what else names them.

In: a `Person`. Out: the strings a stored event's JSON text must contain to be theirs
(`needles`, a cheap filter the database applies before any payload is parsed), the exact test
on a parsed payload (`is_theirs`), the kinds queue states count as (`KIND_OF_STATE`), and the
names of the create marks and locks that may hold their email or ids in plain text
(`create_names`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from domain.forget import EMAIL, event_identities, value_of
from domain.ports.forget import Person

# The queue's states, counted as the kinds a forget reports.
KIND_OF_STATE = {
    "pending": "waiting",
    "retry": "waiting",
    "leased": "in_flight",
    "delivered": "settled",
    "skipped": "settled",
    "rejected": "settled",
    "dead": "dead",
}
CREATING = "creating:"  # domain.sync.create's mark of a create whose prospect is not learned


def needles(person: Person) -> list[str]:
    """Strings one of which the JSON text of each of the person's events holds, as written or
    in lower case: each id and email, and as JSON escapes it (the standard library's ASCII
    escapes, for the payloads orjson refused). Both spellings, since a database's lower() may
    fold ASCII only (SQLite's; PostgreSQL's under the C locale)."""
    found: set[str] = set()
    for identity in person.identities:
        value = value_of(identity)
        for text in (value, json.dumps(value)[1:-1]):
            found.update((text, text.lower()))
    return sorted(found)


def is_theirs(payload_text: str, person: Person) -> bool:
    """Whether a stored event names one of the person's identities."""
    return bool(names_in(payload_text) & person.identities)


def names_in(payload_text: str) -> frozenset[str]:
    """The identities a stored event names (`domain.forget.event_identities`)."""
    try:
        payload = json.loads(payload_text)
    except ValueError:
        return frozenset()
    return event_identities(payload) if isinstance(payload, Mapping) else frozenset()


def create_names(person: Person, lookup_links: Iterable[str]) -> list[str]:
    """Lock names and `creating:` marks that spell the person's email or lookup value: the
    email itself, and each `lookup:<field>=<value>` linked to their prospects."""
    names = {value_of(i) for i in person.identities if i.startswith(EMAIL)}
    names.update(link for link in lookup_links if link.startswith("lookup:"))
    names.update(f"prospect:{key}" for key in person.prospects)
    return sorted(names | {CREATING + name for name in names})


def lookup_suffixes(person: Person) -> list[str]:
    """`=<value>` of each id: a `lookup:<field>=<userId>` mark or lock not yet tied to a prospect
    (the userId as lookup value) ends so."""
    return sorted({"=" + value_of(i) for i in person.identities if not i.startswith(EMAIL)})


def tally(states: Iterable[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for state in states:
        kind = KIND_OF_STATE.get(state, "settled")
        counted[kind] = counted.get(kind, 0) + 1
    return counted


def as_list(values: Iterable[Any]) -> str:
    """A JSON array for SQLite's json_each."""
    return json.dumps(sorted(values))
