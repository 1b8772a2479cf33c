"""Notifier throughput and latency through the webhook receiver, one worker process.

Starts a private Redis-compatible server, a local HTTP/1.1 keep-alive receiver
on loopback and one notifier process (8 worker threads), then enqueues
`deliver_notification` messages as the processor does, each alert in its own
group (`group_wait: 1ms`), so every message becomes one webhook POST:

- paced: a steady rate for a few seconds; p50/p99 from the processor's enqueue
  (the request's `at`) to the receiver's arrival;
- burst: N messages queued while no notifier runs, then one notifier drains
  them; notifications/s from the first arrival to the last.

Each notification is three queue hops (accept, flush, send) plus the claim, so
the figure is the whole pipeline, not just the HTTP send. The load generator
and receiver share the machine with the notifier: figures are a floor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tocsin.client.devserver import RedisServer, free_port
from tocsin.common import broker as queues
from tocsin.common.models import NotificationRequest, StoredAlert

BURST = int(os.environ.get("BENCH_NOTIFIER_BURST", "2000"))
PACED_RATE = float(os.environ.get("BENCH_NOTIFIER_RATE", "100"))
PACED_SECONDS = float(os.environ.get("BENCH_NOTIFIER_SECONDS", "5"))


class Arrivals:
    """What the receiver saw: arrival time and the notification's enqueue time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[float, float, str]] = []

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for _, _, name in self.items if name.startswith(prefix))


def start_receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            now = time.time()
            data = json.loads(body)
            with arrivals.lock:
                arrivals.items.append(
                    (now, data["enqueued_at"], data["alerts"][0]["alert"]["name"])
                )
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def request(name: str) -> dict[str, Any]:
    alert = StoredAlert(
        id=name,
        fingerprint=name,
        name=name,
        severity="warning",
        status="firing",
        source="bench",
        service="bench",
        summary="",
        labels={},
        annotations={},
        producer="bench",
        count=1,
        first_seen="",
        last_seen="",
    )
    built: dict[str, Any] = msgspec.to_builtins(
        NotificationRequest(id=f"{name}:firing", transition="firing", alert=alert, at=time.time())
    )
    return built


def wait_for(arrivals: Arrivals, prefix: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if arrivals.count(prefix) >= count:
            return True
        time.sleep(0.02)
    return False


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_put_backs(port: int) -> float:
    """Sends the notifier put back because their receiver was busy (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tocsin_notifier_receiver_busy_total")
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def main() -> None:
    arrivals = Arrivals()
    receiver = start_receiver(arrivals)
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    workdir = Path(tempfile.mkdtemp(prefix="tocsin-bench-notifier-"))
    routes = workdir / "routes.yaml"
    routes.write_text(f"""
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1ms
  group_interval: 1h
receivers:
  - {{name: hook, type: webhook, url: "{url}", secret: bench-secret}}
""")
    with RedisServer() as server:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "TOCSIN_PORT": str(port),
            "TOCSIN_ROUTES_FILE": str(routes),
            "TOCSIN_LOG_LEVEL": "WARNING",
        }
        log = (workdir / "notifier.log").open("wb")

        def start_notifier() -> subprocess.Popen[bytes]:
            process = subprocess.Popen(
                [sys.executable, "-m", "tocsin.client", "notifier"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            return process

        broker = queues.build_broker(server.url, queues=(queues.NOTIFICATIONS_QUEUE,))

        def enqueue(name: str) -> None:
            message = queues.build_message(
                queues.NOTIFICATIONS_QUEUE, queues.DELIVER_NOTIFICATION_ACTOR, (request(name),)
            )
            broker.enqueue(message)

        notifier = start_notifier()
        try:
            # Warm-up: connections, first imports.
            for index in range(50):
                enqueue(f"warm-{index}")
            wait_for(arrivals, "warm-", 50, 30)

            interval = 1 / PACED_RATE
            total = int(PACED_RATE * PACED_SECONDS)
            begin = time.perf_counter()
            for index in range(total):
                while time.perf_counter() < begin + index * interval:
                    time.sleep(interval / 4)
                enqueue(f"paced-{index}")
            wait_for(arrivals, "paced-", total, 30)
            with arrivals.lock:
                paced = [
                    arrival - at
                    for arrival, at, name in arrivals.items
                    if name.startswith("paced-")
                ]
            # Burst: the queue is filled while no notifier runs, then one drains it, so
            # the rate is the notifier's and not the load generator's.
            notifier.terminate()
            notifier.wait(30)
            for index in range(BURST):
                enqueue(f"burst-{index}")
            notifier = start_notifier()
            cpu_at_ready = cpu_seconds(notifier.pid)
            redis_at_ready = cpu_seconds(server.pid or 0)
            complete = wait_for(arrivals, "burst-", BURST, 60)
            burst_cpu = cpu_seconds(notifier.pid) - cpu_at_ready
            redis_cpu = cpu_seconds(server.pid or 0) - redis_at_ready
            busy = busy_put_backs(port)
            with arrivals.lock:
                burst = [item for item in arrivals.items if item[2].startswith("burst-")]
            times = [arrival for arrival, _, _ in burst]
            rate = len(burst) / max(1e-9, max(times) - min(times))
        finally:
            notifier.terminate()
            notifier.wait(30)
            receiver.shutdown()
    print(f"{'run':<34}{'notifications':>14}{'per second':>12}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'burst (drain a full queue)':<34}{len(burst):>14}{rate:>12.0f}{'-':>9}{'-':>9}")
    print(
        f"{f'paced at {PACED_RATE:.0f}/s for {PACED_SECONDS:.0f}s':<34}{len(paced):>14}"
        f"{len(paced) / PACED_SECONDS:>12.0f}{percentile(paced, 50) * 1000:>9.1f}"
        f"{percentile(paced, 99) * 1000:>9.1f}"
    )
    print(
        f"(burst of {BURST}, complete={complete}; "
        "latency = processor enqueue -> receiver arrival, one notifier process, 8 threads)"
    )
    print(
        f"burst: notifier CPU {burst_cpu * 1000 / max(1, len(burst)):.2f} ms per notification, "
        f"Redis CPU {redis_cpu * 1000 / max(1, len(burst)):.2f} ms, "
        f"{busy / max(1, len(burst)):.2f} busy put-backs per notification"
    )


if __name__ == "__main__":
    main()
