"""`GET /v1/analytics/daily?date=YYYY-MM-DD`: one UTC day's analytics, as the scheduler stored it.

Without `date`, yesterday (UTC), the last complete day. A day not computed
yet is a 404 `analytics-not-found`; a malformed date a 400 `invalid-date`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.common.problems import problem
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["routes"]


def routes(context: ApiContext) -> list[BaseRoute]:
    async def daily(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        raw_date = request.query_params.get("date", "")
        try:
            day = (
                date.fromisoformat(raw_date)
                if raw_date
                else datetime.now(UTC).date() - timedelta(days=1)
            )
        except ValueError:
            return problem(400, "invalid-date", "Invalid date", "`date` is YYYY-MM-DD (UTC)")
        stored = await context.redis.get(keys.analytics_daily(day.isoformat()))
        if stored is None:
            return problem(
                404,
                "analytics-not-found",
                "No analytics for this day",
                f"no daily analytics stored for {day.isoformat()}; the scheduler computes "
                "each day shortly after it ends",
            )
        return Response(stored, media_type="application/json")

    return [Route("/v1/analytics/daily", daily, methods=["GET"])]
