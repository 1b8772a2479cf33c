"""End-to-end benchmark: ingest receipt to gateway socket write (loopback, about a minute).

Starts a private Redis-compatible server and ingest, processor and gateway as
real processes, opens WebSocket clients subscribed to `alerts`, and posts
alerts one per request at fixed rates (an open loop on a monotonic schedule over
keep-alive connections). For each step it reports, measured at the clients,
p50/p95/p99/max of (socket receive time - the event's `received_at`, which is
ingest's receipt time), the events lost and duplicated, and the gateway's own
`tocsin_e2e_latency_seconds` histogram over the step (upper bucket bounds).

Layout (printed): Redis and the processor share one core, ingest and the
gateway the other; the load generator runs on the processor's core unless told.
The services' span exporting processes (tracing on) may run on either core.

`BENCH_E2E_STEP_SECONDS` sets each step's length (default 6),
`BENCH_E2E_LOAD_CORE` where the load generator runs: `first` (default, with
Redis and the processor), `second` (with ingest and the gateway) or `any`. The services
inherit the environment, so `TOCSIN_*` settings given to the run apply.
`BENCH_E2E_TRACING=on` runs the services with tracing on, every span exported
over OTLP/HTTP to a sink: the processor's consumer path is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass, field

import httpx
import psutil
import redis

from tests.hostile import TEXT, client_frame, upgrade_request
from tests.load.bench_gateway import SUBSCRIBE_ALERTS
from tests.load.harness import SocketClient, otlp_sink, run_load, service, two_cores
from tocsin.client.devserver import RedisServer
from tocsin.client.devtoken import mint_token
from tocsin.common.apikeys import ApiKeyStore

SECRET = "bench-secret-for-the-end-to-end-benchmark-run"
STEP_SECONDS = float(os.environ.get("BENCH_E2E_STEP_SECONDS", "6"))
# (sockets, alerts per second) for each step, in order.
STEPS = ((10, 250), (10, 500), (10, 1000), (10, 1500), (100, 1000))
CONNECTIONS = 24  # keep-alive HTTP connections of the load generator
SEQ_MARK = b'"bench_seq":"'
EVENT_MARK = b'{"type":"event"'
SAMPLED = 10  # sockets per step that parse every event (the others only count them)
RECEIVED_MARK = b'"received_at":'


def _pin(pid: int, core: int) -> None:
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).cpu_affinity([core])


def _unpin_children(pid: int, cores: set[int]) -> None:
    """Let a service's child processes (its span exporter) run on any of `cores`.

    The pin is the benchmark's, not the service's: it stands in for a core the
    service would have to itself. The exporting child inherits it at start, but
    in production nothing pins a service and the scheduler places the child (at
    niceness 10) wherever there is room; kept on the service's core it queued
    behind the service and showed up as latency no deployment has. The child
    itself keeps whatever affinity it inherits: an operator's pin on a service
    rightly covers all of the service's processes.
    """
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            child.cpu_affinity(sorted(cores))


@dataclass
class Client(SocketClient):
    """A hand-made WebSocket client.

    A sampled client parses every frame and records sequence numbers and latency;
    the others only count event frames in the raw bytes, which keeps the load
    generator cheaper than the gateway it measures.
    """

    seen: dict[int, int] = field(default_factory=dict)  # sequence number -> times received
    latencies: list[float] = field(default_factory=list)
    events: int = 0
    _counting: bool = False
    _tail: bytes = b""
    _buffer: bytearray = field(default_factory=bytearray)
    _upgraded: bool = False

    def data_received(self, data: bytes) -> None:
        if self._counting:
            window = self._tail + data
            self.events += window.count(EVENT_MARK)
            self._tail = data[-(len(EVENT_MARK) - 1) :]
            return
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
            self._transport.write(client_frame(TEXT, SUBSCRIBE_ALERTS, mask=os.urandom(4)))
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
            if not self.sample and self.subscribed.done():
                self.events += buffer.count(EVENT_MARK)
                self._tail = bytes(buffer[-(len(EVENT_MARK) - 1) :])
                buffer.clear()
                self._counting = True
                return

    def _frame(self, payload: bytes, now: float) -> None:
        at = payload.find(SEQ_MARK)
        if at < 0:
            if not self.subscribed.done() and b'"subscribed"' in payload:
                self.subscribed.set_result(None)
            return
        if not self.sample:
            self.events += 1
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
    every = max(1, count // SAMPLED)  # sampled sockets spread over the connect order

    async def one(index: int) -> Client:
        request = upgrade_request(f"/ws?token={token}")
        _, client = await loop.create_connection(
            lambda: Client(request, sample=index % every == 0), "127.0.0.1", port
        )
        await asyncio.wait_for(client.subscribed, 10)
        return client

    return list(await asyncio.gather(*(one(index) for index in range(count))))


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


@dataclass
class Load:
    """What the generator saw of one step."""

    accepted: int = 0
    refused: int = 0
    worst_lag: float = 0.0  # s, a request's worst delay behind its schedule
    answers: list[float] = field(default_factory=list)  # s, request sent to answer read


async def drive(port: int, api_key: str, rate: int, first_seq: int) -> Load:
    """Post `rate * STEP_SECONDS` alerts at `rate`/s, one per request."""
    total = int(rate * STEP_SECONDS)
    started = time.monotonic() + 0.05
    load = Load()

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(index, total, CONNECTIONS):
                # Each request has its own due time on one schedule: no sleep drift.
                due = started + n / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    load.worst_lag = max(load.worst_lag, -delay)
                sent = time.monotonic()
                writer.write(_request(api_key, first_seq + n))
                status = await _read_answer(reader)
                load.answers.append(time.monotonic() - sent)
                if 200 <= status < 300:
                    load.accepted += 1
                else:
                    load.refused += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(CONNECTIONS)))
    return load


_BUCKET = re.compile(r'^(tocsin_\w+)_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
E2E = "tocsin_e2e_latency_seconds"
PUBLISH_TO_SEND = "tocsin_gateway_publish_to_send_seconds"


def gateway_histograms(url: str) -> dict[str, dict[float, float]]:
    """The gateway's end-to-end and publish-to-send histograms: bucket bound -> count."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found: dict[str, dict[float, float]] = {E2E: {}, PUBLISH_TO_SEND: {}}
    for name, le, count in _BUCKET.findall(text):
        if name in found:
            found[name][float(le)] = float(count)
    return found


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
    http_p99: float
    p50: float
    p95: float
    p99: float
    worst: float
    lost: int
    duplicates: int
    gw_p50: str
    gw_p99: str
    send_p99: str
    cpu: dict[str, float]


def _cpu_seconds(pid: int, *, with_children: bool) -> float:
    """CPU time of `pid`, and of its children when asked (a service's span exporter)."""
    process = psutil.Process(pid)
    total = 0.0
    for one in (process, *(process.children(recursive=True) if with_children else ())):
        with contextlib.suppress(psutil.Error):
            times = one.cpu_times()
            total += times.user + times.system
    return total


SERVICES = ("processor", "ingest", "gateway")


def _cpu(name: str, pid: int) -> float:
    # The load generator's children are the services and Redis themselves.
    return _cpu_seconds(pid, with_children=name in SERVICES)


def _exporters_cpu(pids: dict[str, int]) -> float:
    """CPU time of the services' span exporting processes alone (counted in each service)."""
    return sum(
        _cpu_seconds(pids[name], with_children=True) - _cpu_seconds(pids[name], with_children=False)
        for name in SERVICES
    )


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
            client.events = 0
        before = await asyncio.to_thread(gateway_histograms, gateway_url)
        cpu_before = {name: _cpu(name, pid) for name, pid in pids.items()}
        exporters_before = _exporters_cpu(pids)
        first = seq
        load = await drive(ingest_port, api_key, rate, seq)
        accepted = load.accepted
        seq += int(rate * STEP_SECONDS)
        cpu = {name: (_cpu(name, pid) - cpu_before[name]) / STEP_SECONDS
               for name, pid in pids.items()}  # fmt: skip
        cpu["(exporters)"] = (_exporters_cpu(pids) - exporters_before) / STEP_SECONDS
        # The tail: until every socket has every accepted alert, or 2 s of quiet.
        expected = accepted * len(clients)
        last, quiet_since = -1, time.monotonic()
        while True:
            got = sum(len(c.seen) + c.events for c in clients)
            if got >= expected or time.monotonic() - quiet_since > 2.0:
                break
            if got != last:
                last, quiet_since = got, time.monotonic()
            await asyncio.sleep(0.02)
        after = await asyncio.to_thread(gateway_histograms, gateway_url)
        latencies = [x for c in clients for x in c.latencies]
        received = sum(1 for c in clients for s in c.seen if s >= first)
        received += sum(min(c.events, accepted) for c in clients if not c.sample)
        rows.append(
            Row(
                sockets=len(clients),
                rate=rate,
                accepted=accepted,
                refused=load.refused,
                lag_ms=load.worst_lag * 1000,
                http_p99=_percentile(load.answers, 0.99),
                p50=_percentile(latencies, 0.50),
                p95=_percentile(latencies, 0.95),
                p99=_percentile(latencies, 0.99),
                worst=max(latencies, default=float("nan")) * 1000,
                lost=max(0, expected - received),
                duplicates=sum(n - 1 for c in clients for n in c.seen.values()),
                gw_p50=histogram_quantile(before[E2E], after[E2E], 0.50),
                gw_p99=histogram_quantile(before[E2E], after[E2E], 0.99),
                send_p99=histogram_quantile(before[PUBLISH_TO_SEND], after[PUBLISH_TO_SEND], 0.99),
                cpu=cpu,
            )
        )
    for client in clients:
        client.close()
    return rows


def main() -> None:
    first_core, second_core = two_cores()
    bench_cores = {first_core, second_core}
    settings = {name: value for name, value in os.environ.items() if name.startswith("TOCSIN_")}
    placement = os.environ.get("BENCH_E2E_LOAD_CORE", "first")
    load_cores = {"first": {first_core}, "second": {second_core}}.get(placement, bench_cores)
    os.sched_setaffinity(0, load_cores)
    tracing_on = os.environ.get("BENCH_E2E_TRACING", "off") == "on"
    with (
        otlp_sink() if tracing_on else contextlib.nullcontext({}) as tracing,
        RedisServer() as server,
    ):
        os.environ.update(tracing)  # the services inherit it
        if server.pid is not None:
            _pin(server.pid, first_core)
        api_key, _ = ApiKeyStore(redis.Redis.from_url(server.url)).create("bench-e2e")
        with (
            service("processor", server.url, secret=SECRET, core=first_core) as (_, processor),
            service(
                "ingest", server.url, secret=SECRET, core=second_core,
                TOCSIN_RATE_PER_SECOND="0", TOCSIN_MAX_BACKLOG="1000000",
            ) as (ingest_url, ingest),
            service(
                "gateway", server.url, secret=SECRET, core=second_core,
                TOCSIN_HEARTBEAT_INTERVAL="3600",  # the hand-made clients answer no pings
            ) as (gateway_url, gateway),
        ):  # fmt: skip
            pids = {"redis": server.pid or 0, "processor": processor, "ingest": ingest,
                    "gateway": gateway, "load": os.getpid()}  # fmt: skip
            for name in SERVICES:
                _unpin_children(pids[name], bench_cores)
            rows = run_load(run(ingest_url, gateway_url, api_key, pids))
        for name in tracing:
            os.environ.pop(name, None)
    print(
        f"\nlayout: Redis and processor on core {first_core}; ingest and gateway on core "
        f"{second_core}; load generator on core(s) {sorted(load_cores)}; "
        f"{STEP_SECONDS:g} s per step, {CONNECTIONS} keep-alive connections, one alert per request"
    )
    print(f"settings given: {settings or 'defaults'}; tracing {'on' if tracing_on else 'off'}")
    print("latency = client receive time - ingest receipt (`received_at`), in ms;")
    print("gw = the gateway's tocsin_e2e_latency_seconds over the step (bucket bound, ms);")
    print("send = its tocsin_gateway_publish_to_send_seconds (pub/sub arrival to first send)")
    print(
        f"{'sockets':>7} {'alerts/s':>8} {'accepted':>8} {'refused':>7} {'lag ms':>7} "
        f"{'http p99':>8} "
        f"{'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'lost':>6} {'dup':>4} "
        f"{'gw p50':>7} {'gw p99':>7} {'send p99':>8}"
    )
    for r in rows:
        print(
            f"{r.sockets:>7} {r.rate:>8} {r.accepted:>8} {r.refused:>7} {r.lag_ms:>7.1f} "
            f"{r.http_p99:>8.1f} "
            f"{r.p50:>7.1f} {r.p95:>7.1f} {r.p99:>7.1f} {r.worst:>7.1f} {r.lost:>6} "
            f"{r.duplicates:>4} {r.gw_p50:>7} {r.gw_p99:>7} {r.send_p99:>8}"
        )
    print("(lag ms: worst delay of a request behind its schedule, from the generator;")
    print(" http p99: ingest's answer time, the enqueue included, seen by the generator;")
    print(f" latency and dup from {SAMPLED} sampled sockets, lost from all)")
    print("\nCPU use during each step, in cores (1.0 = one core busy; a service's span")
    print("exporting process, with tracing on, counts as the service's; it is not pinned;")
    print("(exporters) is the three services' exporting processes alone)")
    names = list(rows[0].cpu) if rows else []
    print(f"{'sockets':>7} {'alerts/s':>8} " + " ".join(f"{n:>9}" for n in names))
    for r in rows:
        print(f"{r.sockets:>7} {r.rate:>8} " + " ".join(f"{r.cpu[n]:>9.2f}" for n in names))


if __name__ == "__main__":
    main()
