"""End-to-end benchmark: ingest receipt to gateway socket write (loopback, about a minute).

Starts a private Redis-compatible server and ingest, processor and gateway as
real processes, opens WebSocket clients subscribed to `alerts`, and posts
alerts one per request at fixed rates (an open loop on a monotonic schedule over
keep-alive connections). For each step it reports, measured at the clients,
p50/p95/p99/max of (socket receive time - the event's `received_at`, which is
ingest's receipt time), the events lost and duplicated, and the gateway's own
`tocsin_e2e_latency_seconds` histogram over the step (upper bucket bounds).

Layout (printed): Redis and the processor share one core, ingest and the
gateway the other; the load generator runs on the processor's core.

`BENCH_E2E_STEP_SECONDS` sets each step's length (default 6),
`BENCH_E2E_IDLE_POLL_MS` the processor's idle poll (default: its own default),
`BENCH_E2E_WAKE` "0" turns the processor's wake-up signal off (default on).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import httpx
import psutil
import redis

from tocsin.common.apikeys import ApiKeyStore
from tocsin.common.auth import mint_token
from tocsin.common.server import RedisServer, free_port

SECRET = "bench-secret-for-the-end-to-end-benchmark-run"
STEP_SECONDS = float(os.environ.get("BENCH_E2E_STEP_SECONDS", "6"))
# (sockets, alerts per second) for each step, in order.
STEPS = ((10, 250), (10, 500), (10, 1000), (10, 1500), (100, 1000))
CONNECTIONS = 24  # keep-alive HTTP connections of the load generator
SEQ_MARK = b'"bench_seq":"'
RECEIVED_MARK = b'"received_at":'


def _cores() -> tuple[int, int]:
    available = sorted(os.sched_getaffinity(0))
    return (available[0], available[1]) if len(available) > 1 else (available[0], available[0])


def _pin(pid: int, core: int) -> None:
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).cpu_affinity([core])


@contextlib.contextmanager
def service(name: str, redis_url: str, core: int, **env: str) -> Iterator[tuple[str, int]]:
    """A Tocsin service process pinned to `core`; yields its URL and pid."""
    port = free_port()
    environ = dict(os.environ)
    environ.update(
        REDIS_URL=redis_url,
        TOCSIN_PORT=str(port),
        TOCSIN_JWT_SECRET=SECRET,
        TOCSIN_LOG_LEVEL="WARNING",
        **env,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tocsin.client", name],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.05)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _mask(text: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(text))
    return bytes([0x81, 0x80 | len(text)]) + mask + masked


@dataclass
class Client(asyncio.Protocol):
    """A hand-made WebSocket client: parses frames, records sequence numbers and latency."""

    request: bytes
    subscribed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    seen: dict[int, int] = field(default_factory=dict)  # sequence number -> times received
    latencies: list[float] = field(default_factory=list)
    closed: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _upgraded: bool = False
    _transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError("closed before subscribing"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            del buffer[: end + 4]
            self._upgraded = True
            assert self._transport is not None
            self._transport.write(_mask(b'{"type":"subscribe","channel":"alerts"}'))
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(payload, now)

    def _frame(self, payload: bytes, now: float) -> None:
        at = payload.find(SEQ_MARK)
        if at < 0:
            if not self.subscribed.done() and b'"subscribed"' in payload:
                self.subscribed.set_result(None)
            return
        at += len(SEQ_MARK)
        seq = int(payload[at : payload.index(b'"', at)])
        self.seen[seq] = self.seen.get(seq, 0) + 1
        at = payload.find(RECEIVED_MARK)
        if at >= 0:
            at += len(RECEIVED_MARK)
            end = at
            while payload[end] not in b",}":
                end += 1
            self.latencies.append(now - float(payload[at:end]))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_clients(port: int, count: int) -> list[Client]:
    loop = asyncio.get_running_loop()
    token = mint_token(SECRET, "bench", ttl=3600)

    async def one() -> Client:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        _, client = await loop.create_connection(lambda: Client(request), "127.0.0.1", port)
        await asyncio.wait_for(client.subscribed, 10)
        return client

    return list(await asyncio.gather(*(one() for _ in range(count))))


def _request(api_key: str, seq: int) -> bytes:
    # A distinct dedup key per alert: every one is a creation, published once.
    body = (
        '{"name":"BenchE2E","severity":"warning","service":"bench",'
        f'"dedup_key":"e2e-{seq}","labels":{{"bench_seq":"{seq}"}}}}'
    ).encode()
    head = (
        "POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lowered = head.lower()
    marker = lowered.find(b"content-length:")
    if marker >= 0:
        length = int(lowered[marker + 15 : lowered.index(b"\r\n", marker)])
        if length:
            await reader.readexactly(length)
    return int(head[9:12])


async def drive(port: int, api_key: str, rate: int, first_seq: int) -> tuple[int, int, float]:
    """Post `rate * STEP_SECONDS` alerts at `rate`/s; returns (accepted, refused, worst lag s)."""
    total = int(rate * STEP_SECONDS)
    started = time.monotonic() + 0.05
    accepted = refused = 0
    worst_lag = 0.0

    async def connection(index: int) -> None:
        nonlocal accepted, refused, worst_lag
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(index, total, CONNECTIONS):
                # Each request has its own due time on one schedule: no sleep drift.
                due = started + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    worst_lag = max(worst_lag, -delay)
                writer.write(_request(api_key, first_seq + n))
                status = await _read_answer(reader)
                if 200 <= status < 300:
                    accepted += 1
                else:
                    refused += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(CONNECTIONS)))
    return accepted, refused, worst_lag


_BUCKET = re.compile(r'^tocsin_e2e_latency_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


def gateway_histogram(url: str) -> dict[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {float(le): float(count) for le, count in _BUCKET.findall(text)}


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return "-"
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * counts[-1]:
            return f"<={bound * 1000:g}" if bound != float("inf") else ">5000"
    return "-"


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


@dataclass
class Row:
    sockets: int
    rate: int
    accepted: int
    refused: int
    lag_ms: float
    p50: float
    p95: float
    p99: float
    worst: float
    lost: int
    duplicates: int
    gw_p50: str
    gw_p99: str
    cpu: dict[str, float]


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def run(ingest_url: str, gateway_url: str, api_key: str, pids: dict[str, int]) -> list[Row]:
    ingest_port = int(ingest_url.rsplit(":", 1)[1])
    gateway_port = int(gateway_url.rsplit(":", 1)[1])
    rows: list[Row] = []
    clients: list[Client] = []
    seq = 0
    # Warm-up: connections, caches, first script loads.
    clients = await open_clients(gateway_port, 1)
    await drive(ingest_port, api_key, 200, seq)
    seq += int(200 * STEP_SECONDS)
    await asyncio.sleep(1)
    for sockets, rate in STEPS:
        if len(clients) != sockets:
            for client in clients:
                client.close()
            clients = await open_clients(gateway_port, sockets)
        for client in clients:
            client.seen.clear()
            client.latencies.clear()
        before = await asyncio.to_thread(gateway_histogram, gateway_url)
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        first = seq
        accepted, refused, lag = await drive(ingest_port, api_key, rate, seq)
        seq += int(rate * STEP_SECONDS)
        cpu = {name: (_cpu_seconds(pid) - cpu_before[name]) / STEP_SECONDS
               for name, pid in pids.items()}  # fmt: skip
        # The tail: until every socket has every accepted alert, or 2 s of quiet.
        expected = accepted * len(clients)
        last, quiet_since = -1, time.monotonic()
        while True:
            got = sum(len(c.seen) for c in clients)
            if got >= expected or time.monotonic() - quiet_since > 2.0:
                break
            if got != last:
                last, quiet_since = got, time.monotonic()
            await asyncio.sleep(0.02)
        after = await asyncio.to_thread(gateway_histogram, gateway_url)
        latencies = [x for c in clients for x in c.latencies]
        received = sum(1 for c in clients for s in c.seen if s >= first)
        rows.append(
            Row(
                sockets=len(clients),
                rate=rate,
                accepted=accepted,
                refused=refused,
                lag_ms=lag * 1000,
                p50=_percentile(latencies, 0.50),
                p95=_percentile(latencies, 0.95),
                p99=_percentile(latencies, 0.99),
                worst=max(latencies, default=float("nan")) * 1000,
                lost=max(0, expected - received),
                duplicates=sum(n - 1 for c in clients for n in c.seen.values()),
                gw_p50=histogram_quantile(before, after, 0.50),
                gw_p99=histogram_quantile(before, after, 0.99),
                cpu=cpu,
            )
        )
    for client in clients:
        client.close()
    return rows


def main() -> None:
    first_core, second_core = _cores()
    processor_env: dict[str, str] = {}
    if "BENCH_E2E_IDLE_POLL_MS" in os.environ:
        processor_env["TOCSIN_IDLE_POLL_MS"] = os.environ["BENCH_E2E_IDLE_POLL_MS"]
    if "BENCH_E2E_WAKE" in os.environ:
        processor_env["TOCSIN_QUEUE_WAKEUP"] = os.environ["BENCH_E2E_WAKE"]
    os.sched_setaffinity(0, {first_core})
    with RedisServer() as server:
        if server.pid is not None:
            _pin(server.pid, first_core)
        api_key, _ = ApiKeyStore(redis.Redis.from_url(server.url)).create("bench-e2e")
        with (
            service("processor", server.url, first_core, **processor_env) as (_, processor),
            service(
                "ingest", server.url, second_core,
                TOCSIN_RATE_PER_SECOND="0", TOCSIN_MAX_BACKLOG="1000000",
            ) as (ingest_url, ingest),
            service(
                "gateway", server.url, second_core,
                TOCSIN_HEARTBEAT_INTERVAL="3600",  # the hand-made clients answer no pings
            ) as (gateway_url, gateway),
        ):  # fmt: skip
            with contextlib.suppress(ImportError):
                import uvloop  # the load side must stay cheaper than what it measures

                asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            pids = {"redis": server.pid or 0, "processor": processor, "ingest": ingest,
                    "gateway": gateway, "load": os.getpid()}  # fmt: skip
            rows = asyncio.run(run(ingest_url, gateway_url, api_key, pids))
    print(
        f"\nlayout: Redis, processor and load generator on core {first_core}; "
        f"ingest and gateway on core {second_core}; {STEP_SECONDS:g} s per step, "
        f"{CONNECTIONS} keep-alive connections, one alert per request"
    )
    print(f"processor env: {processor_env or 'defaults'}")
    print("latency = client receive time - ingest receipt (`received_at`), in ms;")
    print("gw = the gateway's tocsin_e2e_latency_seconds over the step (bucket bound, ms)")
    print(
        f"{'sockets':>7} {'alerts/s':>8} {'accepted':>8} {'refused':>7} {'lag ms':>7} "
        f"{'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'lost':>6} {'dup':>4} "
        f"{'gw p50':>7} {'gw p99':>7}"
    )
    for r in rows:
        print(
            f"{r.sockets:>7} {r.rate:>8} {r.accepted:>8} {r.refused:>7} {r.lag_ms:>7.1f} "
            f"{r.p50:>7.1f} {r.p95:>7.1f} {r.p99:>7.1f} {r.worst:>7.1f} {r.lost:>6} "
            f"{r.duplicates:>4} {r.gw_p50:>7} {r.gw_p99:>7}"
        )
    print("(lag ms: worst delay of a request behind its schedule, from the generator)")
    print("\nCPU use during each step, in cores (1.0 = one core busy)")
    names = list(rows[0].cpu) if rows else []
    print(f"{'sockets':>7} {'alerts/s':>8} " + " ".join(f"{n:>9}" for n in names))
    for r in rows:
        print(f"{r.sockets:>7} {r.rate:>8} " + " ".join(f"{r.cpu[n]:>9.2f}" for n in names))


if __name__ == "__main__":
    main()
