"""Finding what breaks a batch: retry it in halves until the failing parts stand alone.

A batch that fails with an error nobody expected (a bug meeting an odd event) must cost
only the people it concerns. The worker hands `isolate` the batch cut into people (each
person's events stay together, so one person's events are still merged as one) and a way to
attempt any subset; `isolate` bisects, so finding one bad person among n takes about
2·log2(n) attempts, and every part that succeeded keeps its results.

Only an error that is some person's can be found this way. One that says the surroundings
failed (the store unreachable mid-search, the batch's lease gone) says nothing about the part
that met it: had the search gone on, the parts tried before the store came back would be
blamed and dead-lettered, and those tried after it would succeed. Such an error ends the search
and leaves everyone not judged yet `untried`, to be retried.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")

Attempt = Callable[[Sequence[int]], Awaitable[Mapping[int, R]]]


@dataclass
class Isolated(Generic[R]):
    """Results by index for the parts that succeeded; the error for the parts that failed."""

    results: dict[int, R] = field(default_factory=dict)
    failures: dict[int, Exception] = field(default_factory=dict)
    # Indexes nobody judged: the search ended on a blameless error (`stopped_by`) first.
    untried: list[int] = field(default_factory=list)
    stopped_by: Exception | None = None

    @property
    def all_failed(self) -> bool:
        """Nothing succeeded: the cause is the batch's surroundings, not one person."""
        return not self.results


async def isolate(
    people: Sequence[Sequence[int]],
    attempt: Attempt[R],
    first_error: Exception,
    *,
    passthrough: tuple[type[BaseException], ...] = (),
    blameless: Callable[[Exception], bool] = lambda _: False,
) -> Isolated[R]:
    """Bisect `people` (lists of indexes) after the whole batch failed with `first_error`.

    `attempt(indexes)` delivers those items and returns a result per index, or raises.
    Errors of a type in `passthrough` are not any person's fault (a setup problem): they
    end the search and propagate. Errors `blameless` says are the surroundings' (the store
    unreachable) end it too, `first_error` included: the parts not judged yet are left
    `untried`, blamed on no one.
    """
    found: Isolated[R] = Isolated()

    async def walk(part: Sequence[Sequence[int]], error: Exception | None) -> None:
        indexes = [i for person in part for i in person]
        if found.stopped_by is not None:
            found.untried.extend(indexes)
            return
        if error is None:
            try:
                found.results.update(await attempt(indexes))
                return
            except passthrough:
                raise
            except Exception as failed:
                error = failed
        if blameless(error):
            found.stopped_by = error
            found.untried.extend(indexes)
            return
        if len(part) == 1:
            found.failures.update({i: error for i in part[0]})
            return
        middle = len(part) // 2
        await walk(part[:middle], None)
        await walk(part[middle:], None)

    await walk(people, first_error)
    return found


def last_line(error: BaseException) -> str:
    """The line a traceback ends with: the error's type and message."""
    return traceback.format_exception_only(error)[-1].strip()
