"""`/v1/alerts`: list and read stored alerts (cached), and enqueue user actions on them.

Listing reads the processor's indexes (`tocsin:idx:*`), filters by status,
severity, service, team, label matchers and a time range on the last change,
and pages with an opaque cursor. Pages are served through the read-through
cache under the `alerts` tag, which the processor's script increments on every
change. The cache holds a page's ids; its records are read fresh by one script
(`alerts/records.lua`) that returns them joined; each is shown as the request's
view asks (a summary by default, see `alert_views`). Actions (ack, unack, resolve) are
`AlertAction` messages for the processor's `apply_action`; the gateway never
writes alert state.

Over 400 lines: listing (query parsing, cursor, cache, views) and the actions are
the one `/v1/alerts` resource; the query parser, most of the module, is only its own.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Annotated, Any

import msgspec
import redis.asyncio as redis_async
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.cache import ReadThroughCache, normalised_query
from tocsin.common.errors import InvalidInputError
from tocsin.common.httplimits import read_request_body
from tocsin.common.models import AlertAction
from tocsin.common.pipelining import PipelinedScript
from tocsin.common.problems import problem
from tocsin.common.silences import Matcher
from tocsin.gateway.api.alert_views import (
    FIELDS_PARAMETER,
    AlertView,
    parse_fields,
    render_records,
)
from tocsin.gateway.api.context import ApiContext, Unauthorized

__all__ = [
    "MAX_ACTION_BYTES",
    "ActionBody",
    "AlertQuery",
    "CachedPage",
    "InvalidQueryError",
    "list_alert_ids",
    "parse_query",
    "routes",
]

ALERTS_TAG = "alerts"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# An action's body is a comment of at most 4,096 characters: at most 49,152
# bytes when written as escaped surrogate pairs, with room for the JSON around it.
MAX_ACTION_BYTES = 64 * 1024
STATUSES = ("firing", "acknowledged", "resolved")
SEVERITIES = ("critical", "error", "warning", "info")
_RECORDS_LUA = resources.files("tocsin.gateway.api").joinpath("alerts/records.lua").read_text()
_MATCHER = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>=~|!~|!=|=)(?P<value>.*)$")


class InvalidQueryError(InvalidInputError, ValueError):
    """A query parameter that cannot be understood."""


@dataclass(frozen=True)
class AlertQuery:
    """A normalised `GET /v1/alerts` query."""

    filters: tuple[tuple[str, tuple[str, ...]], ...]
    matchers: tuple[Matcher, ...]
    since: float | None
    until: float | None
    newest_first: bool
    limit: int
    cursor: tuple[float, str] | None


def _time(raw: str, name: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        # `nan` and `inf` parse as floats but are no instant (and Redis refuses a NaN bound).
        if not math.isfinite(seconds):
            raise InvalidQueryError(f"{name}: expected a finite number of epoch seconds")
        return seconds
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        raise InvalidQueryError(f"{name}: expected RFC 3339 or epoch seconds") from None


def _values(request_params: Any, name: str) -> tuple[str, ...]:
    values: list[str] = []
    for raw in request_params.getlist(name):
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    return tuple(sorted(set(values)))


def encode_cursor(score: float, alert_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}|{alert_id}".encode()).decode()


def _decode_cursor(raw: str) -> tuple[float, str]:
    try:
        score, _, alert_id = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
        position = float(score)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidQueryError("cursor: not a cursor this API returned") from None
    if not math.isfinite(position) or not alert_id:
        raise InvalidQueryError("cursor: not a cursor this API returned")
    return position, alert_id


def parse_query(params: Any) -> AlertQuery:
    """Validate and normalise query parameters (a Starlette `QueryParams`)."""
    filters: list[tuple[str, tuple[str, ...]]] = []
    for dimension, allowed in (
        ("status", STATUSES),
        ("severity", SEVERITIES),
        ("service", None),
        ("team", None),
    ):
        values = _values(params, dimension)
        if allowed is not None:
            unknown = [value for value in values if value not in allowed]
            if unknown:
                raise InvalidQueryError(f"{dimension}: unknown value(s) {', '.join(unknown)}")
        if values:
            filters.append((dimension, values))
    matchers: list[Matcher] = []
    for raw in params.getlist("label"):
        match = _MATCHER.match(raw)
        if match is None:
            raise InvalidQueryError(f"label: expected name(=|!=|=~|!~)value, got {raw!r}")
        op = match["op"]
        matcher = Matcher(
            name=match["name"], value=match["value"], isRegex="~" in op, isEqual=op[0] == "="
        )
        try:
            matcher.check()
        except ValueError as exc:
            raise InvalidQueryError(f"label: {exc}") from None
        matchers.append(matcher)
    sort = params.get("sort", "-updated")
    if sort not in ("-updated", "updated"):
        raise InvalidQueryError("sort: expected updated or -updated")
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise InvalidQueryError("limit: expected an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError(f"limit: expected 1..{MAX_LIMIT}")
    since = _time(params["since"], "since") if "since" in params else None
    until = _time(params["until"], "until") if "until" in params else None
    cursor = _decode_cursor(params["cursor"]) if params.get("cursor") else None
    return AlertQuery(
        tuple(filters), tuple(matchers), since, until, sort == "-updated", limit, cursor
    )


def _pairs(raw: Any) -> list[tuple[str, float]]:
    """Decode a `WITHSCORES` reply."""
    return [(member.decode(), float(score)) for member, score in raw]


def _single_index(query: AlertQuery) -> str | None:
    """The one sorted set that answers `query` alone, if there is one."""
    if not query.filters:
        return keys.alert_index()
    if len(query.filters) == 1 and len(query.filters[0][1]) == 1:
        dimension, (value,) = query.filters[0]
        return keys.alert_index(dimension, value)
    return None


async def _candidates(redis: redis_async.Redis, query: AlertQuery) -> list[tuple[str, float]]:
    """Alert ids with last-change scores passing the index filters and time range, in order."""
    found: dict[str, float] | None = None
    for dimension, values in query.filters:
        index_keys = [keys.alert_index(dimension, value) for value in values]
        scored = dict(_pairs(await redis.zunion(index_keys, withscores=True)))
        found = scored if found is None else {k: v for k, v in found.items() if k in scored}
    if found is None:
        found = dict(_pairs(await redis.zrange(keys.alert_index(), 0, -1, withscores=True)))
    kept = [
        (alert_id, score)
        for alert_id, score in found.items()
        if (query.since is None or score >= query.since)
        and (query.until is None or score <= query.until)
    ]
    kept.sort(key=lambda item: (item[1], item[0]), reverse=query.newest_first)
    return kept


async def _indexed_page(
    redis: redis_async.Redis, index: str, query: AlertQuery
) -> tuple[list[tuple[str, float]], int | None]:
    """One page straight from a sorted set: O(log n + page), no scan of the index."""
    low: float | str = "-inf" if query.since is None else query.since
    high: float | str = "+inf" if query.until is None else query.until
    ties = 0
    if query.cursor is not None:
        # Resume at the cursor's score, inclusive; members sharing it are skipped below.
        if query.newest_first:
            high = query.cursor[0]
        else:
            low = query.cursor[0]
        ties = await redis.zcount(index, query.cursor[0], query.cursor[0])
    take = query.limit + 1 + ties
    # The page and (on the first page) the total in one round trip.
    pipe = redis.pipeline(transaction=False)
    if query.newest_first:
        pipe.zrevrangebyscore(index, high, low, start=0, num=take, withscores=True)
    else:
        pipe.zrangebyscore(index, low, high, start=0, num=take, withscores=True)
    if query.cursor is None:
        pipe.zcount(index, low, high)
    replies = await pipe.execute()
    items = _pairs(replies[0])
    if query.cursor is not None:
        position = (query.cursor[0], query.cursor[1])
        if query.newest_first:
            items = [(i, s) for i, s in items if (s, i) < position]
        else:
            items = [(i, s) for i, s in items if (s, i) > position]
    total = int(replies[1]) if query.cursor is None else None
    return items, total


async def list_alert_ids(redis: redis_async.Redis, query: AlertQuery) -> dict[str, Any]:
    """One page of alert ids for `query`, with the total (first page) and the next page's cursor.

    A query one index answers reads no record: the records are read fresh
    whenever the page is served. Label matchers are checked on the records, in
    order, until the page is full.
    """
    index = _single_index(query)
    if index is not None and not query.matchers:
        items, total = await _indexed_page(redis, index, query)
        return _page_of(items, total, query.limit)
    ordered = await _candidates(redis, query)
    if query.cursor is not None:
        position = query.cursor
        if query.newest_first:
            ordered = [(i, s) for i, s in ordered if (s, i) < position]
        else:
            ordered = [(i, s) for i, s in ordered if (s, i) > position]
    total = len(ordered) if query.cursor is None and not query.matchers else None
    if not query.matchers:
        return _page_of(ordered[: query.limit + 1], total, query.limit)
    page: list[tuple[str, float]] = []
    for start in range(0, len(ordered), 500):
        part = ordered[start : start + 500]
        raw = await redis.mget([keys.alert(alert_id) for alert_id, _ in part])
        for item, body in zip(part, raw, strict=True):
            if body is None:
                continue
            record = json.loads(body)
            labels = {"alertname": record["name"], **record["labels"]}
            if all(matcher.matches(labels) for matcher in query.matchers):
                page.append(item)
        if len(page) > query.limit:
            break
    return _page_of(page, total, query.limit)


def _page_of(items: list[tuple[str, float]], total: int | None, limit: int) -> dict[str, Any]:
    """The page of the first `limit` of `items`; a cursor when there is one more."""
    next_cursor = None
    if len(items) > limit:
        items = items[:limit]
        last_id, score = items[-1]
        next_cursor = encode_cursor(score, last_id)
    ids = [alert_id for alert_id, _ in items]
    return {"alerts": ids, "total": total, "next_cursor": next_cursor}


async def alert_with_timeline(redis: redis_async.Redis, alert_id: str) -> dict[str, Any] | None:
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.alert(alert_id))
    pipe.lrange(keys.timeline(alert_id), 0, -1)
    pipe.lrange(keys.notification_log(alert_id), 0, -1)
    pipe.get(keys.prediction(alert_id))
    body, timeline, notifications, prediction = await pipe.execute()
    if body is None:
        return None
    record: dict[str, Any] = json.loads(body)
    record["timeline"] = [json.loads(entry) for entry in timeline]
    record["notifications"] = [json.loads(entry) for entry in notifications]
    # Written by the scheduler's prediction actor (docs/prediction.md); null until then.
    record["prediction"] = json.loads(prediction) if prediction else None
    return record


@dataclass(frozen=True, slots=True)
class CachedPage:
    """A cached page as the list endpoint serves it: its ids and the rest, encoded."""

    ids: bytes  # a JSON array, or b"" for an empty page
    rest: bytes  # the members after "alerts", and the closing brace

    @classmethod
    def decode(cls, cached: bytes) -> CachedPage:
        page = json.loads(cached)
        ids: list[str] = page.pop("alerts")
        return cls(json.dumps(ids).encode() if ids else b"", json.dumps(page).encode()[1:])


@functools.lru_cache(maxsize=1024)
def _understood(query_string: bytes) -> tuple[AlertQuery, str, AlertView]:
    """The parsed query, its cache key and the view asked for, for a raw query string.

    Dashboards repeat their query strings. The view is not part of the key: the
    cache holds ids, which are the same whatever each alert shows.
    """
    params = QueryParams(query_string)
    query = parse_query(params)
    view = parse_fields(params.get(FIELDS_PARAMETER))
    chosen = {name: params.getlist(name) for name in params if name != FIELDS_PARAMETER}
    return query, normalised_query(chosen), view


class ActionBody(msgspec.Struct, forbid_unknown_fields=True):
    """The optional body of ack, unack and resolve: why, for the timeline."""

    comment: Annotated[str, msgspec.Meta(max_length=4096)] = ""


def _guard(
    context: ApiContext, scope: str
) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    def wrap(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                request.state.claims = context.authorize(request, scope)
            except Unauthorized as refused:
                return refused.response
            return await handler(request)

        return guarded

    return wrap


def routes(context: ApiContext) -> list[BaseRoute]:
    cache = ReadThroughCache(
        context.redis,
        "alerts",
        context.settings.api_cache_ttl_seconds,
        decode=CachedPage.decode,
        lookups=context.pipelined,
    )
    read_records = PipelinedScript(context.pipelined, _RECORDS_LUA, fallback=context.redis)
    record_prefix = keys.alert_prefix()

    @_guard(context, "read")
    async def list_endpoint(request: Request) -> Response:
        try:
            query, normalised, view = _understood(request.scope["query_string"])
        except InvalidInputError as exc:  # the query or its `fields`
            return problem(400, "invalid-query", "Invalid query", str(exc))

        async def load() -> bytes:
            return json.dumps(await list_alert_ids(context.redis, query)).encode()

        # The cache holds the page's ids (the costly part: filters, order,
        # total); the records are read fresh, so a duplicate's new count and
        # last_seen need no invalidation. Only transitions increment the tag.
        page, hit = await cache.get(normalised, [ALERTS_TAG], load)
        # Stored records are JSON already: joined by the script, then shown as
        # the view asks (a summary unless told otherwise).
        records = (
            bytes(await read_records(args=[record_prefix, page.ids, keys.TAG_LENGTH]))
            if page.ids
            else b""
        )
        records = render_records(records, view)
        return Response(
            b'{"alerts":[' + records + b"]," + page.rest,
            media_type="application/json",
            headers={"x-cache": "hit" if hit else "miss"},
        )

    @_guard(context, "read")
    async def get_endpoint(request: Request) -> Response:
        alert_id = request.path_params["alert_id"]
        record = await alert_with_timeline(context.redis, alert_id)
        if record is None:
            return problem(404, "alert-not-found", "Not found", f"no alert {alert_id}")
        return JSONResponse(record)

    def action_endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
        @_guard(context, "write")
        async def endpoint(request: Request) -> Response:
            alert_id = request.path_params["alert_id"]
            raw = await read_request_body(request, MAX_ACTION_BYTES, "an action body")
            if isinstance(raw, Response):
                return raw
            try:
                body = msgspec.json.decode(raw, type=ActionBody) if raw.strip() else ActionBody()
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                # msgspec reports invalid UTF-8 inside a JSON string as UnicodeDecodeError.
                return problem(400, "invalid-body", "Invalid body", str(exc))
            if not await context.redis.exists(keys.alert(alert_id)):
                return problem(404, "alert-not-found", "Not found", f"no alert {alert_id}")
            action = AlertAction(
                id=uuid.uuid4().hex,
                action=kind,  # type: ignore[arg-type]
                alert_id=alert_id,
                by=request.state.claims.subject,
                comment=body.comment,
                at=time.time(),
            )
            context.broker.enqueue(
                queues.build_message(
                    queues.ALERTS_QUEUE,
                    queues.APPLY_ACTION_ACTOR,
                    (msgspec.to_builtins(action),),
                )
            )
            return JSONResponse(
                {"action_id": action.id, "action": kind, "alert_id": alert_id}, status_code=202
            )

        return endpoint

    return [
        Route("/v1/alerts", list_endpoint, methods=["GET"]),
        Route("/v1/alerts/{alert_id}", get_endpoint, methods=["GET"]),
        Route("/v1/alerts/{alert_id}/ack", action_endpoint("acknowledge"), methods=["POST"]),
        Route("/v1/alerts/{alert_id}/unack", action_endpoint("unacknowledge"), methods=["POST"]),
        Route("/v1/alerts/{alert_id}/resolve", action_endpoint("resolve"), methods=["POST"]),
    ]
