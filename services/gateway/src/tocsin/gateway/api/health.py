"""`GET /v1/health`: the last health score, with each component's value and contribution.

The score is computed every 15 s by the scheduler (`tocsin.scheduler.healthscore`) and
stored in Redis; this handler only reads it, so every gateway answers the same.
A report older than `STALE_AFTER_SECONDS` is still returned, flagged `stale`,
because an old score is itself a sign that the scheduler is not running.
"""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.common.health import load_report
from tocsin.common.problems import problem
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["STALE_AFTER_SECONDS", "routes"]

# Four missed computations in a row.
STALE_AFTER_SECONDS = 60.0


def routes(context: ApiContext) -> list[BaseRoute]:
    async def get_health(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        report = load_report(await context.redis.get(keys.HEALTH))
        if report is None:
            return problem(
                503,
                "health-unknown",
                "Health not computed yet",
                "no health score has been stored; the scheduler computes one every 15 s",
            )
        age = max(0.0, time.time() - float(report.get("computed_at", 0)))
        report["age_seconds"] = round(age, 3)
        report["stale"] = age > STALE_AFTER_SECONDS
        return Response(json.dumps(report), media_type="application/json")

    return [Route("/v1/health", get_health, methods=["GET"])]
