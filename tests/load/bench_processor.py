"""Processor and dashboard-cache benchmark (loopback only, about a minute).

1. Throughput: alerts applied per second by one processor process (its worker
   threads) at 0%, 50% and 90% duplicates, batches of 100 alerts per message.
2. Enqueue-to-publish latency (single-alert messages at 100/s and 1,000/s):
   Dramatiq's own worker with its default idle back-off ("before"), the same
   with the back-off bounded to 5 ms, and the batch consumer woken by every
   enqueue ("after", the default).
3. The dashboard workload: 100 readers polling `/v1/alerts` and `/v1/stats`
   every second while 50 alerts per second are written; cache hit rate and
   cache operation time from the gateway's own metrics.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
from typing import Any

import httpx
import msgspec

from tests.load.harness import service
from tocsin.common import broker as queues
from tocsin.common import keys
from tocsin.common.auth import mint_token
from tocsin.common.cache import ReadThroughCache
from tocsin.common.models import AlertIn, QueuedAlert
from tocsin.common.redis import async_client, sync_client
from tocsin.common.server import RedisServer

SECRET = "bench-secret-for-the-processor-benchmark-run"


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


def throughput(redis_url: str, processor: str, duplicates: float, total: int = 20_000) -> float:
    distinct = max(1, int(total * (1 - duplicates)))
    run = uuid.uuid4().hex[:6]
    batches = []
    for start in range(0, total, 100):
        batches.append([alert(f"t{run}-{n % distinct}") for n in range(start, start + 100)])
    broker = queues.build_broker(redis_url)
    before = metric(processor, "tocsin_processor_messages_total")
    started = time.perf_counter()
    for batch in batches:
        broker.enqueue(
            queues.build_message(queues.ALERTS_QUEUE, queues.PROCESS_ALERTS_ACTOR, (batch,))
        )
    while metric(processor, "tocsin_processor_messages_total") - before < total:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    broker.close()
    return total / elapsed


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


async def dashboard(gateway: str, redis_url: str, seconds: float, repeats: float) -> list[float]:
    token = mint_token(SECRET, "bench", scopes=("read",))
    headers = {"authorization": f"Bearer {token}"}
    stop = asyncio.Event()

    async def reader(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(random.random())
        while not stop.is_set():
            started = time.monotonic()
            await client.get("/v1/alerts", params={"status": "firing", "limit": "50"})
            await client.get("/v1/stats")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

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

    probe_times: list[float] = []

    def probe() -> None:
        # Cache operations timed from a client of their own, outside the
        # gateway's busy event loop: the cost of the cache itself.
        async def run() -> None:
            redis = async_client(redis_url)
            cache = ReadThroughCache(redis, "probe", 60)

            async def load() -> bytes:
                return b"x" * 2000

            while not stop.is_set():
                started = time.perf_counter()
                await cache.get("probe", ["alerts"], load)
                probe_times.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)
            await redis.aclose()

        asyncio.run(run())

    prober = threading.Thread(target=probe)
    prober.start()
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(
        base_url=gateway, headers=headers, limits=limits, timeout=10
    ) as client:
        thread = threading.Thread(target=writer)
        thread.start()
        tasks = [asyncio.create_task(reader(client)) for _ in range(100)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        thread.join()
    prober.join()
    return probe_times


def row(name: str, value: str) -> None:
    print(f"{name:<58}  {value}", flush=True)


def main() -> None:
    row("measure", "value")
    with (
        RedisServer() as server,
        service("processor", server.url, secret=SECRET, TOCSIN_AUTO_RESOLVE_SECONDS="0") as (
            processor,
            _,
        ),
    ):
        throughput(server.url, processor, 0.0, 2_000)  # warm-up
        for duplicates in (0.0, 0.5, 0.9):
            rate = throughput(server.url, processor, duplicates)
            row(f"alerts/s, one process, {duplicates:.0%} duplicates", f"{rate:,.0f}")
    variants = (
        # Dramatiq's own worker with its default idle back-off (up to 1 s).
        ("before: Dramatiq worker, 1 s back-off", {"TOCSIN_BATCH_CONSUMER": "false",
                                                   "TOCSIN_IDLE_POLL_MS": "1000"}),
        ("Dramatiq worker, 5 ms back-off", {"TOCSIN_BATCH_CONSUMER": "false",
                                            "TOCSIN_IDLE_POLL_MS": "5"}),
        ("after: batch consumer + wake-up", {}),
    )  # fmt: skip
    for label, variant in variants:
        env = {"TOCSIN_AUTO_RESOLVE_SECONDS": "0", **variant}
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
    for repeats in (0.5, 0.9):
        with (
            RedisServer() as server,
            service("processor", server.url, secret=SECRET, TOCSIN_AUTO_RESOLVE_SECONDS="0"),
            service("gateway", server.url, secret=SECRET) as (gateway, _),
        ):
            asyncio.run(dashboard(gateway, server.url, 2.0, repeats))  # warm-up
            hits0 = metric(gateway, "tocsin_cache_hits_total")
            misses0 = metric(gateway, "tocsin_cache_misses_total")
            lookups0 = histogram(gateway, "tocsin_cache_operation_seconds", 'operation="lookup"')
            probe_times = asyncio.run(dashboard(gateway, server.url, 10.0, repeats))
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
                f"dashboard cache hit rate, writes {repeats:.0%} repeats",
                f"{hits / max(hits + misses, 1):.1%} of {hits + misses:.0f} lookups",
            )
            row(
                "  cache lookup, in the loaded gateway (histogram)",
                f"p50 {quantile(lookups, 0.5) * 1000:.3f} ms  "
                f"p99 {quantile(lookups, 0.99) * 1000:.3f} ms",
            )
            row(
                "  cache operation, own client during the load",
                f"p50 {pct(probe_times, 0.5) * 1000:.3f} ms  "
                f"p99 {pct(probe_times, 0.99) * 1000:.3f} ms  (n={len(probe_times)})",
            )


if __name__ == "__main__":
    main()
