"""Gateway benchmark: idle sockets, fan-out throughput and latency (loopback, about a minute).

One gateway process pinned to core 0; the load generator (this process), the
publisher process and the Redis-compatible server pinned to core 1.

1. Idle: sockets held (each authenticated and subscribed to `alerts`), the
   gateway's resident memory per socket, and the time to connect them, at
   1,000 / 5,000 / 10,000 sockets.
2. Fan-out: 1,000 sockets on `alerts`; the publish rate rises step by step;
   deliveries per second, events lost, sockets closed, and publish-to-receive
   latency p50/p95/p99 (sampled on 100 sockets); the first rate whose p99
   exceeds 100 ms.
3. The gateway's own WebSocket server (`tocsin`, the default) against uvicorn's
   implementations (websockets-sansio, wsproto, websockets) at 1,000 sockets.
4. Connect: 10,000 sockets, each with its own token and a subscribe, into a fresh
   gateway, three times: the time, the gateway's CPU seconds and the load
   generator's (this process, on the other core) of each run.
   `BENCH_GATEWAY_ONLY=connect` runs this part alone.

The load side speaks WebSocket by hand over asyncio protocols, so that it stays
cheaper than the server it measures. `BENCH_GATEWAY_STEP_SECONDS` sets the
length of each publish step (default 2), `BENCH_GATEWAY_IN_FLIGHT` the handshakes
the load keeps in flight (default 200). Each socket has its own token, as real
clients do (`BENCH_GATEWAY_TOKENS=shared` gives them all one, which the
gateway's verifier then checks only once). Deliveries per second count from the
first to the last event received in a step, so the publisher's start-up and the
wait for stragglers do not dilute them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

from tests.hostile import TEXT, client_frame, upgrade_request
from tests.load.harness import SocketClient, run_load, service, socket_bench_layout
from tocsin.client.devtoken import mint_token

SECRET = "bench-secret-for-the-gateway-benchmark-run"
SUBSCRIBE_ALERTS = b'{"type":"subscribe","channel":"alerts"}'
IMPLEMENTATIONS = ("tocsin", "websockets-sansio", "wsproto", "websockets")
RATES = (25, 50, 100, 150, 200, 300)
COMPARE_RATE = 100
SAMPLE_EVERY = 10
STEP_SECONDS = float(os.environ.get("BENCH_GATEWAY_STEP_SECONDS", "2"))
SHARED_TOKEN = os.environ.get("BENCH_GATEWAY_TOKENS", "distinct") == "shared"
ONLY = os.environ.get("BENCH_GATEWAY_ONLY", "")
CONNECT_RUNS = 3
IN_FLIGHT = int(os.environ.get("BENCH_GATEWAY_IN_FLIGHT", "200"))
CONNECT_SOCKETS = 10_000
EVENT_MARK = b'{"type":"event"'

PUBLISHER = """
import json, sys, time
import redis
from tocsin.common.events import EventPublisher
url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
publisher = EventPublisher(redis.Redis.from_url(url))
filler = "x" * 300
count = int(rate * seconds)
start = time.perf_counter()
for n in range(count):
    due = start + n / rate
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    publisher.publish(["alerts"], '{"ts":%r,"n":%d,"filler":"%s"}' % (time.time(), n, filler))
print(count)
"""


@contextlib.contextmanager
def gateway(redis_url: str, implementation: str, core: int) -> Iterator[tuple[int, int]]:
    """A gateway process pinned to `core`; yields (port, pid)."""
    with service(
        "gateway",
        redis_url,
        secret=SECRET,
        core=core,
        TOCSIN_WS_IMPLEMENTATION=implementation,
        TOCSIN_MAX_CONNECTIONS="20000",
        TOCSIN_DRAIN_WINDOW="0",
        TOCSIN_CLOSE_TIMEOUT="1",
        TOCSIN_HEARTBEAT_INTERVAL="3600",  # the hand-made load clients answer no pings
    ) as (url, pid):
        yield int(url.rsplit(":", 1)[1]), pid


@dataclass
class Probe(SocketClient):
    """One hand-made WebSocket client: counts events, and on sampled sockets, latencies."""

    events: int = 0
    first_event_at: float = 0.0
    last_event_at: float = 0.0
    latencies: list[float] = field(default_factory=list)
    _buffer: bytes = b""
    _upgraded: bool = False
    _tail: bytes = b""

    def data_received(self, data: bytes) -> None:
        if not self.subscribed.done():
            self._buffer += data
            if not self._upgraded and b"\r\n\r\n" in self._buffer:
                self._upgraded = True
                assert self._transport is not None
                self._transport.write(client_frame(TEXT, SUBSCRIBE_ALERTS, mask=os.urandom(4)))
            if b'"subscribed"' in self._buffer:
                self.subscribed.set_result(time.perf_counter())
                self._buffer = b""
            return
        now = time.time()
        window = self._tail + data
        events = window.count(EVENT_MARK)
        if events:
            self.events += events
            if not self.first_event_at:
                self.first_event_at = now
            self.last_event_at = now
        self._tail = data[-(len(EVENT_MARK) - 1) :]
        if self.sample:
            start = window.find(b'"ts":')
            while start >= 0:
                end = window.find(b",", start)
                if end < 0:
                    break
                with contextlib.suppress(ValueError):
                    self.latencies.append(now - float(window[start + 5 : end]))
                start = window.find(b'"ts":', end)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


_minted: list[str] = []


def _tokens(count: int) -> list[str]:
    """One token per socket (minted before any timing), or one for all when shared."""
    while len(_minted) < count:
        subject = "bench" if SHARED_TOKEN else f"bench-{len(_minted)}"
        _minted.append(_minted[0] if SHARED_TOKEN and _minted else mint_token(SECRET, subject))
    return _minted


async def open_sockets(
    port: int, count: int, start_index: int = 0
) -> tuple[list[Probe], list[float]]:
    """Connect `count` subscribed sockets, at most `IN_FLIGHT` handshakes in flight."""
    loop = asyncio.get_running_loop()
    tokens = _tokens(start_index + count)
    slots = asyncio.Semaphore(IN_FLIGHT)
    handshakes: list[float] = []

    async def one(index: int) -> Probe:
        request = upgrade_request(f"/ws?token={tokens[index]}")
        async with slots:
            started = time.perf_counter()
            _, probe = await loop.create_connection(
                lambda: Probe(request, sample=index % SAMPLE_EVERY == 0), "127.0.0.1", port
            )
            handshakes.append(await probe.subscribed - started)
        return probe

    probes = await asyncio.gather(*(one(start_index + i) for i in range(count)))
    return list(probes), handshakes


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Step:
    rate: int
    published: int
    delivered_per_second: float
    lost: int
    closed: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


async def publish_step(redis_url: str, probes: list[Probe], rate: int, core: int) -> Step:
    for probe in probes:
        probe.events = 0
        probe.first_event_at = probe.last_event_at = 0.0
        probe.latencies.clear()
    started = time.perf_counter()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, redis_url, str(rate), str(STEP_SECONDS),
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )  # fmt: skip
    out, _ = await publisher.communicate()
    published = int(out.decode().strip() or 0)
    expected = published * len(probes)
    # Wait for the tail to arrive: until everything came, or nothing more comes.
    last_total, quiet_since = -1, time.perf_counter()
    while True:
        total = sum(p.events for p in probes)
        if total >= expected or time.perf_counter() - quiet_since > 1.0:
            break
        if total != last_total:
            last_total, quiet_since = total, time.perf_counter()
        await asyncio.sleep(0.02)
    received = [p for p in probes if p.events]
    elapsed = (
        max(p.last_event_at for p in received) - min(p.first_event_at for p in received)
        if received
        else time.perf_counter() - started
    )
    latencies = [x for p in probes if p.sample for x in p.latencies]
    return Step(
        rate=rate,
        published=published,
        delivered_per_second=total / max(elapsed, 1e-3),
        lost=expected - total,
        closed=sum(p.closed for p in probes),
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p95_ms=_percentile(latencies, 0.95) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
    )


def _cpu(pid: int) -> float:
    """Seconds of CPU the process has used (user + system)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def run(redis_url: str, server_core: int, load_core: int) -> None:
    idle_rows = []
    fanout_rows: list[Step] = []
    compare_rows = []
    _tokens(10_000)  # minted up front, outside every timed step
    for implementation in IMPLEMENTATIONS:
        main = implementation == IMPLEMENTATIONS[0]
        with gateway(redis_url, implementation, server_core) as (port, pid):
            baseline = _rss(pid)
            probes: list[Probe] = []
            connecting = 0.0
            for target in (1000, 5000, 10000) if main else (1000,):
                started = time.perf_counter()
                cpu_before = _cpu(pid)
                more, handshakes = await open_sockets(port, target - len(probes), len(probes))
                elapsed = time.perf_counter() - started
                cpu_per_connect = (_cpu(pid) - cpu_before) / len(more) * 1e6
                connecting += elapsed
                probes += more
                await asyncio.sleep(0.5)
                per_socket = (_rss(pid) - baseline) / len(probes) / 1024
                idle_rows.append(
                    (implementation, len(probes), sum(not p.closed for p in probes),
                     per_socket, connecting, _percentile(handshakes, 0.99) * 1000,
                     cpu_per_connect)
                )  # fmt: skip
                if target == 1000:
                    rates = RATES if main else (COMPARE_RATE,)
                    for rate in rates:
                        step = await publish_step(redis_url, probes, rate, load_core)
                        (fanout_rows if main else compare_rows).append((implementation, step))
                        if main and rate == COMPARE_RATE:
                            compare_rows.append((implementation, step))
            for probe in probes:
                probe.close()
            await asyncio.sleep(0.5)

    print(f"\nserver: one gateway process on core {server_core}; "
          f"load generator, publisher and Redis on core {load_core}")  # fmt: skip
    print("\nIdle sockets (subscribed to `alerts`, no traffic)")
    print(
        f"{'implementation':<18} {'sockets':>8} {'open':>8} {'KiB/socket':>11} "
        f"{'connect s':>10} {'handshake p99 ms':>17} {'CPU us/connect':>15}"
    )
    print(f"(connect s: time to open all sockets so far, {IN_FLIGHT} handshakes in flight; "
          "CPU: the gateway's user+system time per socket opened in that step)")  # fmt: skip
    for impl, count, alive, per_socket, elapsed, p99, cpu in idle_rows:
        print(f"{impl:<18} {count:>8} {alive:>8} {per_socket:>11.1f} {elapsed:>10.2f} "
              f"{p99:>17.1f} {cpu:>15.0f}")  # fmt: skip

    print(f"\nFan-out to 1,000 sockets on one channel ({IMPLEMENTATIONS[0]}, "
          f"{STEP_SECONDS:g} s steps)")  # fmt: skip
    header = (f"{'msg/s':>6} {'published':>9} {'deliveries/s':>13} {'lost':>6} {'closed':>6} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")  # fmt: skip
    print(header)
    crossing = None
    for _, s in fanout_rows:
        print(f"{s.rate:>6} {s.published:>9} {s.delivered_per_second:>13.0f} {s.lost:>6} "
              f"{s.closed:>6} {s.p50_ms:>7.1f} {s.p95_ms:>7.1f} {s.p99_ms:>7.1f}")  # fmt: skip
        if crossing is None and s.p99_ms > 100:
            crossing = s.rate
    print("p99 crosses 100 ms at:",
          f"{crossing} msg/s" if crossing else f"not within {RATES[-1]} msg/s")  # fmt: skip

    print(f"\nImplementations at {COMPARE_RATE} msg/s to 1,000 sockets")
    print(f"{'implementation':<18} {'deliveries/s':>13} {'lost':>6} {'p50 ms':>7} {'p99 ms':>7}")
    for impl, s in compare_rows:
        print(f"{impl:<18} {s.delivered_per_second:>13.0f} {s.lost:>6} {s.p50_ms:>7.1f} "
              f"{s.p99_ms:>7.1f}")  # fmt: skip


async def connect_runs(redis_url: str, server_core: int) -> None:
    """10,000 sockets with their own tokens plus a subscribe, into a fresh gateway, 3 times."""
    _tokens(CONNECT_SOCKETS)
    rows = []
    load = os.getpid()
    for _ in range(CONNECT_RUNS):
        with gateway(redis_url, IMPLEMENTATIONS[0], server_core) as (port, pid):
            cpu_before, load_before = _cpu(pid), _cpu(load)
            started = time.perf_counter()
            probes, handshakes = await open_sockets(port, CONNECT_SOCKETS)
            elapsed = time.perf_counter() - started
            rows.append(
                (elapsed, _cpu(pid) - cpu_before, _cpu(load) - load_before,
                 _percentile(handshakes, 0.99))
            )  # fmt: skip
            for probe in probes:
                probe.close()
            await asyncio.sleep(0.5)
    print(f"\nConnect: {CONNECT_SOCKETS:,} sockets, own token and a subscribe each, "
          f"{IN_FLIGHT} handshakes in flight, fresh gateway per run")  # fmt: skip
    print(f"{'run':>4} {'seconds':>8} {'gateway CPU s':>14} {'load CPU s':>11} "
          f"{'handshake p99 ms':>17}")  # fmt: skip
    for run_number, (elapsed, cpu, load_cpu, p99) in enumerate(rows, 1):
        print(f"{run_number:>4} {elapsed:>8.2f} {cpu:>14.2f} {load_cpu:>11.2f} "
              f"{p99 * 1000:>17.1f}")  # fmt: skip


def main() -> None:
    with socket_bench_layout() as (redis_server, server_core, load_core):
        if ONLY != "connect":
            run_load(run(redis_server.url, server_core, load_core))
        run_load(connect_runs(redis_server.url, server_core))


if __name__ == "__main__":
    main()
