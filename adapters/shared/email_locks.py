"""In-process locks per name (an email, `prospect:<key>`, `lookup:<field>=<value>`): waiters
of one process queue here, not on the shared store.

A lock is forgotten when nobody holds or waits for it, so a long-running process does not
keep one per email it ever saw. Names compare without case or surrounding blanks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class EmailLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    @staticmethod
    def key(email: str) -> str:
        """Emails compare without case or surrounding blanks."""
        return email.strip().lower()

    @contextlib.asynccontextmanager
    async def hold(self, email: str) -> AsyncIterator[str]:
        """Hold the lock of `email`; yields its key."""
        key = self.key(email)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                yield key
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key], self._locks[key]

    @contextlib.asynccontextmanager
    async def hold_all(self, names: Iterable[str]) -> AsyncIterator[list[str]]:
        """Hold the lock of every name, taken in sorted order so that two holders of
        overlapping sets cannot wait for each other; yields their keys, sorted."""
        keys = sorted({self.key(name) for name in names})
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                await stack.enter_async_context(self.hold(key))
            yield keys
