"""Whether deliveries can proceed, and if not, what the operator must do.

Four things can stop them: the setup (`fail`, with the worker's one-line reason), a worker
that fails or was restarted (`worker_failing`: the store unreachable, the disk full...), Pardot
not answering (`pardot_answered`), and a worker that stopped reporting (its heartbeat, `beat`,
older than `STALE_AFTER_SECONDS`). `/readyz` shows `reason`; it never
names a file (`without_paths`), since it may be reachable by anyone who can reach the port.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from entrypoints.faults import pardot_unreachable_line

STALE_AFTER_SECONDS = 60.0
# The door's last failed put names the store's fault this long, unless a put succeeds first.
STORE_FAULT_SECONDS = 30.0

# An absolute or home-relative path, not the path part of a URL (preceded by a host).
_PATH = re.compile(r"(?<![\w:/.~-])~?/[^\s'\"`,;()]+")


@dataclass
class Readiness:
    setup_problem: str = ""
    worker_problem: str = ""
    worker_seen: float | None = None  # the worker's last heartbeat; None: no worker here
    # The first call of the current run of calls that got no answer from Pardot.
    pardot_down_since: datetime | None = None
    store_problem: str = ""  # what the door's last failed put met (disk full, store unreachable)
    store_failed_at: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def ready(self) -> bool:
        return not self.reason

    @property
    def reason(self) -> str:
        """The first thing that stops deliveries, without file paths; empty when ready."""
        if self.setup_problem:
            return without_paths(self.setup_problem)
        if self.store_problem and self.clock() - self.store_failed_at < STORE_FAULT_SECONDS:
            return self.store_problem
        if self.worker_problem:
            return self.worker_problem
        if self.pardot_down_since is not None:
            return pardot_unreachable_line(self.pardot_down_since)
        if self.worker_seen is not None:
            silent = self.clock() - self.worker_seen
            if silent > STALE_AFTER_SECONDS:
                return f"the delivery worker has not reported for {silent:.0f} s"
        return ""

    def fail(self, reason: str) -> None:
        self.setup_problem = reason

    def clear(self) -> None:
        self.setup_problem = ""

    def beat(self) -> None:
        """The delivery worker is alive."""
        self.worker_seen = self.clock()

    def store_failed(self, fault: str | None) -> None:
        """The door could not store a put, for `fault` (None: it stored one, or no known fault)."""
        self.store_problem = fault or ""
        self.store_failed_at = self.clock()

    def pardot_answered(self, answered: bool) -> None:
        """A Pardot call ended: with Pardot's answer (even an error), or with none."""
        if answered:
            self.pardot_down_since = None
        elif self.pardot_down_since is None:
            self.pardot_down_since = datetime.now(UTC)

    def worker_failing(self, problem: str) -> None:
        """The worker fails or is being restarted ("" once it works again)."""
        self.worker_problem = problem


def without_paths(text: str) -> str:
    return _PATH.sub("<file>", text)
