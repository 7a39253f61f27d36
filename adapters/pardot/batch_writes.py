"""Pardot's batch writes, v4 and v3: which operations a set of rows needs, and in what order.

In: up to BATCH_LIMIT ProspectWrites and a function that sends one batch operation
(`batchUpdate`, `batchUpsert`, `batchCreate`) with its rows and returns Pardot's row errors.
Out: one entry per write, None where the row succeeded, else the row's PermanentPardotError.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from domain.errors import PardotError, PermanentPardotError
from domain.ports import ProspectWrite
from domain.prospect import FieldValue

EMAIL_EXISTS_MESSAGE = "A prospect with the specified email address already exists"


class SendBatch(Protocol):
    """One batch operation; returns Pardot's row errors keyed by row (v4: position, v3: key)."""

    def __call__(
        self, operation: str, rows: object, *, idempotent: bool = True
    ) -> Awaitable[dict[str, str]]: ...


async def write_v4(writes: Sequence[ProspectWrite], batch: SendBatch) -> list[PardotError | None]:
    results: list[PardotError | None] = [None] * len(writes)
    operations = (
        ("batchUpdate", "update"),
        ("batchUpsert", "upsert"),
        ("batchCreate", "create"),
    )
    for operation, mode in operations:
        indexes = [i for i, w in enumerate(writes) if w.mode == mode]
        if not indexes:
            continue
        rows = [_v4_row(writes[i]) for i in indexes]
        # A create batch whose answer was lost may have happened: never repeated here.
        errors = await batch(operation, rows, idempotent=mode != "create")
        for position, index in enumerate(indexes):
            if str(position) in errors:
                results[index] = _row_error(errors[str(position)])
    return results


async def write_v3(writes: Sequence[ProspectWrite], batch: SendBatch) -> list[PardotError | None]:
    """v3 rows are keyed by email or id.

    Rows with fields meant only for new prospects (the campaign) are created first, and
    those whose email exists are then updated without them: Pardot's upsert cannot say
    whether it created.
    """
    results: list[PardotError | None] = [None] * len(writes)
    creating = [
        i
        for i, w in enumerate(writes)
        if (w.create_fields or w.mode == "create") and w.by == "email"
    ]
    plain = [i for i in range(len(writes)) if i not in set(creating)]
    if creating:
        rows = {
            writes[i].key: _flat({**writes[i].create_fields, **writes[i].fields}) for i in creating
        }
        errors = await batch("batchCreate", rows)
        for index in creating:
            message = errors.get(writes[index].key)
            if message == EMAIL_EXISTS_MESSAGE and writes[index].mode != "create":
                plain.append(index)
            elif message is not None:
                results[index] = PermanentPardotError(message)
    for operation, mode in (("batchUpdate", "update"), ("batchUpsert", "upsert")):
        chosen = [i for i in plain if writes[i].mode == mode]
        if not chosen:
            continue
        rows = {writes[i].key: _flat(writes[i].fields) for i in chosen}
        errors = await batch(operation, rows)
        for index in chosen:
            if writes[index].key in errors:
                results[index] = PermanentPardotError(errors[writes[index].key])
    return results


def _row_error(message: str) -> PermanentPardotError:
    """A batch row's error: rows carry only Pardot's message, so name the code we act on.

    "Invalid prospect ID" is error 3: the prospect is gone (deleted, archived or merged).
    """
    code = 3 if message.strip().lower().startswith("invalid prospect id") else None
    return PermanentPardotError(message, code=code)


def _flat(fields: Mapping[str, FieldValue]) -> dict[str, Any]:
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()
    }


def _v4_row(write: ProspectWrite) -> dict[str, Any]:
    return {
        **_flat(
            {**write.create_fields, **write.fields} if write.mode != "update" else write.fields
        ),
        write.by: write.key,
    }
