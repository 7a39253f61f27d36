"""The names of the store's locks the sync holds (`ProspectStore.hold`), in one namespace.

In: prospect keys, emails and lookup values. Out: lock names that never clash: an email as
itself (creates by email, as before), `prospect:<key>` (held from a prospect's stamp check
to its recorded write), `lookup:<field>=<value>` (held while deciding that nobody holds the
value and creating the prospect that will).
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.matching import MatchByLookup
from domain.sync.context import NeedsCreate


def prospect_lock(key: str) -> str:
    return f"prospect:{key}"


def lookup_lock(field: str, value: str) -> str:
    """`value` in the form Pardot stores it, so every spelling of one value shares it."""
    return f"lookup:{field}={value}"


def write_locks(keys: Iterable[str]) -> list[str]:
    return sorted(prospect_lock(key) for key in keys)


def create_locks(needs: Iterable[NeedsCreate]) -> list[str]:
    """Each need's email, and the lookup value a need expects its new prospect to hold."""
    names: set[str] = set()
    for need in needs:
        names.add(need.email.strip().lower())
        write = need.group.write
        if need.expect is not None and isinstance(write, MatchByLookup):
            names.add(lookup_lock(write.lookup_field, need.expect))
    return sorted(names)
