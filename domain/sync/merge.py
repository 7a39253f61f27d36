"""Merge per prospect: the groups resolved to one prospect in, one value per field out (pure).

In: every group aimed at one prospect, whichever identity it came by. Out: per field the
value of the latest event (equal times: the later arrival), and the email by the email rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from domain.sync.grouping import Group, Stamped


@dataclass(frozen=True)
class Merged:
    """What the events aimed at one prospect say, before the store's stamps are consulted."""

    fields: dict[str, Stamped]
    # The email rule: with v4 the latest email is written like a field; with v3 the email is
    # the prospect's key, which the row names, so it is never a field (None here).
    email: Stamped | None
    any_email: bool  # whether any event carried an email, written or not


def merge(groups: Sequence[Group], *, by_email: bool) -> Merged:
    """Per field the latest value across `groups`; `by_email` when the email is the key (v3)."""
    fields: dict[str, Stamped] = {}
    for group in groups:
        for name, stamped in group.stamps.items():
            if stamped.newer_than(fields.get(name)):
                fields[name] = stamped
    emails = [group.email for group in groups if group.email is not None]
    email = None if by_email else latest(emails)
    return Merged(fields, email, bool(emails))


def latest(candidates: Iterable[Stamped]) -> Stamped | None:
    """The latest of `candidates` by (time, arrival); where either of two has no time, the one
    that comes later in `candidates` wins."""
    found: Stamped | None = None
    for candidate in candidates:
        if candidate.newer_than(found):
            found = candidate
    return found
