"""`POST /v1/notifications/preview`: render a receiver's message against a sample alert.

The notifier renders it (its receivers, its bounded template sandbox, its limit of
renders at once: 422 for a template over budget, 429 when busy); the gateway checks
the caller's token and the body, then forwards both to the notifier at
`TOCSIN_NOTIFIER_URL` and relays its answer. Nothing is sent to any receiver.

Body: `{"receiver_type": "slack", "templates": {"title": "..."}, "alert": {...},
"status": "firing"}`; only `receiver_type` is required, `alert` fields override
a built-in sample alert.

A notifier that does not answer within `TOCSIN_NOTIFIER_TIMEOUT` (or refuses the
connection) is a 503 problem; so is a gateway with no `TOCSIN_NOTIFIER_URL`.
"""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tocsin.common.preview import PREVIEW_PATH, read_preview
from tocsin.common.problems import problem
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["FORWARDS", "routes"]

# Previews forwarded at once; the notifier renders two at a time and answers 429 beyond.
FORWARDS = 8
# What of the notifier's answer the client gets besides the status and body.
_RELAYED_HEADERS = ("content-type", "retry-after")


def routes(context: ApiContext) -> list[BaseRoute]:
    notifier_url = context.settings.notifier_url.rstrip("/")
    http = httpx.AsyncClient(
        # Waiting for a free connection is short: beyond FORWARDS the client is told to retry.
        timeout=httpx.Timeout(context.settings.notifier_timeout, connect=2.0, pool=1.0),
        limits=httpx.Limits(max_connections=FORWARDS, max_keepalive_connections=FORWARDS),
    )
    context.resources.push_async_callback(http.aclose)

    async def preview(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        read = await read_preview(request)
        if isinstance(read, Response):
            return read
        if not notifier_url:
            return problem(
                503,
                "notifier-not-configured",
                "Preview unavailable",
                "previews are rendered by the notifier and TOCSIN_NOTIFIER_URL is not set",
            )
        try:
            answer = await http.post(
                notifier_url + PREVIEW_PATH,
                content=read[0],
                headers={
                    "authorization": request.headers.get("authorization", ""),
                    "content-type": "application/json",
                },
            )
        except httpx.PoolTimeout:
            return problem(
                429,
                "preview-busy",
                "Too many previews",
                f"{FORWARDS} previews are waiting for the notifier; retry in a second",
                headers={"Retry-After": "1"},
            )
        except httpx.HTTPError as exc:
            return problem(
                503,
                "notifier-unavailable",
                "Preview unavailable",
                f"the notifier at {notifier_url} did not answer: {type(exc).__name__}",
                headers={"Retry-After": "5"},
            )
        headers = {
            name: answer.headers[name] for name in _RELAYED_HEADERS if name in answer.headers
        }
        return Response(answer.content, status_code=answer.status_code, headers=headers)

    return [Route(PREVIEW_PATH, preview, methods=["POST"])]
