"""The template preview's request, as the gateway takes it and the notifier renders it.

`POST /v1/notifications/preview` is served by the gateway to clients and forwarded
to the notifier, which owns the receivers and the bounded template sandbox. Both
read the body through `read_preview`, so both refuse the same things the same way:
more than `MAX_PREVIEW_BYTES` (413) or not a `PreviewRequest` (400).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tocsin.common.httplimits import read_request_body
from tocsin.common.models import FieldError
from tocsin.common.problems import problem

__all__ = ["MAX_PREVIEW_BYTES", "PREVIEW_PATH", "PreviewRequest", "read_preview"]

PREVIEW_PATH = "/v1/notifications/preview"
# Templates and a sample alert: a few KiB in practice; the sandbox bounds what they render.
MAX_PREVIEW_BYTES = 256 * 1024


class PreviewRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to render: a receiver type, optional template overrides and alert fields."""

    receiver_type: str
    templates: dict[str, str] = msgspec.field(default_factory=dict)
    alert: dict[str, Any] = msgspec.field(default_factory=dict)
    status: str = "firing"


async def read_preview(request: Request) -> tuple[bytes, PreviewRequest] | Response:
    """The body and what it asks for, or the 413/400 problem that refuses it."""
    body = await read_request_body(request, MAX_PREVIEW_BYTES, "a preview request")
    if isinstance(body, Response):
        return body
    try:
        return body, msgspec.json.decode(body, type=PreviewRequest)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return problem(
            400, "invalid-body", "Invalid request body", errors=[FieldError("$", str(exc))]
        )
