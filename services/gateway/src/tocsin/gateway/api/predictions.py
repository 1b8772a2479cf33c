"""`GET /v1/predictions/volume`: the latest hourly alert-volume forecast per service.

Stored by the scheduler's `volume_forecast` job each hour (docs/prediction.md).
Before its first run `forecast_at` is null and the lists are empty. Incident
predictions are served inside `GET /v1/alerts/{id}` as `prediction`.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["routes"]

_NOT_YET = json.dumps(
    {"forecast_at": None, "interval": None, "services": [], "storms": [], "skipped": {}}
)


def routes(context: ApiContext) -> list[BaseRoute]:
    async def volume(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        stored = await context.redis.get(keys.prediction_volume())
        return Response(stored or _NOT_YET, media_type="application/json")

    return [Route("/v1/predictions/volume", volume, methods=["GET"])]
