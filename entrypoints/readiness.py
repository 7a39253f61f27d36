"""Whether deliveries can proceed, and if not, what the operator must do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Readiness:
    reason: str = ""

    @property
    def ready(self) -> bool:
        return not self.reason

    def fail(self, reason: str) -> None:
        self.reason = reason

    def clear(self) -> None:
        self.reason = ""
