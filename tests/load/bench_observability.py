"""What observability costs on the hot path: tracing off vs on, metrics middleware, signals.

Runs against a private Redis-compatible server on loopback. Tracing "on" uses
what the services run (`RecordingTracerProvider` into `SpanPipe`), handing every
span to a child process that reads and drops them, so the figures are the
serving process's cost, not the encoding's (the child's) nor the network's; one
row does the same with the SDK's own spans, for comparison.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from dramatiq.middleware import Retries
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from redis import Redis

from tocsin.client.devserver import RedisServer
from tocsin.common import telemetry
from tocsin.common.broker import ALERTS_QUEUE, build_broker, build_message
from tocsin.common.metrics import health_signals
from tocsin.common.telemetry.export import SpanPipe
from tocsin.common.telemetry.spans import RecordingTracerProvider
from tocsin.gateway.tracing import event_delivery

ENQUEUES = 3000
FANOUT_EVENTS = 20_000
FANOUT_MEMBERS = 50


# A stand-in for the exporting child: it reads the pipe and drops what it reads.
_DROPPING_CHILD = [sys.executable, "-c", "import sys\nwhile sys.stdin.buffer.read(65536): pass"]


def _per_call_us(run: Callable[[], None], calls: int, repeats: int = 3) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def _enqueue_cost(url: str, provider: trace.TracerProvider | None) -> float:
    broker = build_broker(url)
    if provider is not None:
        broker.add_middleware(telemetry.TracingMiddleware(provider), before=Retries)

    def run() -> None:
        for _ in range(ENQUEUES):
            broker.enqueue(build_message(ALERTS_QUEUE, "process_alerts", ([],)))

    cost = _per_call_us(run, ENQUEUES)
    broker.client.flushall()
    broker.close()
    return cost


class _Member:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def deliver(self, frame: bytes) -> None:
        self.count += 1


def _fanout_cost() -> float:
    members = [_Member() for _ in range(FANOUT_MEMBERS)]
    frame = (
        b'{"type":"event","data":{},"traceparent":"00-' + b"a" * 32 + b"-" + b"b" * 16 + b'-01"}'
    )

    def run() -> None:
        for _ in range(FANOUT_EVENTS):
            with event_delivery("alerts", frame) as delivery:
                delivery.fan_out(members, lambda member: member.deliver(frame))

    return _per_call_us(run, FANOUT_EVENTS)


def main() -> None:
    rows: list[tuple[str, float]] = []
    with RedisServer() as server:
        rows.append(("enqueue, tracing off (JobMetrics only)", _enqueue_cost(server.url, None)))
        pipe = SpanPipe(Resource.create({}), command=_DROPPING_CHILD)
        # What the services run (spans recorded as tuples), and the SDK's spans for comparison.
        provider = RecordingTracerProvider(pipe.hand)
        sdk = TracerProvider(shutdown_on_exit=False)
        sdk.add_span_processor(pipe)
        rows.append(("enqueue, tracing on (PRODUCER span)", _enqueue_cost(server.url, provider)))
        rows.append(("enqueue, tracing on, SDK spans", _enqueue_cost(server.url, sdk)))
        rows.append((f"event fan-out to {FANOUT_MEMBERS}, tracing off", _fanout_cost()))
        # Turn tracing on for the process the way setup_tracing does, minus the exporter.
        trace.set_tracer_provider(provider)
        telemetry.setup._enabled = True
        rows.append((f"event fan-out to {FANOUT_MEMBERS}, tracing on", _fanout_cost()))
        telemetry.setup._enabled = False
        redis = Redis.from_url(server.url)
        health_signals.bind(redis, flush_interval=0)
        rows.append(
            ("health signal add (bound)", _per_call_us(_adds(100_000), 100_000)),
        )
        health_signals.unbind()
        redis.close()
        pipe.shutdown()
    width = max(len(name) for name, _ in rows)
    print(f"{'operation'.ljust(width)}  us/call (median of 3)")
    for name, cost in rows:
        print(f"{name.ljust(width)}  {cost:8.2f}")


def _adds(count: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(count):
            health_signals.add("jobs_success")

    return run
