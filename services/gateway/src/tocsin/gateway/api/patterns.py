"""`GET /v1/patterns`: the latest pattern findings (flapping, storms, noisy sources, recurring).

Stored by the scheduler's pattern detection job every few minutes. Before its
first run the lists are empty and `detected_at` is null.
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
    {"detected_at": None, "flapping": [], "storms": [], "noisy_sources": [], "recurring": []}
)


def routes(context: ApiContext) -> list[BaseRoute]:
    async def latest(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        stored = await context.redis.get(keys.pattern_findings())
        return Response(stored or _NOT_YET, media_type="application/json")

    return [Route("/v1/patterns", latest, methods=["GET"])]
