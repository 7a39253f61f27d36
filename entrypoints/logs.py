"""Logging, configured once for the process: structlog in front of the standard library.

Every record, ours (structlog) or a library's (standard `logging`), leaves as one line on
stderr: JSON when stderr is not a terminal (a process manager, a container, a file), and
`key=value` pairs when a person watches it. At INFO the service logs ids, outcomes and error
codes only; reasons that name an email or a trait value are DEBUG (see the worker).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_configured = False


def configure_logging(level: str = "info", *, stream: TextIO | None = None) -> None:
    """Route every logger through one structlog formatter; later calls only change the level."""
    global _configured
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # httpx logs every request URL at INFO; URLs carry emails, so keep them at DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if _configured:
        return
    _configured = True
    out = stream if stream is not None else sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.KeyValueRenderer(
            key_order=["timestamp", "level", "logger", "event"], drop_missing=True
        )
        if out.isatty()
        else structlog.processors.JSONRenderer()
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root.handlers = [handler]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
