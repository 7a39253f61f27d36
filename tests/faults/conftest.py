"""The fault tests run the real service (tests/service's stacks) against real faults."""

from tests.service.conftest import v3_stack, v4_stack

__all__ = ["v3_stack", "v4_stack"]
