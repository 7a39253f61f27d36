"""Forgetting a person: who an event or a request names, and how the suppression list keys them.

In: an event's payload, or what a data-subject request gives (an email, a userId, an
anonymousId). Out: the person's identities as `user:<id>`, `anonymous:<id>`,
`email:<lower-case email>` (the prospect store's spelling of the first two), and their salted
digests, the only form in which the suppression list keeps them.

Pure: no store, no clock. `entrypoints.operator.forget` finds everything linked to these
identities; the stores remove it (`domain.ports.forget`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from domain.errors import DestinationError
from domain.prospect import normalise_email

USER = "user:"
ANONYMOUS = "anonymous:"
EMAIL = "email:"
Kind = Literal["email", "userId", "anonymousId"]
KINDS: tuple[Kind, ...] = ("email", "userId", "anonymousId")
MAX_ID_LENGTH = 1000  # longer is no person's id: a pasted payload, say


class InvalidPerson(DestinationError):
    """A request names nobody that could be looked for (a malformed email, an empty id)."""


def _text(value: object) -> str | None:
    # Segment's libraries stringify numeric ids (as IdentifyEvent does).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value != "":
        return value
    return None


def event_identities(payload: Mapping[str, Any]) -> frozenset[str]:
    """Every identity an event names: its userId, anonymousId, and email trait (top-level
    traits winning over context.traits, as `IdentifyEvent.all_traits`). Never raises: a
    payload too broken to parse still names whoever it can."""
    found: set[str] = set()
    user, anonymous = _text(payload.get("userId")), _text(payload.get("anonymousId"))
    if user is not None:
        found.add(USER + user)
    if anonymous is not None:
        found.add(ANONYMOUS + anonymous)
    for traits in (payload.get("traits"), _context_traits(payload)):
        email = normalise_email(traits.get("email")) if isinstance(traits, Mapping) else None
        if email is not None:
            found.add(EMAIL + email.lower())
    return frozenset(found)


def _context_traits(payload: Mapping[str, Any]) -> object:
    context = payload.get("context")
    return context.get("traits") if isinstance(context, Mapping) else None


def requested(kind: Kind, value: object) -> str:
    """The identity a request names, or InvalidPerson saying what is wrong with it."""
    if kind == "email":
        email = normalise_email(value)
        if email is None:
            shown = value if isinstance(value, str) and len(value) <= 100 else "this value"
            raise InvalidPerson(f"{shown!r} is not a valid email address")
        return EMAIL + email.lower()
    text = _text(value)
    if text is None or not text.strip():
        raise InvalidPerson(f"{kind} must be a non-empty string")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidPerson(f"{kind} is longer than {MAX_ID_LENGTH} characters")
    return (USER if kind == "userId" else ANONYMOUS) + text


def from_query(query: str) -> frozenset[str]:
    """What `forget WHO` names, as `explain` reads its argument: a userId or an anonymousId,
    and an email too when WHO holds an `@` (then a malformed one is refused)."""
    who = query.strip()
    found = {requested("userId", who), requested("anonymousId", who)}
    if "@" in who:
        found.add(requested("email", who))
    return frozenset(found)


def value_of(identity: str) -> str:
    """The id or email inside an identity (`user:42` -> `42`)."""
    return identity.partition(":")[2]


def emails_of(identities: Iterable[str]) -> list[str]:
    return sorted(value_of(i) for i in identities if i.startswith(EMAIL))


def users_of(identities: Iterable[str]) -> list[str]:
    return sorted(value_of(i) for i in identities if i.startswith(USER))


def digest(salt: bytes, identity: str) -> str:
    """The suppression list's key for an identity: HMAC-SHA256 under the store's salt.

    A reader of the list cannot turn a digest back into the email or id; with the salt (kept
    in the same store) a guess can be tested, so the store stays as guarded as the data was.
    """
    return hmac.new(salt, identity.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def digests(salt: bytes, identities: Iterable[str]) -> frozenset[str]:
    return frozenset(digest(salt, identity) for identity in identities)
