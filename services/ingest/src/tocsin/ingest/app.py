"""The ingest HTTP app: its routes, each producer endpoint a format on the accept pipeline.

Producer POSTs run `tocsin.ingest.accept` with their format (`native`,
`alertmanager`, `pagerduty`); the rest are change events, the OpenAPI
document and the operational routes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tocsin.common import broker as queues
from tocsin.common.auth import TokenVerifier
from tocsin.common.ops import ops_routes
from tocsin.common.pipelining import PipelinedRedis
from tocsin.common.telemetry import ServerSpans
from tocsin.ingest.accept import AcceptPipeline, ProducerEndpoint
from tocsin.ingest.admission import Admission
from tocsin.ingest.alertmanager import PushFormat, WebhookFormat
from tocsin.ingest.changes import ChangeEndpoint
from tocsin.ingest.native import NativeFormat
from tocsin.ingest.openapi import openapi_document
from tocsin.ingest.pagerduty import EventsFormat
from tocsin.ingest.producers import ProducerAuth
from tocsin.ingest.settings import IngestSettings

__all__ = ["IngestApp", "build_app"]


def build_app(
    settings: IngestSettings,
    redis: Redis,
    verifier: TokenVerifier | None = None,
    queue_connection: PipelinedRedis | None = None,
) -> IngestApp:
    """The ingest app over `redis` (an asyncio client); `verifier` checks producer JWTs.

    Admission goes over `queue_connection` (default: a pipelined connection to
    `settings.redis_url`), the rest (API keys, readiness) over `redis`.
    """
    auth = ProducerAuth(
        redis, verifier, required=settings.require_auth, cache_seconds=settings.auth_cache_seconds
    )
    queue = queue_connection or PipelinedRedis(settings.redis_url)
    admission = Admission(
        queue,
        queues.ALERTS_QUEUE,
        rate_per_second=settings.rate_per_second,
        burst=settings.rate_burst,
        max_backlog=settings.max_backlog,
        idempotency_ttl=settings.idempotency_ttl_seconds,
    )
    pipeline = AcceptPipeline(auth, admission, backlog_retry_after=settings.backlog_retry_after)
    body_limit, max_batch = settings.max_body_bytes, settings.max_batch
    producer_routes = [
        Route(path, ProducerEndpoint(fmt, pipeline, path), methods=["POST"])
        for path, fmt in (
            ("/v1/alerts", NativeFormat(body_limit, max_batch)),
            ("/v1/integrations/alertmanager", WebhookFormat(body_limit, max_batch)),
            ("/api/v2/alerts", PushFormat(body_limit, max_batch)),
            ("/v2/enqueue", EventsFormat(settings.pagerduty_max_body_bytes)),
        )
    ]
    document = msgspec.json.encode(openapi_document())

    async def get_openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def ready() -> tuple[bool, dict[str, str]]:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            return False, {"redis": f"unreachable: {exc}"}
        return True, {"redis": "ok"}

    routes: list[Route] = [
        *producer_routes,
        Route(
            "/v2/change/enqueue",
            ChangeEndpoint(auth, settings.redis_url, settings.pagerduty_max_body_bytes),
        ),
        Route("/openapi.json", get_openapi, methods=["GET"]),
        *ops_routes(ready, metrics=not settings.metrics_port),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await queue.close()
        await redis.aclose()

    return IngestApp(producer_routes, routes=routes, lifespan=lifespan)


class IngestApp(Starlette):
    """The ingest Starlette app, where a producer POST goes straight to its endpoint.

    Every alert takes that path, so it skips what acts on nothing there:
    Starlette's error and exception middleware (whose own wrapping of `send`
    costs a coroutine per message) and the router. It still passes through the
    app's own middleware -- `ServerSpans` when tracing is on -- so its server
    span is kept; with none, the endpoint is called directly. An error escaping
    the endpoint reaches the server, which answers 500 as Starlette's error
    middleware would. Other methods on these paths (405) and every other route
    take the full stack.
    """

    def __init__(self, producer_routes: list[Route], **options: Any) -> None:
        super().__init__(**options)
        self._producer_routes = {route.path: route for route in producer_routes}
        self._producer_endpoints = {
            route.path: route.endpoint
            for route in producer_routes
            if isinstance(route.endpoint, ProducerEndpoint)
        }
        # Each producer endpoint inside the app's own middleware, built with the stack.
        self._producer_stacks: dict[str, tuple[Route, ASGIApp]] = {}

    def fast_endpoints(self) -> dict[str, ProducerEndpoint]:
        """The producer endpoints by path, for the server's fast path
        (`tocsin.ingest.fastpath`), which traces as `ServerSpans` does; none when
        the app has other middleware, which only the ASGI path would run."""
        if any(
            cast(object, middleware.cls) is not ServerSpans for middleware in self.user_middleware
        ):
            return {}
        return dict(self._producer_endpoints)

    def build_middleware_stack(self) -> ASGIApp:
        for path, route in self._producer_routes.items():
            stack: ASGIApp = route.endpoint
            for cls, args, kwargs in reversed(self.user_middleware):
                stack = cls(stack, *args, **kwargs)
            self._producer_stacks[path] = (route, stack)
        return super().build_middleware_stack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            producer = self._producer_stacks.get(scope["path"])
            if producer is not None:
                scope["app"] = self
                scope["route"] = producer[0]  # as the router would: tracing names spans by it
                await producer[1](scope, receive, send)
                return
        await super().__call__(scope, receive, send)
