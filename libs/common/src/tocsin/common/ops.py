"""The operational HTTP surface every service has: /healthz, /readyz, /metrics.

HTTP services mount `ops_routes` in their app; worker services, which have no
app of their own, serve `ops_app` from a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType

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
    "RestingServer",
    "metrics_app",
    "on_signals",
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


class RestingServer(uvicorn.Server):
    """uvicorn's server, whose housekeeping tick comes once a second rather than ten times.

    uvicorn wakes every 0.1 s to refresh its `Date` header (which changes once a
    second) and to see whether it should stop; at rest those wake-ups were most
    of what an idle service cost. Here the tick is a second apart, and a stop
    signal ends the wait at once, so shutdown is as prompt as before.
    """

    _tick: asyncio.Future[None] | None = None
    _tick_loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._tick_loop = asyncio.get_running_loop()
        # on_tick refreshes the Date header when the counter is a multiple of 10.
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864_000
            self._tick = self._tick_loop.create_future()
            timer = self._tick_loop.call_later(1.0, self._end_tick)
            await self._tick
            timer.cancel()
            should_exit = await self.on_tick(counter)

    def _end_tick(self) -> None:
        if self._tick is not None and not self._tick.done():
            self._tick.set_result(None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._tick_loop is not None and not self._tick_loop.is_closed():
            self._tick_loop.call_soon_threadsafe(self._end_tick)


def serve(app: Starlette, host: str, port: int, **options: object) -> None:
    """Run `app` under uvicorn in this thread until SIGINT/SIGTERM."""
    server = RestingServer(_config(app, host, port, **options))
    tune_gc()
    server.run()


def serve_in_thread(app: Starlette, host: str, port: int, **options: object) -> uvicorn.Server:
    """Run `app` on its own event loop in a daemon thread; returns the server."""
    server = RestingServer(_config(app, host, port, loop="asyncio", lifespan="off", **options))
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


def on_signals(signums: Iterable[int], react: Callable[[int], None]) -> None:
    """Call `react(signum)` on a thread of its own for each of `signums` that arrives.

    A Python signal handler runs between two bytecodes of the main thread, even inside
    an `Event.set()` or `Event.wait()` that holds the event's lock, so a handler that
    sets an event can wait for that lock for ever (a processor hung on the SIGTERMs
    that kept coming while it stopped; `test_shutdown_signal`). The handler here only
    writes the signal's number to a pipe; a thread reads it and reacts.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handler(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the thread has plenty to read
            os.write(write_end, bytes([signum]))

    def relay() -> None:
        while True:
            for signum in os.read(read_end, 64):
                react(signum)

    threading.Thread(target=relay, name="signals", daemon=True).start()
    for signum in signums:
        signal.signal(signum, handler)


def shutdown_event() -> threading.Event:
    """An event that SIGTERM or SIGINT sets; a worker's main thread waits on it, then stops
    its parts in order (Kubernetes sends SIGTERM, a terminal Ctrl-C)."""
    stop = threading.Event()
    on_signals((signal.SIGTERM, signal.SIGINT), lambda _signum: stop.set())
    return stop
