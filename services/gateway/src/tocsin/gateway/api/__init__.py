"""The dashboard API served by the gateway: reads, actions, silences and reports.

Each resource lives in its own module exposing `routes(context) -> list[BaseRoute]`;
`dashboard_routes` gathers them. Reads need a JWT with the `read` scope, actions
the `write` scope (see `context.authorize`). Actions are enqueued to the
processor, never written here.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from tocsin.gateway.api import (
    alerts,
    analytics,
    health,
    notifications,
    patterns,
    predictions,
    schedules,
    silences,
    stats,
)
from tocsin.gateway.api.context import ApiContext

__all__ = ["ApiContext", "dashboard_routes"]


def dashboard_routes(context: ApiContext) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    # Resource modules register here, one line each.
    routes += alerts.routes(context)
    routes += silences.routes(context)
    routes += stats.routes(context)
    routes += health.routes(context)
    routes += schedules.routes(context)
    routes += predictions.routes(context)
    routes += analytics.routes(context)
    routes += patterns.routes(context)
    routes += notifications.routes(context)
    return routes
