"""`GET /v1/schedules`: every configured schedule with its last and next run and last outcome.

The scheduler replicas publish their schedules (`tocsin:sched:catalog`) and
keep each one's state (`tocsin:sched:state:{name}`); this handler only reads them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["routes", "schedule_view"]


def _when(raw: bytes | None) -> str | None:
    if not raw:
        return None
    return datetime.fromtimestamp(int(raw), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None


def schedule_view(definition: dict[str, Any], state: dict[bytes, bytes]) -> dict[str, Any]:
    """One schedule as the API shows it."""
    duration = state.get(b"last_duration_ms")
    return {
        **definition,
        "last_fire_at": _when(state.get(b"last_run_fire")),
        "next_fire_at": _when(state.get(b"next_fire")),
        "last_run_id": _text(state.get(b"last_run_id")),
        "last_outcome": _text(state.get(b"last_outcome")),
        "last_finished_run_id": _text(state.get(b"last_finished_run_id")),
        "last_duration_ms": float(duration) if duration else None,
        "last_error": _text(state.get(b"last_error")),
        "last_skipped_at": _when(state.get(b"last_skipped")),
    }


def routes(context: ApiContext) -> list[BaseRoute]:
    async def list_schedules(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        catalog: dict[Any, Any] = await context.redis.hgetall(keys.schedule_catalog())
        names = sorted(catalog)
        pipe = context.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.schedule_state(name.decode()))
        states: list[dict[bytes, bytes]] = await pipe.execute()
        schedules = [
            schedule_view(json.loads(catalog[name]), state)
            for name, state in zip(names, states, strict=True)
        ]
        return JSONResponse({"schedules": schedules})

    return [Route("/v1/schedules", list_schedules, methods=["GET"])]
