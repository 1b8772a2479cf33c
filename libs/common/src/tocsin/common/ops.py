"""The operational HTTP surface every service has: /healthz, /readyz, /metrics.

HTTP services mount `ops_routes` in their app; worker services, which have no
app of their own, serve `ops_app` from a background thread.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import Awaitable, Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from redis import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "READY_TIMEOUT_SECONDS",
    "ReadyCheck",
    "metrics_app",
    "ops_app",
    "ops_routes",
    "redis_ready",
    "serve",
    "serve_in_thread",
    "shutdown_event",
    "tune_gc",
]

ReadyCheck = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]

# /readyz answers within a second whatever its checks do: a probe that hangs on a
# frozen Redis is itself the answer (503), not a reason for the probe to time out.
READY_TIMEOUT_SECONDS = 0.5


def ops_routes(
    ready: ReadyCheck, registry: CollectorRegistry = REGISTRY, *, metrics: bool = True
) -> list[Route]:
    """/healthz, /readyz and, unless served on a port of their own (`metrics_app`), /metrics."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            ok, checks = await asyncio.wait_for(ready(), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            ok, checks = False, {"redis": f"no answer within {READY_TIMEOUT_SECONDS} s"}
        return JSONResponse(
            {"status": "ready" if ok else "unready", "checks": checks},
            status_code=200 if ok else 503,
        )

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return [*routes, _metrics_route(registry)] if metrics else routes


def _metrics_route(registry: CollectorRegistry) -> Route:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])


def metrics_app(registry: CollectorRegistry = REGISTRY) -> Starlette:
    """/metrics alone, for a port that only Prometheus reaches (`TOCSIN_METRICS_PORT`)."""
    return Starlette(routes=[_metrics_route(registry)])


def ops_app(ready: ReadyCheck, registry: CollectorRegistry = REGISTRY) -> Starlette:
    return Starlette(routes=ops_routes(ready, registry))


def tune_gc() -> None:
    """Keep full collections out of the latency tail.

    Everything allocated during start-up lives for the whole process; freezing
    it removes it from every later collection, and a higher first threshold
    makes young collections rarer and cheaper per allocated object.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _config(app: Starlette, host: str, port: int, **options: object) -> uvicorn.Config:
    settings: dict[str, object] = {"log_config": None, "access_log": False, "lifespan": "on"}
    settings.update(options)
    return uvicorn.Config(app, host=host, port=port, **settings)  # type: ignore[arg-type]


def serve(app: Starlette, host: str, port: int, **options: object) -> None:
    """Run `app` under uvicorn in this thread until SIGINT/SIGTERM."""
    server = uvicorn.Server(_config(app, host, port, **options))
    tune_gc()
    server.run()


def serve_in_thread(app: Starlette, host: str, port: int, **options: object) -> uvicorn.Server:
    """Run `app` on its own event loop in a daemon thread; returns the server."""
    server = uvicorn.Server(_config(app, host, port, loop="asyncio", lifespan="off", **options))
    # uvicorn installs no signal handlers off the main thread, which keeps the
    # worker's own shutdown handling in charge.
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve()), name="ops-http", daemon=True
    )
    thread.start()
    return server


def redis_ready(redis: Redis) -> ReadyCheck:
    """A readiness check that passes while `redis` answers PING.

    The blocking PING runs on a thread; one that hangs (a frozen Redis) is not
    started again while it waits, so probes cannot pile threads up.
    """
    in_flight: list[asyncio.Future[bool]] = []

    async def ready() -> tuple[bool, dict[str, str]]:
        if in_flight and not in_flight[0].done():
            return False, {"redis": "the previous PING is still waiting for an answer"}
        probe = asyncio.ensure_future(asyncio.to_thread(redis.ping))
        # Read its outcome even when nobody waits for it any more (no "never retrieved").
        probe.add_done_callback(lambda done: done.cancelled() or done.exception())
        in_flight[:] = [probe]
        try:
            await asyncio.shield(in_flight[0])
        except Exception as exc:
            return False, {"redis": f"unreachable: {exc}"}
        return True, {"redis": "ok"}

    return ready


def shutdown_event() -> threading.Event:
    """An event that SIGTERM or SIGINT sets; a worker's main thread waits on it, then stops
    its parts in order (Kubernetes sends SIGTERM, a terminal Ctrl-C)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop
