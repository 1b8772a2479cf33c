"""`POST /v1/notifications/preview`: render a receiver's message against a sample alert.

The rendering is the notifier's own (sandboxed Jinja2, the same defaults), reached
through the `tocsin.notifier` entry point group so the gateway imports no other
service. Nothing is sent.

Body: `{"receiver_type": "slack", "templates": {"title": "..."}, "alert": {...},
"status": "firing"}`; only `receiver_type` is required, `alert` fields override
a built-in sample alert.

Each render is bounded (the notifier's `BoundedSandbox`: sizes, operators, 1 s
of CPU); at most `CONCURRENT_RENDERS` run at once, each in a worker thread, and
a preview beyond that is a 429, so previews cannot take the GIL from the event
loop for long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tocsin.common.models import FieldError
from tocsin.common.problems import problem
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["CONCURRENT_RENDERS", "PreviewRequest", "routes"]

CONCURRENT_RENDERS = 2


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to render: a receiver type, optional template overrides and alert fields."""

    receiver_type: str
    templates: dict[str, str] = msgspec.field(default_factory=dict)
    alert: dict[str, Any] = msgspec.field(default_factory=dict)
    status: str = "firing"


@cache
def _renderer() -> Callable[..., dict[str, Any]] | None:
    for entry in entry_points(group="tocsin.notifier"):
        if entry.name == "preview":
            loaded: Callable[..., dict[str, Any]] = entry.load()
            return loaded
    return None


def routes(context: ApiContext) -> list[BaseRoute]:
    rendering = asyncio.Semaphore(CONCURRENT_RENDERS)

    async def preview(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        try:
            body = msgspec.json.decode(await request.body(), type=PreviewRequest)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return problem(
                400, "invalid-body", "Invalid request body", errors=[FieldError("$", str(exc))]
            )
        render = _renderer()
        if render is None:
            return problem(
                501,
                "notifier-not-installed",
                "Preview unavailable",
                "the notifier is not installed beside this gateway",
            )
        if rendering.locked():
            return problem(
                429,
                "preview-busy",
                "Too many previews",
                f"{CONCURRENT_RENDERS} previews are rendering; retry in a second",
                headers={"Retry-After": "1"},
            )
        try:
            async with rendering:
                # Template rendering is CPU work; keep it off the event loop.
                rendered = await asyncio.to_thread(
                    render, body.receiver_type, body.templates, body.alert, body.status
                )
        except ValueError as exc:
            return problem(
                422,
                "invalid-template",
                "The template does not render",
                errors=[FieldError("$", str(exc))],
            )
        return JSONResponse({"receiver_type": body.receiver_type, "rendered": rendered})

    return [Route("/v1/notifications/preview", preview, methods=["POST"])]
