"""Whether deliveries can proceed, and if not, what the operator must do.

Three things can stop them: the setup (`fail`, with the worker's one-line reason), a worker
that fails or was restarted (`worker_failing`), and a worker that stopped reporting (its
heartbeat, `beat`, older than `STALE_AFTER_SECONDS`). `/readyz` shows `reason`; it never
names a file (`without_paths`), since it may be reachable by anyone who can reach the port.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

STALE_AFTER_SECONDS = 60.0

# An absolute or home-relative path, not the path part of a URL (preceded by a host).
_PATH = re.compile(r"(?<![\w:/.~-])~?/[^\s'\"`,;()]+")


@dataclass
class Readiness:
    setup_problem: str = ""
    worker_problem: str = ""
    worker_seen: float | None = None  # the worker's last heartbeat; None: no worker here
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def ready(self) -> bool:
        return not self.reason

    @property
    def reason(self) -> str:
        """The first thing that stops deliveries, without file paths; empty when ready."""
        if self.setup_problem:
            return without_paths(self.setup_problem)
        if self.worker_problem:
            return self.worker_problem
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

    def worker_failing(self, problem: str) -> None:
        """The worker fails or is being restarted ("" once it works again)."""
        self.worker_problem = problem


def without_paths(text: str) -> str:
    return _PATH.sub("<file>", text)
