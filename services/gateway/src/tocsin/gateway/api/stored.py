"""A read-only endpoint serving one JSON document a scheduler job stores in Redis.

The patterns and volume-forecast endpoints are this shape: authorize for `read`,
answer the stored document as it is, or a fixed "not computed yet" document
before the job's first run.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["stored_document_route"]


def stored_document_route(
    context: ApiContext, path: str, key: Callable[[], str], not_yet: str
) -> Route:
    """`GET path`: the JSON stored under `key()`, or `not_yet` while there is none."""

    async def stored_document(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        stored = await context.redis.get(key())
        return Response(stored or not_yet, media_type="application/json")

    return Route(path, stored_document, methods=["GET"])
