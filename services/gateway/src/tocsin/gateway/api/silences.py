"""`/v1/silences`: create, list and expire silences (Alertmanager's shape).

Silences are configuration, not alert state: the gateway writes them
(`tocsin:silence:all`) and increments `tocsin:silence:version` in the same
transaction, which tells the processors to reload them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tocsin.common import keys
from tocsin.common.httplimits import read_request_body
from tocsin.common.models import FieldError, rfc3339
from tocsin.common.problems import problem
from tocsin.common.silences import Silence, SilenceIn, silence_state
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = ["MAX_SILENCE_BYTES", "routes", "silence_view"]

# Every silence `SilenceIn` accepts fits, however its JSON is encoded: at most
# 64 x (128 + 1024) + 4096 + 256 characters (about 78,000), each at most 12
# bytes when written as an escaped surrogate pair (about 941,000 bytes).
MAX_SILENCE_BYTES = 1024 * 1024

SILENCE_STATES = ("pending", "active", "expired")
_decoder = msgspec.json.Decoder(Silence)
_encoder = msgspec.json.Encoder()


def silence_view(silence: Silence, now: float) -> dict[str, Any]:
    """A silence as the API shows it, with its state at `now`."""
    view: dict[str, Any] = msgspec.to_builtins(silence)
    del view["starts_ts"], view["ends_ts"]
    view["status"] = {"state": silence_state(silence, now)}
    return view


def routes(context: ApiContext) -> list[BaseRoute]:
    async def save(silence: Silence) -> None:
        pipe = context.redis.pipeline(transaction=True)
        pipe.hset(keys.silences(), silence.id, _encoder.encode(silence))
        pipe.incr(keys.silences_version())
        await pipe.execute()

    async def list_silences(request: Request) -> Response:
        try:
            context.authorize(request, "read")
        except Unauthorized as refused:
            return refused.response
        wanted = request.query_params.get("state")
        if wanted is not None and wanted not in SILENCE_STATES:
            return problem(
                400,
                "invalid-query",
                "Invalid query",
                f"state: expected one of {', '.join(SILENCE_STATES)}",
            )
        raw: dict[bytes, bytes] = await context.redis.hgetall(keys.silences())  # type: ignore[assignment]
        now = time.time()
        views = [silence_view(_decoder.decode(body), now) for body in raw.values()]
        if wanted:
            views = [view for view in views if view["status"]["state"] == wanted]
        views.sort(key=lambda view: (view["endsAt"], view["id"]), reverse=True)
        return JSONResponse(views)

    async def create_silence(request: Request) -> Response:
        try:
            claims = context.authorize(request, "write")
        except Unauthorized as refused:
            return refused.response
        raw = await read_request_body(request, MAX_SILENCE_BYTES, "a silence")
        if isinstance(raw, Response):
            return raw
        try:
            body = msgspec.json.decode(raw, type=SilenceIn)
            for matcher in body.matchers:
                matcher.check()
        except (msgspec.DecodeError, ValueError) as exc:
            return problem(
                400, "invalid-silence", "Invalid silence", errors=[FieldError("$", str(exc))]
            )
        starts, ends = body.startsAt.timestamp(), body.endsAt.timestamp()
        if ends <= starts:
            return problem(
                400, "invalid-silence", "Invalid silence", "endsAt must be after startsAt"
            )
        now = time.time()
        silence = Silence(
            id=uuid.uuid4().hex,
            matchers=body.matchers,
            startsAt=rfc3339(starts),
            endsAt=rfc3339(ends),
            starts_ts=starts,
            ends_ts=ends,
            createdBy=body.createdBy or claims.subject,
            comment=body.comment,
            updatedAt=rfc3339(now),
        )
        await save(silence)
        return JSONResponse(
            {"silenceID": silence.id, **silence_view(silence, now)}, status_code=201
        )

    async def expire_silence(request: Request) -> Response:
        try:
            context.authorize(request, "write")
        except Unauthorized as refused:
            return refused.response
        silence_id = request.path_params["silence_id"]
        raw = await context.redis.hget(keys.silences(), silence_id)
        if raw is None:
            return problem(404, "silence-not-found", "Not found", f"no silence {silence_id}")
        silence = _decoder.decode(raw)
        now = time.time()
        if silence.ends_ts > now:
            # Expiring ends it now; a pending silence ends before it started.
            silence.ends_ts = now
            silence.starts_ts = min(silence.starts_ts, now)
            silence.endsAt = rfc3339(now)
            silence.startsAt = rfc3339(silence.starts_ts)
            silence.updatedAt = rfc3339(now)
            await save(silence)
        return JSONResponse(silence_view(silence, now))

    return [
        Route("/v1/silences", list_silences, methods=["GET"]),
        Route("/v1/silences", create_silence, methods=["POST"]),
        Route("/v1/silences/{silence_id}", expire_silence, methods=["DELETE"]),
    ]
