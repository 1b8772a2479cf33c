"""Hostile-load benchmark: one gateway under 1,000 hostile sockets while honest clients
measure fan-out (loopback, about a minute).

One gateway process pinned to core 0; the attackers, the honest clients, the publisher,
the probe and the Redis-compatible server on core 1. Five kinds of hostile socket, an
equal share each, each reconnecting whenever the gateway closes it:

- read-ahead flood: authenticated, sends 60 KiB messages as fast as TCP lets it;
- ping flood: unauthenticated, sends pings and never reads (a 4 KiB receive window);
- never-reading subscribers: subscribed to `alerts`, never read after `subscribed`;
- unauthenticated upgrades: upgrade, then send nothing;
- slowloris: an HTTP request head, one byte a second.

Meanwhile honest sockets subscribed to `alerts` measure publish-to-receive latency at a
fixed publish rate, and a probe process asks `/healthz` every 20 ms on one keep-alive
connection: its slowest answer bounds the longest stall of the gateway's event loop (a
stall cannot be shorter than the answer that waited for it). Printed: the gateway's
peak RSS, honest p50/p99 and lost events, the probe's slowest answer, and how often each
kind of attacker was closed. Targets (issue 15): RSS < 256 MiB, honest p99 <= 50 ms, no
stall > 50 ms.

`BENCH_ABUSE_HOSTILE` (default 1000), `BENCH_ABUSE_HONEST` (200), `BENCH_ABUSE_RATE`
(100 msg/s) and `BENCH_ABUSE_SECONDS` (20) size a run; a smoke run:
`BENCH_ABUSE_HOSTILE=100 BENCH_ABUSE_SECONDS=5 make bench BENCH=abuse`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

from tests.hostile import PING, TEXT, client_frame, upgrade_request
from tests.load.bench_gateway import (
    SECRET,
    SUBSCRIBE_ALERTS,
    _cpu,
    _rss,
    open_sockets,
    publish_step,
)
from tests.load.harness import run_load, service, socket_bench_layout
from tocsin.client.devtoken import mint_token

HOSTILE = int(os.environ.get("BENCH_ABUSE_HOSTILE", "1000"))
HONEST = int(os.environ.get("BENCH_ABUSE_HONEST", "200"))
RATE = int(os.environ.get("BENCH_ABUSE_RATE", "100"))
SECONDS = float(os.environ.get("BENCH_ABUSE_SECONDS", "20"))
ALL_KINDS = ("read_ahead", "ping_flood", "never_reads", "unauthenticated", "slowloris")
# BENCH_ABUSE_KINDS=ping_flood,slowloris runs some kinds only (to see which one costs what).
KINDS = tuple(os.environ.get("BENCH_ABUSE_KINDS", ",".join(ALL_KINDS)).split(","))

PROBE = """
import http.client, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
connection = http.client.HTTPConnection(host, port, timeout=30)
latencies = []
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    started = time.perf_counter()
    connection.request("GET", "/healthz")
    connection.getresponse().read()
    latencies.append(time.perf_counter() - started)
    time.sleep(0.02)
latencies.sort()
print(latencies[-1], latencies[int(0.99 * (len(latencies) - 1))], len(latencies))
"""


READ_AHEAD_MESSAGE = client_frame(TEXT, b'{"type":"ping","pad":"' + b"x" * 60_000 + b'"}') * 4
PINGS = client_frame(PING, b"p" * 125) * 500
SUBSCRIBE = client_frame(TEXT, SUBSCRIBE_ALERTS, mask=os.urandom(4))


@dataclass
class Attack:
    """Counts, per kind, how many hostile connections were opened and closed by the gateway."""

    port: int
    tokens: list[str]
    opened: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    stop: bool = False


class Hostile(asyncio.Protocol):
    """One hostile connection of one kind; it reports its end to `done`."""

    def __init__(self, kind: str, attack: Attack, token: str) -> None:
        self.kind = kind
        self.attack = attack
        self.token = token
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.paused = False
        self.buffer = b""
        self.ticker: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.kind == "ping_flood":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if self.kind == "slowloris":
            self.transport.write(b"GET /healthz HTTP/1.1\r\n")
            self._tick()
            return
        query = f"?token={self.token}" if self.kind in ("read_ahead", "never_reads") else ""
        self.transport.write(upgrade_request(f"/ws{query}"))

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded:
            return  # read and dropped (those that never read pause below)
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        self.upgraded = True
        if self.kind == "never_reads":
            self.transport.write(SUBSCRIBE)
            # Stop reading once subscribed: the frames back up in the kernel buffers.
            asyncio.get_running_loop().call_later(0.5, self._stop_reading)
        elif self.kind == "ping_flood":
            self.transport.pause_reading()
            self._flood(PINGS)
        elif self.kind == "read_ahead":
            self._flood(READ_AHEAD_MESSAGE)

    def _stop_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def _flood(self, chunk: bytes) -> None:
        """One chunk per loop turn while the gateway takes them (the loop stays fair)."""
        transport = self.transport
        if transport is not None and not self.paused and not transport.is_closing():
            transport.write(chunk)
            asyncio.get_running_loop().call_soon(self._flood, chunk)

    def _tick(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"x")
            self.ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._flood(PINGS if self.kind == "ping_flood" else READ_AHEAD_MESSAGE)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def attacker(kind: str, index: int, attack: Attack, live: list[Hostile]) -> None:
    """Keep one hostile connection of `kind` open: reconnect whenever it is closed."""
    loop = asyncio.get_running_loop()
    while not attack.stop:
        try:
            _, hostile = await loop.create_connection(
                lambda: Hostile(kind, attack, attack.tokens[index % len(attack.tokens)]),
                "127.0.0.1",
                attack.port,
            )
        except OSError:
            await asyncio.sleep(0.1)
            continue
        attack.opened[kind] += 1
        live.append(hostile)
        await hostile.done
        live.remove(hostile)
        if not attack.stop:
            attack.closed[kind] += 1
            await asyncio.sleep(0.05)


async def run(redis_url: str, server_core: int, load_core: int) -> None:
    with service(
        "gateway",
        redis_url,
        secret=SECRET,
        core=server_core,
        TOCSIN_MAX_CONNECTIONS="20000",
        TOCSIN_DRAIN_WINDOW="0",
        TOCSIN_HEARTBEAT_INTERVAL="3600",  # the hand-made honest clients answer no pings
    ) as (url, pid):
        port = int(url.rsplit(":", 1)[1])
        baseline = _rss(pid)
        honest, _ = await open_sockets(port, HONEST)
        tokens = [mint_token(SECRET, f"hostile-{n}") for n in range(HOSTILE // len(KINDS) + 1)]
        attack = Attack(port, tokens)
        live: list[Hostile] = []
        attackers = [
            asyncio.create_task(attacker(KINDS[n % len(KINDS)], n // len(KINDS), attack, live))
            for n in range(HOSTILE)
        ]
        peak = baseline

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss(pid))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        await asyncio.sleep(min(5.0, SECONDS / 4))  # let the attack build up
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, "127.0.0.1", str(port), str(SECONDS),
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, {load_core}),
        )  # fmt: skip
        steps = []
        started = time.perf_counter()
        gateway_cpu, load_cpu = _cpu(pid), _cpu(os.getpid())
        while time.perf_counter() - started < SECONDS - 1:
            steps.append(await publish_step(redis_url, honest, RATE, load_core))
        out, _ = await probe.communicate()
        slowest, probe_p99, answers = out.decode().split()
        honest_closed = sum(p.closed for p in honest)
        elapsed = time.perf_counter() - started
        gateway_cpu = (_cpu(pid) - gateway_cpu) / elapsed * 100
        load_cpu = (_cpu(os.getpid()) - load_cpu) / elapsed * 100
        attack.stop = True
        sampler.cancel()
        for task in attackers:
            task.cancel()
        for hostile in list(live):
            hostile.close()
        for probe_socket in honest:
            probe_socket.close()
        await asyncio.sleep(0.5)

    # Each publish step measures its own percentiles (it resets the sockets' samples).
    p99s = [s.p99_ms for s in steps]
    print(f"\nserver: one gateway process on core {server_core}; "
          f"attackers, honest clients, publisher, probe and Redis on core {load_core}")  # fmt: skip
    print(f"{HOSTILE} hostile sockets ({', '.join(KINDS)}; an equal share each) for "
          f"{SECONDS:g} s; {HONEST} honest subscribers at {RATE} msg/s")  # fmt: skip
    print(f"\n{'gateway RSS baseline MiB':<34} {baseline / 2**20:>8.1f}")
    print(f"{'gateway RSS peak MiB':<34} {peak / 2**20:>8.1f}   (target < 256)")
    print(
        f"{'honest p99 ms, worst step':<34} {max(p99s, default=float('nan')):>8.1f}   "
        "(target <= 50)"
    )
    print(f"{'honest p50 ms, last step':<34} {steps[-1].p50_ms if steps else float('nan'):>8.1f}")
    print(f"{'honest events lost':<34} {sum(s.lost for s in steps):>8}")
    print(f"{'honest sockets closed':<34} {honest_closed:>8}")
    print(
        f"{'event-loop stall max ms (probe)':<34} {float(slowest) * 1000:>8.1f}   "
        f"(target <= 50; probe p99 {float(probe_p99) * 1000:.1f} ms, {answers} answers)"
    )
    print(f"{'gateway CPU % of a core':<34} {gateway_cpu:>8.0f}")
    print(f"{'load generator CPU % of a core':<34} {load_cpu:>8.0f}   "
          "(near 100: the figures measure the load side, not the gateway)")  # fmt: skip
    print(f"\n{'attacker':<18} {'opened':>8} {'closed by gateway':>18}")
    for kind in KINDS:
        print(f"{kind:<18} {attack.opened[kind]:>8} {attack.closed[kind]:>18}")


def main() -> None:
    with socket_bench_layout() as (redis_server, server_core, load_core):
        run_load(run(redis_server.url, server_core, load_core))


if __name__ == "__main__":
    main()
