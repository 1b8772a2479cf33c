"""Ingest throughput and latency, side by side with a real Alertmanager on the same machine.

Starts a private Redis-compatible server, one ingest process (uvicorn, one worker)
and, when the Debian `prometheus-alertmanager` is on PATH, one Alertmanager with a
receiver that sends nothing. A small HTTP/1.1 keep-alive load generator on uvloop
then drives, on loopback only:

- closed loop (as fast as answers come): alerts accepted per second one per
  request and in batches of 100, with p50/p99 response time, against ingest's
  `POST /v1/alerts` and Alertmanager's `POST /api/v2/alerts`;
- open loop at fixed rates: 1,000 and 5,000 requests/s of 1 alert (Alertmanager
  too), and 350 requests/s of 100 (half of the issue's 70k alerts/s): p50/p99
  measured from each request's scheduled send time, so a stall is not hidden by
  the generator waiting for it.

It ends with the ratio of the two servers' alerts per CPU-second, one alert per
request.

Ingest runs with the rate limit and the backlog bound out of the way, and the
queue is emptied between runs; a 2xx answer means the message is in Redis.
The server measured is pinned to one core, Redis and the generator to the other;
each run is repeated and its best kept, since other work on a shared machine only
ever slows a run down. Figures are still a floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from tests.support import wait_until_serving
from tocsin.client.devserver import RedisServer, free_port, stop_process
from tocsin.common import keys
from tocsin.common.apikeys import ApiKeyStore

DURATION = float(os.environ.get("BENCH_INGEST_SECONDS", "2"))
# Each run is repeated and the best kept: the machine is shared, and other work
# landing on it only ever makes a run slower.
REPEATS = int(os.environ.get("BENCH_INGEST_REPEATS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_INGEST_CONNECTIONS", "32"))
# Open-loop rates in requests/s: the p50 points for one alert per request
# (1,000 and 5,000, also run against Alertmanager), and half of 70k alerts/s in batches.
FIXED_RATES = {1: (1_000.0, 5_000.0), 100: (350.0,)}


@dataclass
class Result:
    """One run's figures."""

    ok: int = 0
    failed: int = 0
    alerts: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # CPU seconds the server measured spent during the run

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def _alert_native(i: int) -> dict[str, object]:
    return {"name": "BenchAlert", "severity": "warning", "service": "bench",
            "labels": {"instance": f"host-{i}", "job": "bench"},
            "annotations": {"summary": "benchmark alert"}}  # fmt: skip


def _alert_am(i: int) -> dict[str, object]:
    return {"labels": {"alertname": "BenchAlert", "severity": "warning",
                       "instance": f"host-{i}", "job": "bench"},
            "annotations": {"summary": "benchmark alert"},
            "startsAt": datetime.now(UTC).isoformat()}  # fmt: skip


def _requests(path: str, auth: str, batch: int, alertmanager: bool) -> list[bytes]:
    """A pool of ready-to-send requests, each with different alerts."""
    pool = []
    for n in range(64):
        make = _alert_am if alertmanager else _alert_native
        alerts = [make(n * batch + i) for i in range(batch)]
        body = json.dumps(alerts if (batch > 1 or alertmanager) else alerts[0]).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"{auth}Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        pool.append(head.encode() + body)
    return pool


class _Answers:
    """Splits a stream of HTTP/1.1 answers into statuses, without copying it more than once."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[int]:
        """The statuses of the answers completed by `data`."""
        buffer = self._buffer
        buffer += data
        statuses = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buffer[:end]).lower()
            body = end + 4
            marker = head.find(b"content-length:")
            if marker >= 0:
                stop = head.find(b"\r\n", marker)
                done = body + int(head[marker + 15 : stop if stop >= 0 else len(head)])
            elif b"transfer-encoding: chunked" in head:
                done = self._chunked_end(body)
            else:
                done = body
            if done < 0 or done > len(buffer):
                break
            statuses.append(int(head[9:12]))
            del buffer[:done]
        return statuses

    def _chunked_end(self, at: int) -> int:
        """Where a chunked body starting at `at` ends, or -1 while incomplete."""
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                return -1
            size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
            at = line_end + 2 + size + 2
            if size == 0:
                return at
            if at > len(buffer):
                return -1


class _Client(asyncio.Protocol):
    """One keep-alive connection, one request in flight, driven by callbacks.

    A protocol rather than streams: the generator shares a core with Redis, and
    waking a coroutine per answer cost it more than the server spent per request.
    """

    def __init__(self, driver: _Driver, index: int) -> None:
        self._driver = driver
        self._answers = _Answers()
        self._transport: asyncio.Transport | None = None
        self._next = index
        self._scheduled = 0.0
        self._sent_at = 0.0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def start(self) -> None:
        """Begin sending; open-loop connections are staggered over one interval."""
        driver = self._driver
        self._scheduled = driver.started + self._next * driver.interval / CONNECTIONS
        self._send_next()

    def _send_next(self) -> None:
        driver = self._driver
        now = time.perf_counter()
        if driver.interval:
            if self._scheduled > now:
                asyncio.get_running_loop().call_later(self._scheduled - now, self._send_next)
                return
            send_time = self._scheduled
            self._scheduled += driver.interval
        else:
            send_time = now
        if send_time >= driver.stop_at:
            self._finish()
            return
        assert self._transport is not None
        self._transport.write(driver.pool[self._next % len(driver.pool)])
        self._next += CONNECTIONS
        self._sent_at = send_time

    def data_received(self, data: bytes) -> None:
        statuses = self._answers.feed(data)
        if not statuses:
            return
        now = time.perf_counter()
        for status in statuses:
            self._driver.record(status, now - self._sent_at)
        self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        if self._transport is not None:
            self._transport.close()


class _Driver:
    """What the connections of one run share: the requests, the schedule, the result."""

    def __init__(self, pool: list[bytes], batch: int, duration: float, rate: float | None):
        self.pool = pool
        self.batch = batch
        self.interval = CONNECTIONS / rate if rate else 0.0
        self.duration = duration
        self.result = Result()
        self.started = self.stop_at = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()
        self.stop_at = self.started + self.duration

    def record(self, status: int, latency: float) -> None:
        result = self.result
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            result.ok += 1
            result.alerts += self.batch
            result.latencies.append(latency)
        else:
            result.failed += 1


async def _drive(
    port: int, pool: list[bytes], batch: int, duration: float, rate: float | None
) -> Result:
    """Closed loop when `rate` is None; else open loop at `rate` requests/s in total."""
    loop = asyncio.get_running_loop()
    driver = _Driver(pool, batch, duration, rate)
    clients: list[_Client] = []
    for index in range(CONNECTIONS):
        _, client = await loop.create_connection(
            functools.partial(_Client, driver, index), "127.0.0.1", port
        )
        clients.append(client)
    driver.start()
    for client in clients:
        client.start()
    await asyncio.gather(*(client.finished for client in clients))
    driver.result.elapsed = time.perf_counter() - driver.started
    return driver.result


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(
    server: int, port: int, pool: list[bytes], batch: int, rate: float | None = None
) -> Result:
    runner: Callable[[Coroutine[Any, Any, Result]], Result]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # the plain loop still works, only slower
        runner = asyncio.run
    cpu = _cpu_seconds(server)
    result = runner(_drive(port, pool, batch, DURATION, rate))
    result.server_cpu = _cpu_seconds(server) - cpu
    return result


def _best(
    server: int, port: int, pool: list[bytes], batch: int, rate: float | None = None
) -> Result:
    """The best of `REPEATS` runs: highest throughput, or at a fixed rate the lowest p99."""
    results = [_run(server, port, pool, batch, rate) for _ in range(REPEATS)]
    if rate is None:
        return max(results, key=lambda r: r.alerts / r.elapsed)
    return min(results, key=lambda r: r.percentile(99))


# The cores this benchmark may use, taken before it pins itself: asked later, this
# process would answer with the one core it pinned itself to, and every server
# started after that would inherit it -- all of them on one core.
_CORES = sorted(os.sched_getaffinity(0))


def _pin(pid: int, cpu: int) -> None:
    """Keep a server on one core (the issue's "one process on one core"), when there are two."""
    if len(_CORES) >= 2:
        os.sched_setaffinity(pid, {_CORES[cpu % len(_CORES)]})


@contextlib.contextmanager
def _process(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        yield process
    finally:
        stop_process(process)


@contextlib.contextmanager
def _alertmanager() -> Iterator[tuple[int, int] | None]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        print("prometheus-alertmanager not on PATH: no reference figures "
              "(apt-get install prometheus-alertmanager)")  # fmt: skip
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-am-") as workdir:
        config = Path(workdir) / "am.yml"
        config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
        port = free_port()
        args = [binary, f"--config.file={config}", f"--storage.path={workdir}/data",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                "--log.level=error"]  # fmt: skip
        # One core, as in the reference figures.
        with _process(args, dict(os.environ, GOMAXPROCS="1")) as process:
            wait_until_serving(f"http://127.0.0.1:{port}/-/ready", process)
            _pin(process.pid, 0)
            yield process.pid, port


def _row(label: str, result: Result) -> str:
    rate = result.alerts / result.elapsed if result.elapsed else 0.0
    requests = result.ok / result.elapsed if result.elapsed else 0.0
    # Alerts per CPU-second of the server: its capacity on one whole core, whatever
    # share of the core the machine's other work left it during the run.
    per_cpu = result.alerts / result.server_cpu if result.server_cpu else float("nan")
    failed = f"{result.failed}" + (f" {result.statuses}" if result.failed else "")
    return (f"{label:<44} {rate:>10,.0f} {requests:>8,.0f} {result.percentile(50):>7.2f} "
            f"{result.percentile(99):>7.2f} {per_cpu:>12,.0f}  {failed}")  # fmt: skip


def main() -> None:
    print(f"best of {REPEATS} runs of {DURATION:.0f} s, {CONNECTIONS} keep-alive connections, "
          "loopback; server measured on core 0, Redis and generator on core 1")  # fmt: skip
    header = (f"{'run':<44} {'alerts/s':>10} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'alerts/CPU-s':>12}  failed")  # fmt: skip
    rows: list[str] = []
    single: dict[str, Result] = {}  # the closed-loop runs of one alert per request
    with RedisServer() as server:
        # The generator and Redis share the other core; the servers measured get one each.
        if server.pid is not None:
            _pin(server.pid, 1)
        _pin(os.getpid(), 1)
        client = redis.Redis.from_url(server.url)
        key, _ = ApiKeyStore(client).create("bench")
        auth = f"Authorization: Bearer {key}\r\n"
        port = free_port()
        env = dict(os.environ, REDIS_URL=server.url, TOCSIN_PORT=str(port),
                   TOCSIN_LOG_LEVEL="WARNING", TOCSIN_RATE_PER_SECOND="0",
                   TOCSIN_MAX_BACKLOG="1000000000")  # fmt: skip
        queue = f"{keys.DRAMATIQ_NAMESPACE}:alerts"
        with _process([sys.executable, "-m", "tocsin.client", "ingest"], env) as ingest:
            wait_until_serving(f"http://127.0.0.1:{port}/readyz", ingest)
            _pin(ingest.pid, 0)
            for batch in (1, 100):
                pool = _requests("/v1/alerts", auth, batch, alertmanager=False)
                _run(ingest.pid, port, pool, batch, rate=200.0)  # warm-up: connections, caches
                client.delete(queue, f"{queue}.msgs")
                best = _best(ingest.pid, port, pool, batch)
                rows.append(_row(f"tocsin ingest, batch {batch}, max", best))
                if batch == 1:
                    single["tocsin ingest"] = best
                client.delete(queue, f"{queue}.msgs")
                for rate in FIXED_RATES[batch]:
                    result = _best(ingest.pid, port, pool, batch, rate=rate)
                    rows.append(_row(f"tocsin ingest, batch {batch}, at {rate * batch:,.0f} "
                                     "alerts/s", result))  # fmt: skip
                    client.delete(queue, f"{queue}.msgs")
        with _alertmanager() as alertmanager:
            if alertmanager is not None:
                am_pid, am_port = alertmanager
                for batch in (1, 100):
                    pool = _requests("/api/v2/alerts", "", batch, alertmanager=True)
                    _run(am_pid, am_port, pool, batch, rate=200.0)
                    best = _best(am_pid, am_port, pool, batch)
                    rows.append(_row(f"alertmanager 0.25 /api/v2/alerts, batch {batch}, max", best))
                    if batch == 1:
                        single["alertmanager"] = best
                        for rate in FIXED_RATES[1]:
                            fixed = _best(am_pid, am_port, pool, 1, rate=rate)
                            rows.append(_row(f"alertmanager 0.25, batch 1, at {rate:,.0f} alerts/s",
                                             fixed))  # fmt: skip
    print(header)
    for row in rows:
        print(row)
    per_cpu = {name: r.alerts / r.server_cpu for name, r in single.items() if r.server_cpu}
    if len(per_cpu) == 2:
        ours, theirs = per_cpu["tocsin ingest"], per_cpu["alertmanager"]
        print(f"one alert per request, alerts per CPU-second: tocsin {ours:,.0f}, "
              f"alertmanager {theirs:,.0f}: {ours / theirs:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
