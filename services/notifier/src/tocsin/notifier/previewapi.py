"""`POST /v1/notifications/preview` on the notifier's HTTP server: render a receiver's
message against a sample alert, sending nothing.

The gateway serves the endpoint to clients and forwards it here (`TOCSIN_NOTIFIER_URL`),
since the receivers and their bounded template sandbox are the notifier's. This port
is not an open door: the caller's bearer token, which the gateway forwards as it came,
is verified again with the same check and scope (`read`) as the gateway's, so the
notifier needs the same JWT settings and no secret of its own.

Each render is bounded (`BoundedSandbox`: sizes, operators, 1 s of CPU); at most
`CONCURRENT_RENDERS` run at once, each in a worker thread, and a preview beyond that
is a 429, so previews cannot hold the GIL from the send threads for long.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tocsin.common.auth import TokenVerifier
from tocsin.common.bearer import check_bearer
from tocsin.common.models import FieldError
from tocsin.common.preview import PREVIEW_PATH, read_preview
from tocsin.common.problems import problem
from tocsin.notifier.tools import preview

__all__ = ["CONCURRENT_RENDERS", "preview_routes"]

CONCURRENT_RENDERS = 2


def preview_routes(verifier: TokenVerifier | None) -> list[Route]:
    """The preview endpoint, for the notifier's ops app.

    Without a `verifier` (no JWT key configured) every preview is a 503: the notifier
    still delivers, but renders for nobody it cannot identify.
    """
    rendering = asyncio.Semaphore(CONCURRENT_RENDERS)

    async def render(request: Request) -> Response:
        if verifier is None:
            return problem(
                503,
                "preview-unavailable",
                "Preview unavailable",
                "this notifier has no TOCSIN_JWT_SECRET or TOCSIN_JWT_PUBLIC_KEY to check "
                "the caller's token with",
            )
        checked = check_bearer(verifier, request, "read")
        if isinstance(checked, Response):
            return checked
        read = await read_preview(request)
        if isinstance(read, Response):
            return read
        _, body = read
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
                    preview, body.receiver_type, body.templates, body.alert, body.status
                )
        except ValueError as exc:
            return problem(
                422,
                "invalid-template",
                "The template does not render",
                errors=[FieldError("$", str(exc))],
            )
        return JSONResponse({"receiver_type": body.receiver_type, "rendered": rendered})

    return [Route(PREVIEW_PATH, render, methods=["POST"])]
