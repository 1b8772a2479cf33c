"""Processor and dashboard-cache benchmark (loopback only, about a minute).

1. Throughput: alerts applied per second by one processor process (its worker
   threads) at 0%, 50% and 90% duplicates, batches of 100 alerts per message,
   with the CPU the processor (its span exporting process included) and Redis
   spent per alert (the figure to compare on a shared machine: the rate moves
   with whatever else runs).
2. Enqueue-to-publish latency (single-alert messages at 100/s and 1,000/s).

Parts 1 and 2 run twice, tracing off and tracing on (spans exported over
OTLP/HTTP to a sink): the processor runs the queue layer's one consumer path
either way.
3. The dashboard workload: 100 readers polling `/v1/alerts` and `/v1/stats`
   every second while 50 alerts per second are written (50% and 90% of them
   repeats of earlier alerts); the cache hit rate and the lookup time from the
   gateway's own metrics (`tocsin_cache_operation_seconds`: what the service
   experiences, the primary figure).

How the dashboard part keeps its measurement fair on a small machine:

- The gateway runs alone on the first core; Redis, the processor, this
  process (the writer, a thread), the readers and the probe on the second
  (`BENCH_PROCESSOR_PIN=0` leaves everything unpinned).
- The 100 readers are one process of their own speaking HTTP/1.1 by hand over
  keep-alive asyncio connections on uvloop, cheap enough not to starve the
  services (an httpx client per reader in this process took a core).
- The probe, timing cache lookups from outside the gateway's event loop, is a
  process of its own too, not a thread sharing the readers' interpreter lock
  (which alone put milliseconds into its tail). Its hits (one lookup) and
  misses (lookup, load and store) are reported apart.
- The CPU that other work on the machine used during each round is printed
  ("outside the bench"): tests or builds running alongside show up in every
  tail figure, so compare rounds where it is near 0%.

4. Dashboard list bytes: `GET /v1/alerts?limit=50` over 50 stored alerts shaped
   like the ingest bench's (labels instance/job, a summary annotation), per alert,
   as summaries (the default) and as full records (`fields=full`).

`BENCH_PROCESSOR_PARTS` picks parts (`throughput,latency,dashboard,bytes`, the default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import psutil

from tests.load.harness import otlp_sink, run_load, service
from tocsin.client.devserver import RedisServer
from tocsin.client.devtoken import mint_token
from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.cache import ReadThroughCache
from tocsin.common.models import AlertIn, QueuedAlert
from tocsin.common.pipelining import PipelinedRedis
from tocsin.common.redis import async_client, sync_client

SECRET = "bench-secret-for-the-processor-benchmark-run"
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    for match in pattern.finditer(text):
        if labels in (match[1] or ""):
            total += float(match[2])
    return total


def histogram(url: str, name: str, labels: str) -> list[tuple[float, float]]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    buckets = []
    for match in re.finditer(rf"^{name}_bucket\{{(.*)\}} (\S+)$", text, re.M):
        bound = re.search(r'le="([^"]+)"', match[1])
        if labels in match[1] and bound:
            buckets.append((float(bound[1]), float(match[2])))
    return buckets


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style linear interpolation inside the bucket holding the quantile."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank, low, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return low
            return low + (bound - low) * (rank - below) / max(count - below, 1e-9)
        low, below = bound, count
    return low


def alert(fingerprint: str, received_at: float | None = None) -> dict[str, Any]:
    return msgspec.to_builtins(  # type: ignore[no-any-return]
        QueuedAlert(
            id=uuid.uuid4().hex,
            fingerprint=fingerprint,
            received_at=received_at or time.time(),
            producer="bench",
            alert=AlertIn(
                name="cpu high",
                severity="warning",
                service=f"svc-{hash(fingerprint) % 20}",
                labels={"team": f"team-{hash(fingerprint) % 5}", "host": fingerprint},
                dedup_key=fingerprint,
            ),
        )
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class Throughput:
    """One throughput run: alerts/s, and the CPU the processor and Redis spent per alert."""

    rate: float
    processor_us: float  # processor process CPU (user + system) per alert, µs
    redis_us: float  # Redis server CPU per alert, µs


def _cpu(pid: int) -> float:
    """CPU time of `pid` and its children: with tracing on, the span exporting process
    does part of the processor's tracing work and counts as the processor's."""
    process = psutil.Process(pid)
    total = 0.0
    for one in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = one.cpu_times()
            total += times.user + times.system
    return total


def throughput(
    redis_url: str,
    processor: str,
    duplicates: float,
    total: int = 20_000,
    pids: tuple[int, int] = (0, 0),
) -> Throughput:
    """Enqueue `total` alerts in batches of 100 and time until the processor applied them.

    `pids` (processor, Redis) give the CPU per alert: on a shared machine that is
    the figure to compare, as the rate moves with whatever else runs.
    """
    distinct = max(1, int(total * (1 - duplicates)))
    run = uuid.uuid4().hex[:6]
    batches = []
    for start in range(0, total, 100):
        batches.append([alert(f"t{run}-{n % distinct}") for n in range(start, start + 100)])
    broker = queues.build_broker(redis_url)
    before = metric(processor, "tocsin_processor_messages_total")
    cpu_before = [_cpu(pid) if pid else 0.0 for pid in pids]
    started = time.perf_counter()
    for batch in batches:
        broker.enqueue(
            queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (batch,))
        )
    while metric(processor, "tocsin_processor_messages_total") - before < total:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    spent = [(_cpu(pid) - was) * 1e6 / total if pid else float("nan")
             for pid, was in zip(pids, cpu_before, strict=True)]  # fmt: skip
    broker.close()
    return Throughput(total / elapsed, spent[0], spent[1])


def latency(redis_url: str, processor: str, rate: int, seconds: float) -> list[float]:
    redis = sync_client(redis_url)
    pubsub = redis.pubsub()
    pubsub.subscribe(keys.live("alerts"))
    samples: list[float] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "message":
                frame = json.loads(message["data"])
                samples.append(time.time() - frame["data"]["received_at"])

    listener = threading.Thread(target=listen)
    listener.start()
    broker = queues.build_broker(redis_url)
    run = uuid.uuid4().hex[:6]
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for n in range(int(rate * seconds)):
        next_at += interval
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        broker.enqueue(
            queues.build_message(
                queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, ([alert(f"l{run}-{n}")],)
            )
        )
    time.sleep(1.5)
    stop.set()
    listener.join()
    pubsub.close()
    broker.close()
    return samples


class _Reader(asyncio.Protocol):
    """One dashboard on a keep-alive HTTP/1.1 connection, spoken by hand (cheap to run)."""

    def __init__(self, requests: tuple[bytes, ...]) -> None:
        self.requests = requests
        self.times: list[float] = []
        self.hits = 0
        self.errors = 0
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._length = -1
        self._done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("gateway closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._length < 0:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self._buffer[:head_end].lower()
            if not head.startswith(b"http/1.1 200"):
                self.errors += 1
            self.hits += b"\r\nx-cache: hit" in head
            length = re.search(rb"\r\ncontent-length: *(\d+)", head)
            self._length = head_end + 4 + (int(length[1]) if length else 0)
        if len(self._buffer) >= self._length and self._done is not None:
            self._buffer, self._length = b"", -1
            self._done.set_result(None)

    async def poll(self) -> None:
        """Send each request in turn and wait for its whole response, timing each."""
        assert self._transport is not None
        for request in self.requests:
            self._done = asyncio.get_running_loop().create_future()
            started = time.perf_counter()
            self._transport.write(request)
            await self._done
            self.times.append(time.perf_counter() - started)


def run_readers() -> None:
    """Subprocess role: `readers HOST PORT TOKEN COUNT SECONDS`; prints a JSON summary."""
    host, port, token, count, seconds = sys.argv[2:7]
    paths = ("/v1/alerts?limit=50&status=firing", "/v1/stats")
    requests = tuple(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
        for path in paths
    )

    async def run() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        readers: list[_Reader] = []
        for _ in range(int(count)):
            _, reader = await loop.create_connection(lambda: _Reader(requests), host, int(port))
            readers.append(reader)
        deadline = time.monotonic() + float(seconds)

        async def dashboard(reader: _Reader) -> None:
            await asyncio.sleep(random.random())
            while time.monotonic() < deadline:
                started = time.monotonic()
                await reader.poll()
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

        await asyncio.gather(*(dashboard(reader) for reader in readers))
        times = [t for reader in readers for t in reader.times]
        return {
            "requests": len(times),
            "hits": sum(reader.hits for reader in readers),
            "errors": sum(reader.errors for reader in readers),
            "p50": pct(times, 0.5),
            "p99": pct(times, 0.99),
        }

    print(json.dumps(run_load(run())), flush=True)


def run_probe() -> None:
    """Subprocess role: `probe REDIS_URL SECONDS`; times cache lookups, prints JSON.

    Its own process and event loop, so that only the cache, Redis and the
    machine's scheduling are in its figures; it looks up as the gateway does
    (over a pipelined connection, with a local copy). A hit is one lookup; a
    miss (after each invalidation) is a lookup, a load and a store.
    """
    redis_url, seconds = sys.argv[2:4]

    async def run() -> dict[str, list[float]]:
        redis = async_client(redis_url)
        pipelined = PipelinedRedis(redis_url, coalesce=False)
        cache = ReadThroughCache(redis, "probe", 60, lookups=pipelined)

        async def load() -> bytes:
            return b"x" * 2000

        times: dict[str, list[float]] = {"hit": [], "miss": []}
        deadline = time.monotonic() + float(seconds)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            _, hit = await cache.get("probe", ["alerts"], load)
            times["hit" if hit else "miss"].append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        await pipelined.close()
        await redis.aclose()
        return times

    print(json.dumps(run_load(run())), flush=True)


def _role(role: str, *args: str, core: int | None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", f"from tests.load.bench_processor import run_{role}; run_{role}()",
         role, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=None if core is None else (lambda: os.sched_setaffinity(0, {core})),
    )  # fmt: skip


@dataclass
class DashboardRun:
    readers: dict[str, float]
    probe: dict[str, list[float]]


def dashboard(
    gateway: str, redis_url: str, seconds: float, repeats: float, load_core: int | None
) -> DashboardRun:
    """100 readers (one process) and a cache probe (another) while this process writes 50/s."""
    token = mint_token(SECRET, "bench", scopes=("read",))
    host, port = gateway.removeprefix("http://").rsplit(":", 1)
    readers = _role("readers", host, port, token, "100", str(seconds), core=load_core)
    prober = _role("probe", redis_url, str(seconds), core=load_core)
    stop = threading.Event()

    def writer() -> None:
        broker = queues.build_broker(redis_url)
        run = uuid.uuid4().hex[:6]
        n = 0
        created: list[str] = []
        next_at = time.perf_counter()
        while not stop.is_set():
            next_at += 1 / 50
            time.sleep(max(0.0, next_at - time.perf_counter()))
            # New alerts, and repeats of earlier ones (as producers re-send).
            if created and random.random() < repeats:
                key = random.choice(created)
            else:
                key = f"d{run}-{n}"
                created.append(key)
            broker.enqueue(
                queues.build_message(
                    queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, ([alert(key)],)
                )
            )
            n += 1
        broker.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        readers_out, _ = readers.communicate(timeout=seconds + 60)
        probe_out, _ = prober.communicate(timeout=seconds + 60)
    finally:
        stop.set()
        thread.join()
    return DashboardRun(json.loads(readers_out), json.loads(probe_out))


def row(name: str, value: str) -> None:
    print(f"{name:<58}  {value}", flush=True)


PARTS = frozenset(
    os.environ.get("BENCH_PROCESSOR_PARTS", "throughput,latency,dashboard,bytes").split(",")
)


def main() -> None:
    row("measure", "value")
    if "throughput" in PARTS:
        throughput_part()
    if "latency" in PARTS:
        latency_part()
    if "dashboard" in PARTS:
        dashboard_part()
    if "bytes" in PARTS:
        list_bytes_part()


def list_bytes_part(count: int = 50) -> None:
    """Bytes per alert of a 50-alert list page, summary and full (the ingest bench's alerts)."""
    with (
        RedisServer() as server,
        service("processor", server.url, secret=SECRET, TOCSIN_AUTO_RESOLVE_SECONDS="0") as (
            _,
            _,
        ),
        service("gateway", server.url, secret=SECRET) as (gateway, _),
    ):
        batch = [
            msgspec.to_builtins(
                QueuedAlert(
                    id=uuid.uuid4().hex,
                    fingerprint=f"bytes-{i}",
                    received_at=time.time(),
                    producer="bench",
                    alert=AlertIn(name="BenchAlert", severity="warning", service="bench",
                                  labels={"instance": f"host-{i}", "job": "bench"},
                                  annotations={"summary": "benchmark alert"},
                                  dedup_key=f"bytes-{i}"),
                )
            )
            for i in range(count)
        ]  # fmt: skip
        broker = queues.build_broker(server.url)
        broker.enqueue(
            queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (batch,))
        )
        broker.close()
        token = mint_token(SECRET, "bench", scopes=("read",))
        with httpx.Client(
            base_url=gateway, headers={"authorization": f"Bearer {token}"}, timeout=10
        ) as http:
            deadline = time.monotonic() + 30
            while http.get("/v1/alerts", params={"limit": 1}).json()["total"] < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the alerts were not stored within 30 s")
                time.sleep(0.05)
            for view in ("summary", "full"):
                body = http.get("/v1/alerts", params={"limit": count, "fields": view}).content
                row(
                    f"dashboard list, {count} alerts, {view}",
                    f"{len(body):,} bytes, {len(body) / count:,.0f} bytes/alert",
                )


def _tracing_variants() -> Iterator[tuple[str, dict[str, str]]]:
    """Tracing off, then on (spans exported to a sink): one consumer path either way."""
    yield "tracing off", {}
    with otlp_sink() as env:
        yield "tracing on", env


def throughput_part() -> None:
    for label, tracing in _tracing_variants():
        with (
            RedisServer() as server,
            service(
                "processor", server.url, secret=SECRET, TOCSIN_AUTO_RESOLVE_SECONDS="0", **tracing
            ) as (processor, processor_pid),
        ):
            throughput(server.url, processor, 0.0, 2_000)  # warm-up
            for duplicates in (0.0, 0.5, 0.9):
                run = throughput(
                    server.url, processor, duplicates, pids=(processor_pid, server.pid or 0)
                )
                row(
                    f"alerts/s, one process, {duplicates:.0%} duplicates, {label}",
                    f"{run.rate:,.0f} (CPU per alert: processor {run.processor_us:.0f} µs,"
                    f" Redis {run.redis_us:.0f} µs)",
                )


def latency_part() -> None:
    for label, tracing in _tracing_variants():
        env = {"TOCSIN_AUTO_RESOLVE_SECONDS": "0", **tracing}
        with (
            RedisServer() as server,
            service("processor", server.url, secret=SECRET, **env) as (processor, _),
        ):
            for rate in (100, 1000):
                samples = latency(server.url, processor, rate, 3.0)
                row(
                    f"enqueue->publish @{rate}/s, {label}",
                    f"p50 {pct(samples, 0.5) * 1000:.1f} ms  "
                    f"p99 {pct(samples, 0.99) * 1000:.1f} ms  (n={len(samples)})",
                )


def _cores() -> tuple[int | None, int | None]:
    """(gateway core, everything else's core), or no pinning when asked or impossible."""
    available = sorted(os.sched_getaffinity(0))
    if os.environ.get("BENCH_PROCESSOR_PIN", "1") == "0" or len(available) < 2:
        return None, None
    return available[0], available[1]


def dashboard_part() -> None:
    every_core = os.sched_getaffinity(0)
    gateway_core, load_core = _cores()
    if load_core is not None:
        row("dashboard pinning", f"gateway on core {gateway_core}, all else on core {load_core}")
    try:
        for repeats in (0.5, 0.9):
            dashboard_round(repeats, gateway_core, load_core)
    finally:
        os.sched_setaffinity(0, every_core)


class _Cpu:
    """CPU used by the gateway, and by whatever runs on the machine besides the benchmark."""

    def __init__(self, services: list[psutil.Process]) -> None:
        self._services = services
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        machine = psutil.cpu_times()
        busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        ours = os.times()
        bench = ours.user + ours.system + ours.children_user + ours.children_system
        services = [p.cpu_times() for p in self._services]
        gateway = services[-1].user + services[-1].system
        return time.monotonic(), busy, bench + sum(t.user + t.system for t in services), gateway

    def shares(self) -> tuple[float, float]:
        """(the gateway's, the rest of the machine's) share of one core since the start."""
        end = self._sample()
        elapsed = end[0] - self._start[0]
        outside = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return (end[3] - self._start[3]) / elapsed, max(0.0, outside) / elapsed


def dashboard_round(repeats: float, gateway_core: int | None, load_core: int | None) -> None:
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})  # Redis, the processor and the writer inherit it
    with (
        RedisServer() as server,
        service("processor", server.url, secret=SECRET, TOCSIN_AUTO_RESOLVE_SECONDS="0") as (
            _,
            processor_pid,
        ),
        service("gateway", server.url, secret=SECRET, core=gateway_core) as (gateway, gateway_pid),
    ):
        dashboard(gateway, server.url, 2.0, repeats, load_core)  # warm-up
        hits0 = metric(gateway, "tocsin_cache_hits_total")
        misses0 = metric(gateway, "tocsin_cache_misses_total")
        lookups0 = histogram(gateway, "tocsin_cache_operation_seconds", 'operation="lookup"')
        ours = [psutil.Process(pid) for pid in (server.pid, processor_pid, gateway_pid) if pid]
        cpu = _Cpu(ours)
        run = dashboard(gateway, server.url, 10.0, repeats, load_core)
        gateway_share, others_share = cpu.shares()
        hits = metric(gateway, "tocsin_cache_hits_total") - hits0
        misses = metric(gateway, "tocsin_cache_misses_total") - misses0
        lookups = [
            (bound, count - before)
            for (bound, count), (_, before) in zip(
                histogram(gateway, "tocsin_cache_operation_seconds", 'operation="lookup"'),
                lookups0,
                strict=True,
            )
        ]
    row(
        f"dashboard load, writes {repeats:.0%} repeats",
        f"gateway {gateway_share:.0%} of a core; outside the bench {others_share:.0%}",
    )
    row(
        f"dashboard cache hit rate, writes {repeats:.0%} repeats",
        f"{hits / max(hits + misses, 1):.1%} of {hits + misses:.0f} lookups",
    )
    within = dict(lookups).get(0.001, 0.0) / max(lookups[-1][1], 1.0) if lookups else 0.0
    row(
        "  cache lookup, in the loaded gateway (histogram)",
        f"p50 {quantile(lookups, 0.5) * 1000:.3f} ms  p99 {quantile(lookups, 0.99) * 1000:.3f} ms"
        f"  ({within:.2%} within 1 ms)",
    )
    hit_times, miss_times = run.probe["hit"], run.probe["miss"]
    row(
        "  cache lookup (hit), probe process",
        f"p50 {pct(hit_times, 0.5) * 1000:.3f} ms  "
        f"p99 {pct(hit_times, 0.99) * 1000:.3f} ms  (n={len(hit_times)})",
    )
    row(
        "  cache miss (lookup, load, store), probe process",
        f"p50 {pct(miss_times, 0.5) * 1000:.3f} ms  "
        f"p99 {pct(miss_times, 0.99) * 1000:.3f} ms  (n={len(miss_times)})",
    )
    row(
        "  dashboard request, as the readers see it",
        f"p50 {run.readers['p50'] * 1000:.3f} ms  p99 {run.readers['p99'] * 1000:.3f} ms  "
        f"(n={run.readers['requests']:.0f}, errors {run.readers['errors']:.0f})",
    )


if __name__ == "__main__":
    main()
