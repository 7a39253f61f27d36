"""`serve`'s whole web app: the door (`app.create_app`), the tracking script and the status
page, on one aiohttp application."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from domain.ports import EventQueue
from entrypoints.config import TrackingConfig
from entrypoints.http.admin_forget import add_forget_route
from entrypoints.http.app import create_app
from entrypoints.http.status_page import add_status_routes
from entrypoints.http.suppressed import SUPPRESSION
from entrypoints.http.tracking import add_tracking_routes
from entrypoints.operator.forget import ForgetSources
from entrypoints.operator.status import StatusSources
from entrypoints.suppression import SuppressionGate


def serve_app(
    queue: EventQueue,
    *,
    tracking: TrackingConfig,
    status_sources: StatusSources,
    admin_key: str,
    forgetting: ForgetSources | None = None,
    suppression: SuppressionGate | None = None,
    **door: Any,
) -> web.Application:
    """`door` are `create_app`'s own options; `suppression` turns the door's check of the
    suppression list on, `forgetting` adds /admin/forget."""
    app = create_app(queue, **door)
    add_tracking_routes(app, tracking)
    add_status_routes(app, status_sources, admin_key=admin_key)
    if suppression is not None:
        app[SUPPRESSION] = suppression
    if forgetting is not None:
        add_forget_route(app, forgetting)
    return app
