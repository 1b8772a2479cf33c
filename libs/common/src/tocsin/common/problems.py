"""RFC 9457 problem details (`application/problem+json`) with stable types."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from starlette.responses import Response

from tocsin.common.models import FieldError

__all__ = ["PROBLEM_BASE", "FieldErrorDetail", "ProblemDetails", "problem"]

PROBLEM_BASE = "https://tocsin.dev/problems/"
_encoder = msgspec.json.Encoder()


class FieldErrorDetail(msgspec.Struct):
    """One refused field: its JSON path and why."""

    path: str
    reason: str


class ProblemDetails(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem (`application/problem+json`); `type` is stable per error kind.

    What `problem` answers, as the OpenAPI documents describe it.
    """

    type: str
    title: str
    status: int
    detail: str = ""
    errors: list[FieldErrorDetail] = msgspec.field(default_factory=list)


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str = "",
    errors: Sequence[FieldError] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response whose `type` is `PROBLEM_BASE + kind`."""
    body: dict[str, object] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = [{"path": e.path, "reason": e.reason} for e in errors]
    return Response(
        _encoder.encode(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )
